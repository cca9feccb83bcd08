"""app.main's client tool against a real database, configuration errors, logging set-up, and audit lines."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import Services, build_services, create_app, main
from logging_setup import configure_logging
from services.domain import Caller, InvokeRequest
from services.errors import Unauthenticated
from services.lambda_client import choose_lambda_backend
from serving import check_ports_free
from serving import embedded_runtime as local_runtime
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


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """main() and configure_logging() replace the root logger's handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("botocore", "boto3", "urllib3")}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)


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


def test_configure_logging_without_a_writable_log_dir_warns_and_keeps_the_console(
    make_settings: SettingsFactory, tmp_path: Path, capsys
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings = make_settings(LOG_DIR=str(blocker / "logs"))

    configure_logging(settings)

    root = logging.getLogger()
    assert not any(isinstance(handler, logging.FileHandler) for handler in root.handlers)
    assert any(type(handler) is logging.StreamHandler for handler in root.handlers)
    logging.getLogger("lambda_action.test").info("still on the console")
    err = capsys.readouterr().err
    assert "LOG_DIR" in err
    assert str(blocker / "logs") in err
    assert "still on the console" in err


def test_configure_logging_writes_to_a_file_under_log_dir(make_settings: SettingsFactory, tmp_path: Path, capsys):
    log_dir = tmp_path / "new" / "logs"
    configure_logging(make_settings(LOG_DIR=str(log_dir), LOG_LEVEL="warning"))
    logger = logging.getLogger("lambda_action.test")
    logger.warning("written to the file")
    logger.info("below the level")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = (log_dir / "lambda_action.log").read_text()
    assert "written to the file" in text
    assert "below the level" not in text
    assert "written to the file" in capsys.readouterr().err


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


async def _issue_status(module: Services, client_id: str, secret: str) -> int:
    app = create_app(module)
    async with app.test_app() as test_app:
        return await _token_status(test_app.test_client(), client_id, secret)


async def test_without_a_key_a_development_client_is_printed_not_logged(
    make_settings: SettingsFactory, aws, capsys, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    settings = make_settings(MODULE_SECRET_KEY="", BOOTSTRAP_CLIENT_ID="", BOOTSTRAP_CLIENT_SECRET="")
    assert settings.secret_key_generated
    module = await build_services(settings)
    try:
        out = capsys.readouterr().out
        match = re.search(r"client_id=local-dev client_secret=(\S+)", out)
        assert match, out
        secret = match.group(1)
        assert "MODULE_SECRET_KEY" in out
        assert secret not in caplog.text
        assert await _issue_status(module, "local-dev", secret) == 200
        assert await _issue_status(module, TEST_CLIENT_ID, TEST_CLIENT_SECRET) == 401
    finally:
        await module.close()


async def test_a_restart_with_a_new_bootstrap_secret_replaces_the_old_one(
    make_settings: SettingsFactory, database_url: str, aws
):
    first = await build_services(make_settings(DATABASE_URL=database_url))
    try:
        assert await _issue_status(first, TEST_CLIENT_ID, TEST_CLIENT_SECRET) == 200
        await first.clients.set_active(TEST_CLIENT_ID, False)
    finally:
        await first.close()
    new_secret = "a-replaced-bootstrap-secret-42"
    second = await build_services(make_settings(DATABASE_URL=database_url, BOOTSTRAP_CLIENT_SECRET=new_secret))
    try:
        assert await _issue_status(second, TEST_CLIENT_ID, TEST_CLIENT_SECRET) == 401
        assert await _issue_status(second, TEST_CLIENT_ID, new_secret) == 200
        assert [client.client_id for client in await second.clients.list()] == [TEST_CLIENT_ID]
    finally:
        await second.close()


# -- choosing the Lambda backend at start-up --------------------------------------------------------------


@pytest.fixture
def no_aws_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS keys or profile files, whatever this machine has."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


@pytest.mark.usefixtures("no_aws_files")
def test_auto_runs_locally_and_says_so_loudly_when_no_aws_is_configured(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
):
    chosen = choose_lambda_backend(make_settings(LAMBDA_BACKEND="auto"), {})
    assert chosen.lambda_backend == "local"
    assert chosen.lambda_backend_reason == "auto: no AWS credentials or endpoint found"
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert "embedded local runtime" in warning.getMessage()


@pytest.mark.usefixtures("no_aws_files")
def test_auto_uses_aws_when_an_endpoint_or_credentials_are_there(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
):
    by_endpoint = choose_lambda_backend(make_settings(LAMBDA_BACKEND="auto"), {"AWS_ENDPOINT_URL_LAMBDA": "http://x"})
    assert (by_endpoint.lambda_backend, by_endpoint.lambda_backend_reason) == (
        "aws",
        "auto: AWS_ENDPOINT_URL_LAMBDA is set",
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    by_keys = choose_lambda_backend(make_settings(LAMBDA_BACKEND="auto"), {})
    assert by_keys.lambda_backend == "aws"
    assert by_keys.lambda_backend_reason == "auto: boto3 found credentials (env)"


@pytest.mark.usefixtures("no_aws_files")
@pytest.mark.parametrize("backend", ["aws", "local"])
def test_a_chosen_backend_is_kept(make_settings: SettingsFactory, backend: str):
    settings = make_settings(LAMBDA_BACKEND=backend)
    assert choose_lambda_backend(settings, {"AWS_ENDPOINT_URL_LAMBDA": "http://x"}) is settings


async def test_the_local_backend_starts_one_runtime_and_stops_it(make_settings: SettingsFactory):
    settings = make_settings(LAMBDA_BACKEND="local", LOCAL_LAMBDA_PORT="0")
    async with local_runtime(settings) as serving:
        assert serving.local_lambda_port != 0
        module = await build_services(serving)
        try:
            assert module.service.endpoint_url == f"http://127.0.0.1:{serving.local_lambda_port}"
            result = await module.service.invoke(
                InvokeRequest(function_name="waddlebot-echo", payload=b'{"via": "local"}'),
                Caller(kind="service", name="test"),
                "rest",
            )
            assert result.success
            assert result.payload == '{"via": "local"}'
            health = await module.service.health()
            assert health.lambda_backend["backend"] == "local"
        finally:
            await module.close()
    with socket.create_server(("127.0.0.1", serving.local_lambda_port)):
        pass  # the port is free again: the runtime stopped


async def test_a_local_runtime_that_cannot_listen_is_a_clear_start_up_error(make_settings: SettingsFactory):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        settings = make_settings(LAMBDA_BACKEND="local", LOCAL_LAMBDA_PORT=str(port))
        with pytest.raises(OSError, match="LOCAL_LAMBDA_PORT"):
            async with local_runtime(settings):
                pass


# -- start-up mistakes and leftovers ------------------------------------------------------------------------


async def test_a_configured_key_disables_a_development_client_left_in_the_database(
    make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
):
    development = await build_services(make_settings(MODULE_SECRET_KEY=""), lambda_client=object())
    await development.close()
    secret = re.search(r"client_secret=(\S+)", capsys.readouterr().out).group(1)

    module = await build_services(make_settings(), lambda_client=object())
    try:
        left = await module.clients.get("local-dev")
        assert left is not None
        assert left.active is False
        with pytest.raises(Unauthenticated):
            await module.authenticator.issue_token("local-dev", secret, "127.0.0.1")
    finally:
        await module.close()


@pytest.mark.parametrize("variable", ["REST_PORT", "GRPC_PORT", "LOCAL_LAMBDA_PORT"])
def test_a_port_in_use_stops_start_up_naming_its_variable(make_settings: SettingsFactory, variable: str):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        settings = make_settings(HOST="127.0.0.1", LAMBDA_BACKEND="local", **{variable: str(port)})
        with pytest.raises(OSError, match=f"{variable}={port} cannot be used"):
            check_ports_free(settings)


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
