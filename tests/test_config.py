"""load_settings: defaults, every refused value names its variable, secrets stay out of summaries."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from dotenv import dotenv_values

import config
from config import Settings, SettingsError, load_settings, normalize_database_url

KEY = "k" * 64
BOOTSTRAP_SECRET = "bootstrap-secret-0123456789"


def settings_from(**values: str) -> Settings:
    """Settings from a minimal valid environment plus `values` (a value of None removes the variable)."""
    environ = {"MODULE_SECRET_KEY": KEY, **values}
    return load_settings({name: value for name, value in environ.items() if value is not None})


def refusal(**values: str) -> str:
    """The message of the SettingsError that `values` cause."""
    with pytest.raises(SettingsError) as caught:
        settings_from(**values)
    return str(caught.value)


def test_defaults_from_an_environment_with_only_a_key():
    settings = load_settings({"MODULE_SECRET_KEY": KEY})
    assert settings.environment == "development"
    assert settings.host == "0.0.0.0"
    assert settings.rest_port == 8080
    assert settings.grpc_port == 50060
    assert settings.workers == 1
    assert settings.grpc_reflection is True
    assert settings.grpc_max_message_bytes == 7 * 1024 * 1024
    assert settings.database_url == f"sqlite://{config.DEFAULT_SQLITE_PATH}"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_kind == "sqlite"
    assert settings.database_pool_size == 4
    assert settings.module_secret_key == KEY
    assert settings.secret_key_generated is False
    assert settings.jwt_expiration_seconds == 3600
    assert settings.allowed_services == ("router_module",)
    assert settings.bootstrap_client_id == ""
    assert settings.bootstrap_client_secret == ""
    assert settings.lambda_backend == "auto"
    assert settings.local_functions_dir == str(config.PROJECT_ROOT / "functions")
    assert settings.local_lambda_port == 9001
    assert settings.aws_region == "us-east-1"
    assert settings.lambda_function_prefix == "waddlebot-"
    assert settings.lambda_timeout == 300
    assert settings.max_concurrent_requests == 100
    assert settings.max_retries == 3
    assert settings.retry_delay == 1.0
    assert settings.max_batch_size == 50
    assert settings.max_batch_concurrency == 10
    assert settings.log_level == "INFO"
    assert settings.enable_syslog is False
    assert settings.syslog_facility == "local0"
    assert settings.is_production is False


def test_values_are_read_typed_and_trimmed():
    settings = settings_from(
        ENVIRONMENT="staging",
        REST_PORT=" 9090 ",
        GRPC_PORT="0",
        DATABASE_POOL_SIZE="8",
        JWT_EXPIRATION_SECONDS="60",
        ALLOWED_SERVICES=" router_module , scheduler ,, ",
        AWS_REGION="eu-west-1",
        LAMBDA_TIMEOUT="900",
        MAX_RETRIES="0",
        RETRY_DELAY="0.25",
        MAX_BATCH_SIZE="5",
        SHUTDOWN_GRACE_SECONDS="0",
        LOG_LEVEL="debug",
        ENABLE_SYSLOG="Yes",
        SYSLOG_PORT="65535",
        SYSLOG_FACILITY="local7",
        WORKERS="1",
        GRPC_REFLECTION="false",
        GRPC_MAX_MESSAGE_BYTES="65536",
    )
    assert settings.environment == "staging"
    assert settings.rest_port == 9090
    assert settings.grpc_port == 0
    assert settings.database_pool_size == 8
    assert settings.jwt_expiration_seconds == 60
    assert settings.allowed_services == ("router_module", "scheduler")
    assert settings.aws_region == "eu-west-1"
    assert settings.lambda_timeout == 900
    assert settings.max_retries == 0
    assert settings.retry_delay == 0.25
    assert settings.max_batch_size == 5
    assert settings.shutdown_grace_seconds == 0.0
    assert settings.log_level == "DEBUG"
    assert settings.enable_syslog is True
    assert settings.syslog_port == 65535
    assert settings.syslog_facility == "local7"
    assert settings.workers == 1
    assert settings.grpc_reflection is False
    assert settings.grpc_max_message_bytes == 65536


def test_several_workers_need_fixed_ports():
    assert settings_from(WORKERS="4").workers == 4
    for port in ("REST_PORT", "GRPC_PORT"):
        message = refusal(WORKERS="2", **{port: "0"})
        assert "WORKERS" in message
        assert port in message


def test_aws_default_region_is_used_when_aws_region_is_absent():
    assert settings_from(AWS_DEFAULT_REGION="ap-south-1").aws_region == "ap-south-1"
    assert settings_from(AWS_DEFAULT_REGION="ap-south-1", AWS_REGION="eu-north-1").aws_region == "eu-north-1"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on"])
def test_true_booleans(value):
    assert settings_from(ENABLE_SYSLOG=value).enable_syslog is True


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "off"])
def test_false_booleans(value):
    assert settings_from(ENABLE_SYSLOG=value).enable_syslog is False


def test_blank_values_take_the_default():
    settings = settings_from(REST_PORT="  ", ENABLE_SYSLOG="", LOG_LEVEL=" ")
    assert settings.rest_port == 8080
    assert settings.enable_syslog is False
    assert settings.log_level == "INFO"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REST_PORT", "http"),
        ("REST_PORT", "65536"),
        ("REST_PORT", "-1"),
        ("REST_PORT", "80.5"),
        ("GRPC_PORT", "70000"),
        ("SYSLOG_PORT", "0"),
        ("SYSLOG_PORT", "port"),
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_POOL_SIZE", "65"),
        ("JWT_EXPIRATION_SECONDS", "59"),
        ("JWT_EXPIRATION_SECONDS", str(7 * 24 * 3600 + 1)),
        ("JWT_EXPIRATION_SECONDS", "1h"),
        ("LAMBDA_TIMEOUT", "0"),
        ("LAMBDA_TIMEOUT", "901"),
        ("LAMBDA_MEMORY_SIZE", "64"),
        ("MAX_CONCURRENT_REQUESTS", "0"),
        ("MAX_RETRIES", "11"),
        ("MAX_RETRIES", "-1"),
        ("MAX_BATCH_SIZE", "0"),
        ("MAX_BATCH_SIZE", "1001"),
        ("MAX_BATCH_CONCURRENCY", "0"),
        ("RETRY_DELAY", "-0.5"),
        ("RETRY_DELAY", "soon"),
        ("RETRY_DELAY", "nan"),
        ("RETRY_DELAY", "inf"),
        ("SHUTDOWN_GRACE_SECONDS", "inf"),
        ("SHUTDOWN_GRACE_SECONDS", "-1"),
        ("SHUTDOWN_GRACE_SECONDS", "thirty"),
        ("ENABLE_SYSLOG", "maybe"),
        ("ENABLE_SYSLOG", "2"),
        ("ENVIRONMENT", "prod"),
        ("LAMBDA_BACKEND", "gcp"),
        ("WORKERS", "0"),
        ("WORKERS", "65"),
        ("GRPC_REFLECTION", "sometimes"),
        ("GRPC_MAX_MESSAGE_BYTES", "1024"),
        ("GRPC_MAX_MESSAGE_BYTES", str(64 * 1024 * 1024 + 1)),
        ("LOG_LEVEL", "VERBOSE"),
        ("SYSLOG_FACILITY", "local8"),
        ("SYSLOG_FACILITY", "LOCAL0"),
    ],
)
def test_a_bad_value_stops_with_an_error_naming_the_variable(name, value):
    assert name in refusal(**{name: value})


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("postgresql://user:pw@db.example:5432/lambda", "postgres3://user:pw@db.example:5432/lambda"),
        ("postgres://user@db.example/lambda", "postgres3://user@db.example/lambda"),
        ("sqlite:///var/lib/lambda/db.sqlite", "sqlite:///var/lib/lambda/db.sqlite"),
    ],
)
def test_database_url_forms(given, stored):
    settings = settings_from(DATABASE_URL=given)
    assert settings.database_url == stored
    assert settings.database_kind == ("postgresql" if given.startswith("postgres") else "sqlite")
    assert normalize_database_url(given) == stored


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://relative/db.sqlite",
        "sqlite://db.sqlite",
        "mysql://user@host/db",
        "postgres3://user@host/db",
        "db.sqlite",
        "postgresql://db.example:5432/lambda",
        "postgresql://user@db.example:5432",
        "postgresql://user@db.example:5432/",
        "postgres://user@db.example",
    ],
)
def test_database_urls_the_module_cannot_use_are_refused(url):
    assert "DATABASE_URL" in refusal(DATABASE_URL=url)


def test_a_refused_database_url_does_not_echo_its_password():
    message = refusal(DATABASE_URL="mysql://user:hunter2-password@host/db")
    assert "hunter2-password" not in message


def test_a_short_secret_key_is_refused():
    message = refusal(MODULE_SECRET_KEY="k" * 63)
    assert "MODULE_SECRET_KEY" in message
    assert "k" * 63 not in message
    assert settings_from(MODULE_SECRET_KEY="k" * 64).module_secret_key == "k" * 64


def test_the_example_placeholder_key_is_refused():
    assert len(config.SECRET_KEY_PLACEHOLDER) >= config.MIN_SECRET_KEY_LENGTH
    assert "MODULE_SECRET_KEY" in refusal(MODULE_SECRET_KEY=config.SECRET_KEY_PLACEHOLDER)
    assert "MODULE_SECRET_KEY" in refusal(MODULE_SECRET_KEY=f"  {config.SECRET_KEY_PLACEHOLDER}  ")


@pytest.mark.parametrize("key", [None, "", "   "])
def test_production_without_a_key_is_refused(key):
    assert "MODULE_SECRET_KEY" in refusal(ENVIRONMENT="production", MODULE_SECRET_KEY=key)


def test_production_with_a_key_starts():
    settings = settings_from(ENVIRONMENT="production")
    assert settings.is_production
    assert settings.secret_key_generated is False


def test_development_without_a_key_generates_one_per_load():
    first = settings_from(MODULE_SECRET_KEY=None)
    second = settings_from(MODULE_SECRET_KEY=None, ENVIRONMENT="test")
    assert first.secret_key_generated is True
    assert second.secret_key_generated is True
    assert len(first.module_secret_key) >= config.MIN_SECRET_KEY_LENGTH
    assert first.module_secret_key != second.module_secret_key
    assert first.summary()["secret_key_generated"] is True


def test_lambda_function_prefix_default_custom_and_empty():
    assert settings_from().lambda_function_prefix == "waddlebot-"
    assert settings_from(LAMBDA_FUNCTION_PREFIX="team-a-").lambda_function_prefix == "team-a-"
    assert settings_from(LAMBDA_FUNCTION_PREFIX="").lambda_function_prefix == ""
    assert settings_from(LAMBDA_FUNCTION_PREFIX="   ").lambda_function_prefix == ""


def test_bootstrap_client_needs_both_id_and_secret():
    assert "BOOTSTRAP_CLIENT" in refusal(BOOTSTRAP_CLIENT_ID="ops")
    assert "BOOTSTRAP_CLIENT" in refusal(BOOTSTRAP_CLIENT_SECRET=BOOTSTRAP_SECRET)
    assert "BOOTSTRAP_CLIENT_SECRET" in refusal(BOOTSTRAP_CLIENT_ID="ops", BOOTSTRAP_CLIENT_SECRET="short-secret")
    settings = settings_from(BOOTSTRAP_CLIENT_ID="ops", BOOTSTRAP_CLIENT_SECRET=BOOTSTRAP_SECRET)
    assert (settings.bootstrap_client_id, settings.bootstrap_client_secret) == ("ops", BOOTSTRAP_SECRET)


def test_settings_are_frozen():
    settings = settings_from()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.rest_port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.module_secret_key = "x"  # type: ignore[misc]


def test_summary_and_repr_hold_no_secret():
    key = "summary-secret-key-" + "s" * 64
    settings = settings_from(
        MODULE_SECRET_KEY=key,
        BOOTSTRAP_CLIENT_ID="ops",
        BOOTSTRAP_CLIENT_SECRET=BOOTSTRAP_SECRET,
        DATABASE_URL="postgresql://lambda:db-password-42@db.example:5432/lambda",
    )
    summary = settings.summary()
    for text in (str(summary), repr(settings), str(settings)):
        assert key not in text
        assert BOOTSTRAP_SECRET not in text
    assert "db-password-42" not in str(summary)
    assert "db-password-42" not in repr(settings)
    assert summary["database"] == "postgresql"
    assert summary["lambda_function_prefix"] == "waddlebot-"
    assert summary["allowed_services"] == ["router_module"]


def test_an_empty_allowed_services_accepts_no_service_tokens():
    assert settings_from(ALLOWED_SERVICES="").allowed_services == ()
    assert settings_from().allowed_services == ("router_module",)


def test_the_example_file_lists_every_setting_at_its_default():
    example = dotenv_values(Path(config.PROJECT_ROOT) / ".env.example")
    read = set(re.findall(r'(?:reader\.\w+|environ\.get)\("([A-Z_]+)"', Path(config.__file__).read_text()))
    # AWS_DEFAULT_REGION is boto3's own fallback, and the key has its own commented line in the example.
    assert read - set(example) <= {"AWS_DEFAULT_REGION", "MODULE_SECRET_KEY"}
    values = {name: value for name, value in example.items() if value is not None}
    assert load_settings({**values, "MODULE_SECRET_KEY": KEY}) == load_settings({"MODULE_SECRET_KEY": KEY})


def test_the_lambda_backend_is_chosen_at_start_up_except_in_production():
    assert settings_from().lambda_backend == "auto"
    assert settings_from(LAMBDA_BACKEND="local").lambda_backend == "local"
    assert settings_from(LAMBDA_BACKEND="local").lambda_backend_reason == "LAMBDA_BACKEND=local"
    production = settings_from(ENVIRONMENT="production")
    assert production.lambda_backend == "aws"
    assert settings_from(ENVIRONMENT="production", LAMBDA_BACKEND="local").lambda_backend == "local"
    assert "production" in refusal(ENVIRONMENT="production", LAMBDA_BACKEND="auto")


def test_local_functions_dir_is_relative_to_the_project():
    assert settings_from(LOCAL_FUNCTIONS_DIR="examples/fns").local_functions_dir == str(
        config.PROJECT_ROOT / "examples" / "fns"
    )
    assert settings_from(LOCAL_FUNCTIONS_DIR="/srv/functions").local_functions_dir == "/srv/functions"


def test_token_lifetime_cap_and_leeway_have_defaults_and_bounds():
    settings = load_settings({})
    assert (settings.max_token_lifetime_seconds, settings.jwt_leeway_seconds) == (86400, 30)
    with pytest.raises(SettingsError, match="JWT_EXPIRATION_SECONDS=7200 is longer than MAX_TOKEN_LIFETIME_SECONDS"):
        load_settings({"JWT_EXPIRATION_SECONDS": "7200", "MAX_TOKEN_LIFETIME_SECONDS": "3600"})
    with pytest.raises(SettingsError, match="JWT_LEEWAY_SECONDS"):
        load_settings({"JWT_LEEWAY_SECONDS": "301"})


def test_aws_account_id_is_twelve_digits_or_unset():
    assert load_settings({}).aws_account_id == ""
    assert load_settings({"AWS_ACCOUNT_ID": "123456789012"}).aws_account_id == "123456789012"
    with pytest.raises(SettingsError, match="AWS_ACCOUNT_ID='12345' must be the 12 digits"):
        load_settings({"AWS_ACCOUNT_ID": "12345"})


def test_the_embedded_runtimes_own_settings_are_kept_for_its_process():
    settings = settings_from(
        LOCAL_LAMBDA_MAX_CONCURRENCY="7", LOCAL_LAMBDA_EVENT_RETRY_DELAYS="1,2", LOCAL_LAMBDA_PORT="9100"
    )

    assert settings.local_lambda_environment == (
        ("LOCAL_LAMBDA_EVENT_RETRY_DELAYS", "1,2"),
        ("LOCAL_LAMBDA_MAX_CONCURRENCY", "7"),
    )
    assert settings.local_lambda_port == 9100  # the module's own, not passed on


def test_a_bad_setting_of_the_embedded_runtime_stops_start_up_naming_it():
    assert "LOCAL_LAMBDA_MAX_CONCURRENCY" in refusal(LOCAL_LAMBDA_MAX_CONCURRENCY="many")
    assert "LOCAL_LAMBDA_EVENT_RETRY_DELAYS" in refusal(LOCAL_LAMBDA_EVENT_RETRY_DELAYS="soon")
