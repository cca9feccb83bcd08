"""`app.py clients ...` as operators run it through main(), against a real database: create, list, rotate,
disable and enable clients, refuse what cannot be done, and print nothing but what was asked for."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from app import build_services, create_app, main
from tests.conftest import TEST_SECRET_KEY, SettingsFactory
from tests.test_app import SETTING_VARIABLES

pytestmark = pytest.mark.usefixtures("restore_root_logger")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> str:
    """The environment main() reads: a key, the test database, logs under tmp_path."""
    for name in SETTING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODULE_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "cli-logs"))
    return database_url


async def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _secret_in(output: str) -> str:
    match = re.search(r"^client_secret: (\S+)$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


async def _token_status(client, client_id: str, secret: str) -> int:
    response = await client.post("/api/v1/token", json={"client_id": client_id, "client_secret": secret})
    return response.status_code


async def test_the_client_tool_creates_lists_rotates_disables_and_enables(
    environment: str, make_settings: SettingsFactory, aws, capsys
):
    code, out, _ = await _run(
        capsys, "clients", "create", "bot-one", "--allow", "waddlebot-*", "--description", "a bot"
    )
    assert code == 0
    secret = _secret_in(out)
    assert len(secret) >= 32
    assert out.count(secret) == 1

    module = await build_services(make_settings(DATABASE_URL=environment))
    try:
        app = create_app(module)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            response = await client.post("/api/v1/token", json={"client_id": "bot-one", "client_secret": secret})
            assert response.status_code == 200
            token = (await response.get_json())["token"]
            caller = await module.authenticator.authenticate(token, "test")
            assert caller.allowed_patterns == ("waddlebot-*",)

            code, out, _ = await _run(capsys, "clients", "list")
            assert code == 0
            line = next(line for line in out.splitlines() if line.startswith("bot-one\t"))
            assert line.split("\t")[1:3] == ["active", "functions=waddlebot-*"]
            assert secret not in out
            assert "scrypt$" not in out

            code, out, _ = await _run(capsys, "clients", "rotate", "bot-one")
            assert code == 0
            new_secret = _secret_in(out)
            assert new_secret != secret
            assert await _token_status(client, "bot-one", secret) == 401
            assert await _token_status(client, "bot-one", new_secret) == 200

            code, out, _ = await _run(capsys, "clients", "disable", "bot-one")
            assert code == 0
            assert "disabled" in out
            assert await _token_status(client, "bot-one", new_secret) == 401
            code, out, _ = await _run(capsys, "clients", "list")
            assert "bot-one\tdisabled\t" in out

            code, _, _ = await _run(capsys, "clients", "enable", "bot-one")
            assert code == 0
            assert await _token_status(client, "bot-one", new_secret) == 200
    finally:
        await module.close()


async def test_the_client_tool_refuses_what_it_cannot_do(environment: str, capsys):
    code, out, _ = await _run(capsys, "clients", "create", "bot-one")
    assert code == 0
    first_secret = _secret_in(out)

    code, out, err = await _run(capsys, "clients", "create", "bot-one")
    assert code == 1
    assert "exists" in err
    assert "client_secret" not in out

    for action in ("rotate", "disable", "enable"):
        code, out, err = await _run(capsys, "clients", action, "nobody-here")
        assert code == 1, action
        assert "no client nobody-here" in err
        assert "client_secret" not in out

    code, out, _ = await _run(capsys, "clients", "create", "bot-two", "--allow", "bad pattern,with comma")
    assert code == 1
    assert "client_secret" not in out
    code, out, _ = await _run(capsys, "clients", "create", "x")
    assert code == 1

    code, out, _ = await _run(capsys, "clients", "list")
    assert [line.split("\t")[0] for line in out.splitlines()] == ["bot-one"]
    assert first_secret not in out


async def test_the_client_tool_prints_only_what_its_user_asked_for(environment: str, capsys):
    code, _, err = await _run(capsys, "clients", "create", "bot-one")
    assert code == 0
    assert err == ""

    code, out, err = await _run(capsys, "clients", "list")
    assert code == 0
    # No start-up chatter (such as the schema line) on either stream: only problems would be logged.
    assert [line for line in (out + err).splitlines() if " INFO " in line] == []
    assert "schema" not in out + err
    assert [line.split("\t")[0] for line in out.splitlines()] == ["bot-one"]
    assert err == ""
