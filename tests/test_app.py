"""app.main as operators run it: exit codes for bad settings and an unreachable database; the whole app's audit lines.

The `clients` command is tested in test_clients_cli.py, serving in test_serving.py.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from app import Services, main
from tests.conftest import TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_SECRET_KEY

# What main() reads that a test must not inherit from the shell it runs in.
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


# -- start-up mistakes ---------------------------------------------------------------------------------------


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
