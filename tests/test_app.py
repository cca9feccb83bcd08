"""app.main as operators run it: the client tool against a real database, configuration errors, audit lines."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import re
import socket
from pathlib import Path

import pytest

from app import Services, build_services, create_app, main
from tests.conftest import TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_SECRET_KEY, SettingsFactory

SETTING_VARIABLES = (
    "ENVIRONMENT",
    "MODULE_SECRET_KEY",
    "DATABASE_URL",
    "LOG_DIR",
    "REST_PORT",
    "BOOTSTRAP_CLIENT_ID",
    "BOOTSTRAP_CLIENT_SECRET",
    "ENABLE_SYSLOG",
    "LOG_LEVEL",
)


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


@pytest.mark.parametrize(
    ("variable", "value"),
    [("REST_PORT", "99999"), ("DATABASE_URL", "sqlite://relative.db"), ("LOG_LEVEL", "LOUD")],
)
def test_main_stops_with_exit_code_2_on_a_bad_setting(monkeypatch, tmp_path, capsys, variable, value):
    for name in SETTING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODULE_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
    monkeypatch.setenv(variable, value)
    assert main([]) == 2
    assert main(["clients", "list"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err
    assert variable in err
    assert not (tmp_path / "db.sqlite").exists()


def test_main_refuses_production_without_a_key(monkeypatch, capsys):
    for name in SETTING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENVIRONMENT", "production")
    assert main([]) == 2
    assert "MODULE_SECRET_KEY" in capsys.readouterr().err


async def test_audit_lines_record_tokens_and_invocations_without_secrets(
    client, module: Services, create_function, caplog: pytest.LogCaptureFixture
):
    create_function("waddlebot-echo")
    caplog.set_level(logging.DEBUG)

    issued = await client.post("/api/v1/token", json={"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET})
    token = (await issued.get_json())["token"]
    wrong_secret = TEST_CLIENT_SECRET + "-wrong"
    refused = await client.post("/api/v1/token", json={"client_id": TEST_CLIENT_ID, "client_secret": wrong_secret})
    assert refused.status_code == 401
    headers = {"Authorization": f"Bearer {token}"}
    invoked = await client.post(
        "/api/v1/invoke", json={"function_name": "waddlebot-echo", "payload": {"a": 1}}, headers=headers
    )
    assert invoked.status_code == 200
    forbidden = await client.post("/api/v1/invoke", json={"function_name": "other-fn"}, headers=headers)
    assert forbidden.status_code == 403
    rejected = await client.get("/api/v1/functions", headers={"Authorization": f"Bearer {token}x"})
    assert rejected.status_code == 401

    audit = [record.getMessage() for record in caplog.records if record.name == "lambda_action.audit"]
    assert any(
        line.startswith("AUTH success") and f"principal={TEST_CLIENT_ID}" in line and "token issued" in line
        for line in audit
    ), audit
    assert any(line.startswith("AUTH failure") and f"principal={TEST_CLIENT_ID}" in line for line in audit), audit
    assert any(
        line.startswith("INVOKE")
        and f"caller=client:{TEST_CLIENT_ID}" in line
        and "function=waddlebot-echo" in line
        and "type=RequestResponse" in line
        and "outcome=success" in line
        for line in audit
    ), audit
    about_denied = [line for line in audit if "function=other-fn" in line]
    assert len(about_denied) == 1, audit
    assert about_denied[0].startswith("DENIED"), audit
    assert any(line.startswith("AUTH failure") and "invalid token" in line for line in audit), audit
    # The token was presented twice from one address: one audit line for its first use, not one per request.
    accepted = [line for line in audit if "bearer token accepted" in line]
    assert len(accepted) == 1, audit
    assert accepted[0].startswith(f"AUTH success principal=client:{TEST_CLIENT_ID} source=")

    everything = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    for secret in (TEST_CLIENT_SECRET, wrong_secret, token, token.split(".")[2], TEST_SECRET_KEY):
        assert secret not in everything


async def test_a_client_id_cannot_forge_audit_lines(client, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="lambda_action.audit")
    forged = "evil\nAUTH success principal=admin source=10.0.0.1 reason=token issued"
    response = await client.post("/api/v1/token", json={"client_id": forged, "client_secret": "whatever"})
    assert response.status_code == 401
    audit = [record.getMessage() for record in caplog.records if record.name == "lambda_action.audit"]
    assert len(audit) == 1
    assert audit[0].startswith("AUTH failure")
    assert "\n" not in audit[0]
    assert "evil" in audit[0]


# -- choosing the Lambda backend at start-up --------------------------------------------------------------


# -- start-up mistakes and leftovers ------------------------------------------------------------------------


def test_an_unreachable_database_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    for name in SETTING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODULE_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://lambda:s3cret@127.0.0.1:{port}/lambda")
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))

    assert main(["clients", "list"]) == 1

    err = capsys.readouterr().err
    assert f"DATABASE_URL=postgresql://lambda:***@127.0.0.1:{port}/lambda" in err
    assert "Connection refused" in err
    assert "Traceback" not in err
    assert "s3cret" not in err


async def test_the_client_tool_prints_only_what_its_user_asked_for(environment: str, capsys):
    code, out, err = await _run(capsys, "clients", "list")
    assert code == 0
    # No start-up chatter (such as the schema line) on either stream: only problems would be logged.
    assert " INFO " not in out + err
    assert "schema" not in out + err
