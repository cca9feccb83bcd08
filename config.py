"""Settings for the Lambda Action Module, read once from the environment (and `.env`)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from local_lambda.settings import SettingsError as RuntimeSettingsError
from local_lambda.settings import runtime_settings

MODULE_NAME = "lambda_action"
MODULE_VERSION = "2.0.0"

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "data" / "lambda_action.sqlite"

# The value `.env.example` shows for MODULE_SECRET_KEY; a copied example must not become a real key.
SECRET_KEY_PLACEHOLDER = "replace-me-with-64-or-more-random-characters-from-secrets-token-urlsafe-64"
MIN_SECRET_KEY_LENGTH = 64

ENVIRONMENTS = ("development", "test", "staging", "production")
# "auto" (the default outside production) becomes "aws" or "local" at start-up: see app.choose_lambda_backend.
LAMBDA_BACKENDS = ("aws", "local", "auto")
DEFAULT_FUNCTIONS_DIR = PROJECT_ROOT / "functions"
# Variables of the embedded Lambda runtime's own (besides LOCAL_LAMBDA_PORT, which the module reads).
LOCAL_LAMBDA_PREFIX = "LOCAL_LAMBDA_"
SYSLOG_FACILITIES = (
    *("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp"),
    *(f"local{number}" for number in range(8)),
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """A setting has a value the module cannot start with; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Every setting of the module, typed and immutable."""

    environment: str = "development"
    host: str = "0.0.0.0"
    rest_port: int = 8080
    grpc_port: int = 50060
    # Processes serving both ports (SO_REUSEPORT); a parent process supervises them when more than one.
    workers: int = 1
    grpc_reflection: bool = True
    # Room for Lambda's 6 MB payload plus the message around it; larger messages are RESOURCE_EXHAUSTED.
    grpc_max_message_bytes: int = 7 * 1024 * 1024

    database_url: str = field(default=f"sqlite://{DEFAULT_SQLITE_PATH}", repr=False)
    database_pool_size: int = 4

    module_secret_key: str = field(default="", repr=False)
    # True when no MODULE_SECRET_KEY was configured and a random one was made for this run.
    secret_key_generated: bool = False
    jwt_expiration_seconds: int = 3600
    # The longest a token may live (exp - iat), whoever signed it: a service token minted for a century is refused.
    max_token_lifetime_seconds: int = 86400
    # Clock skew allowed between the token's signer and this host, for iat and nbf.
    jwt_leeway_seconds: int = 30
    # Wrong credentials allowed at the token endpoint per client id and per source address within the window
    # (per process); past them the endpoint answers 429 without checking the secret.
    token_failures_per_client: int = 10
    token_failures_per_source: int = 30
    token_failure_window_seconds: int = 60
    allowed_services: tuple[str, ...] = ("router_module",)
    bootstrap_client_id: str = ""
    bootstrap_client_secret: str = field(default="", repr=False)

    lambda_backend: str = "aws"
    # Why this backend: the variable that chose it, or what start-up found (shown by /health).
    lambda_backend_reason: str = "LAMBDA_BACKEND=aws"
    # The embedded Lambda runtime (LAMBDA_BACKEND=local): where its functions live and its loopback port.
    local_functions_dir: str = str(DEFAULT_FUNCTIONS_DIR)
    local_lambda_port: int = 9001
    # The embedded runtime's own settings (LOCAL_LAMBDA_MAX_CONCURRENCY, ...), from the environment or `.env`,
    # passed on to the runtime's process, which reads them from its environment.
    local_lambda_environment: tuple[tuple[str, str], ...] = ()
    aws_region: str = "us-east-1"
    # The AWS account whose functions the module invokes when given an ARN; unset, STS tells it (see README).
    aws_account_id: str = ""
    lambda_function_prefix: str = "waddlebot-"
    lambda_timeout: int = 300
    lambda_memory_size: int = 512
    max_concurrent_requests: int = 100
    max_retries: int = 3
    retry_delay: float = 1.0
    max_batch_size: int = 50
    max_batch_concurrency: int = 10
    shutdown_grace_seconds: float = 30.0
    # On SIGTERM, how long to go on serving while health says NOT_SERVING (and /health "draining", 503), so a
    # balancer's health checks take the instance out before it refuses calls. Kubernetes' preStop does this there.
    shutdown_delay_seconds: float = 0.0
    # How long an Idempotency-Key stands for the invocation it started: a repeat within it gets that outcome.
    idempotency_window_seconds: int = 3600
    # History: read a function's CloudWatch log lines for one invocation (needs logs:FilterLogEvents), and delete
    # records older than this many days in the background (0: keep everything).
    fetch_function_logs: bool = False
    log_retention_days: int = 0
    # GET /metrics is open unless this is set: then it needs `Authorization: Bearer <METRICS_TOKEN>`.
    metrics_token: str = field(default="", repr=False)

    log_level: str = "INFO"
    log_dir: str = "./logs"
    log_spool_dir: str = "./data/spool"
    log_spool_max_bytes: int = 1024 * 1024 * 1024
    enable_syslog: bool = False
    syslog_host: str = "localhost"
    syslog_port: int = 514
    syslog_facility: str = "local0"

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def database_kind(self) -> str:
        return "postgresql" if self.database_url.startswith("postgres") else "sqlite"

    def summary(self) -> dict[str, object]:
        """The configuration as `/health` shows it: no secret, no password."""
        return {
            "environment": self.environment,
            "rest_port": self.rest_port,
            "grpc_port": self.grpc_port,
            "workers": self.workers,
            "database": self.database_kind,
            "lambda_backend": self.lambda_backend,
            "lambda_backend_reason": self.lambda_backend_reason,
            "aws_region": self.aws_region,
            "lambda_function_prefix": self.lambda_function_prefix,
            "lambda_timeout": self.lambda_timeout,
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_retries": self.max_retries,
            "retry_delay": self.retry_delay,
            "max_batch_size": self.max_batch_size,
            "max_batch_concurrency": self.max_batch_concurrency,
            "idempotency_window_seconds": self.idempotency_window_seconds,
            "fetch_function_logs": self.fetch_function_logs,
            "log_retention_days": self.log_retention_days,
            "jwt_expiration_seconds": self.jwt_expiration_seconds,
            "max_token_lifetime_seconds": self.max_token_lifetime_seconds,
            "jwt_leeway_seconds": self.jwt_leeway_seconds,
            "token_failures_per_client": self.token_failures_per_client,
            "token_failures_per_source": self.token_failures_per_source,
            "token_failure_window_seconds": self.token_failure_window_seconds,
            "allowed_services": list(self.allowed_services),
            "secret_key_generated": self.secret_key_generated,
        }


class _Reader:
    """Reads typed values from a mapping, naming the variable in every error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def choice(self, name: str, default: str, choices: tuple[str, ...] | list[str], *, upper: bool = False) -> str:
        value = self.text(name, default)
        value = value.upper() if upper else value
        if value not in choices:
            raise SettingsError(f"{name}={value!r} is not one of: {', '.join(choices)}")
        return value

    def integer(self, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r} is not a whole number") from None
        if number < minimum or (maximum is not None and number > maximum):
            upper = "" if maximum is None else f" and at most {maximum}"
            raise SettingsError(f"{name}={number} must be at least {minimum}{upper}")
        return number

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r} is not a number") from None
        if not minimum <= number <= maximum:
            raise SettingsError(f"{name}={value} must be between {minimum} and {maximum}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={value!r} is not a boolean (use true or false)")


def normalize_database_url(url: str | None) -> str:
    """Turn DATABASE_URL into the form the module stores: `postgres3://...` or `sqlite:///abs/path`."""
    if url is None:
        return f"sqlite://{DEFAULT_SQLITE_PATH}"
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            rest = url[len(scheme) :]
            if "@" not in rest.split("/", 1)[0]:
                raise SettingsError(
                    "DATABASE_URL must name a user and a host, as in postgresql://user:password@host:5432/database"
                )
            if "/" not in rest or not rest.split("/", 1)[1]:
                raise SettingsError("DATABASE_URL must name a database, as in postgresql://user@host:5432/database")
            # PyDAL's postgres3 adapter stores booleans as real BOOLEAN columns.
            return "postgres3://" + rest
    if url.startswith("sqlite:///"):
        return url
    if url.startswith("sqlite://"):
        raise SettingsError(
            "DATABASE_URL for SQLite must be an absolute path, as in sqlite:///var/lib/lambda-action/db.sqlite"
        )
    raise SettingsError(
        f"DATABASE_URL must start with postgresql://, postgres:// or sqlite:///, not {url.split(':', 1)[0]!r}"
    )


def _secret_key(reader: _Reader, environment: str) -> tuple[str, bool]:
    key = reader.raw("MODULE_SECRET_KEY")
    if key is None:
        if environment == "production":
            raise SettingsError("MODULE_SECRET_KEY must be set in production (64 or more random characters)")
        return secrets.token_urlsafe(64), True
    if key == SECRET_KEY_PLACEHOLDER:
        raise SettingsError(
            "MODULE_SECRET_KEY is still the placeholder from .env.example; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(64))'"
        )
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise SettingsError(
            f"MODULE_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters long, it has {len(key)}"
        )
    return key, False


def _account_id(value: str) -> str:
    if value and not (len(value) == 12 and value.isdigit()):
        raise SettingsError(f"AWS_ACCOUNT_ID={value!r} must be the 12 digits of an AWS account")
    return value


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build the settings from a mapping of environment variables; raise SettingsError on a bad value."""
    reader = _Reader(environ)
    environment = reader.choice("ENVIRONMENT", "development", ENVIRONMENTS)
    secret_key, generated = _secret_key(reader, environment)

    bootstrap_id = reader.text("BOOTSTRAP_CLIENT_ID", "")
    bootstrap_secret = reader.text("BOOTSTRAP_CLIENT_SECRET", "")
    if bool(bootstrap_id) != bool(bootstrap_secret):
        raise SettingsError("BOOTSTRAP_CLIENT_ID and BOOTSTRAP_CLIENT_SECRET must be set together")
    if bootstrap_secret and len(bootstrap_secret) < 16:
        raise SettingsError("BOOTSTRAP_CLIENT_SECRET must be at least 16 characters long")

    jwt_expiration = reader.integer("JWT_EXPIRATION_SECONDS", 3600, 60, 7 * 24 * 3600)
    max_token_lifetime = reader.integer("MAX_TOKEN_LIFETIME_SECONDS", 86400, 60, 30 * 24 * 3600)
    if jwt_expiration > max_token_lifetime:
        raise SettingsError(
            f"JWT_EXPIRATION_SECONDS={jwt_expiration} is longer than MAX_TOKEN_LIFETIME_SECONDS={max_token_lifetime}: "
            "the module would refuse the tokens it issues"
        )

    # An empty ALLOWED_SERVICES or LAMBDA_FUNCTION_PREFIX is meaningful (no service tokens; no prefix guard),
    # so for these two only absence means the default.
    services = environ.get("ALLOWED_SERVICES", "router_module")
    allowed_services = tuple(name.strip() for name in services.split(",") if name.strip())
    prefix = environ.get("LAMBDA_FUNCTION_PREFIX")
    prefix = "waddlebot-" if prefix is None else prefix.strip()

    rest_port = reader.integer("REST_PORT", 8080, 0, 65535)
    grpc_port = reader.integer("GRPC_PORT", 50060, 0, 65535)
    workers = reader.integer("WORKERS", 1, 1, 64)
    if workers > 1 and 0 in (rest_port, grpc_port):
        raise SettingsError("WORKERS > 1 needs fixed REST_PORT and GRPC_PORT: port 0 would give each worker its own")

    # Production never runs functions on the embedded runtime unless told to.
    backend = reader.choice("LAMBDA_BACKEND", "aws" if environment == "production" else "auto", LAMBDA_BACKENDS)
    if backend == "auto" and environment == "production":
        raise SettingsError("LAMBDA_BACKEND=auto is not allowed in production: choose aws or local")
    backend_reason = f"LAMBDA_BACKEND={backend}" if reader.raw("LAMBDA_BACKEND") else f"{backend} (the default)"

    return Settings(
        environment=environment,
        host=reader.text("HOST", "0.0.0.0"),
        rest_port=rest_port,
        grpc_port=grpc_port,
        workers=workers,
        grpc_reflection=reader.boolean("GRPC_REFLECTION", True),
        grpc_max_message_bytes=reader.integer("GRPC_MAX_MESSAGE_BYTES", 7 * 1024 * 1024, 64 * 1024, 64 * 1024 * 1024),
        database_url=normalize_database_url(reader.raw("DATABASE_URL")),
        database_pool_size=reader.integer("DATABASE_POOL_SIZE", 4, 1, 64),
        module_secret_key=secret_key,
        secret_key_generated=generated,
        jwt_expiration_seconds=jwt_expiration,
        max_token_lifetime_seconds=max_token_lifetime,
        jwt_leeway_seconds=reader.integer("JWT_LEEWAY_SECONDS", 30, 0, 300),
        token_failures_per_client=reader.integer("TOKEN_FAILURES_PER_CLIENT", 10, 1, 10_000),
        token_failures_per_source=reader.integer("TOKEN_FAILURES_PER_SOURCE", 30, 1, 100_000),
        token_failure_window_seconds=reader.integer("TOKEN_FAILURE_WINDOW_SECONDS", 60, 1, 24 * 3600),
        allowed_services=allowed_services,
        bootstrap_client_id=bootstrap_id,
        bootstrap_client_secret=bootstrap_secret,
        lambda_backend=backend,
        lambda_backend_reason=backend_reason,
        local_functions_dir=str((PROJECT_ROOT / reader.text("LOCAL_FUNCTIONS_DIR", "functions")).resolve()),
        local_lambda_port=reader.integer("LOCAL_LAMBDA_PORT", 9001, 0, 65535),
        local_lambda_environment=_local_lambda_environment(environ),
        aws_region=reader.text("AWS_REGION", reader.text("AWS_DEFAULT_REGION", "us-east-1")),
        aws_account_id=_account_id(reader.text("AWS_ACCOUNT_ID", "")),
        lambda_function_prefix=prefix,
        lambda_timeout=reader.integer("LAMBDA_TIMEOUT", 300, 1, 900),
        lambda_memory_size=reader.integer("LAMBDA_MEMORY_SIZE", 512, 128, 10240),
        max_concurrent_requests=reader.integer("MAX_CONCURRENT_REQUESTS", 100, 1, 10000),
        max_retries=reader.integer("MAX_RETRIES", 3, 0, 10),
        retry_delay=reader.number("RETRY_DELAY", 1.0, 0.0, 60.0),
        max_batch_size=reader.integer("MAX_BATCH_SIZE", 50, 1, 1000),
        max_batch_concurrency=reader.integer("MAX_BATCH_CONCURRENCY", 10, 1, 1000),
        shutdown_grace_seconds=reader.number("SHUTDOWN_GRACE_SECONDS", 30.0, 0.0, 3600.0),
        shutdown_delay_seconds=reader.number("SHUTDOWN_DELAY_SECONDS", 0.0, 0.0, 300.0),
        idempotency_window_seconds=reader.integer("IDEMPOTENCY_WINDOW_SECONDS", 3600, 1, 7 * 24 * 3600),
        fetch_function_logs=reader.boolean("FETCH_FUNCTION_LOGS", False),
        log_retention_days=reader.integer("LOG_RETENTION_DAYS", 0, 0, 100 * 365),
        metrics_token=reader.text("METRICS_TOKEN", ""),
        log_level=reader.choice("LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
        log_dir=reader.text("LOG_DIR", "./logs"),
        log_spool_dir=reader.text("LOG_SPOOL_DIR", "./data/spool"),
        log_spool_max_bytes=reader.integer("LOG_SPOOL_MAX_BYTES", 1024 * 1024 * 1024, 1024 * 1024, 1024**4),
        enable_syslog=reader.boolean("ENABLE_SYSLOG", False),
        syslog_host=reader.text("SYSLOG_HOST", "localhost"),
        syslog_port=reader.integer("SYSLOG_PORT", 514, 1, 65535),
        syslog_facility=reader.choice("SYSLOG_FACILITY", "local0", SYSLOG_FACILITIES),
    )


def environment_with_dotenv(dotenv_path: Path | None = None) -> dict[str, str]:
    """The process environment over the values of `.env` (the environment wins)."""
    from dotenv import dotenv_values

    path = dotenv_path or PROJECT_ROOT / ".env"
    values = {key: value for key, value in dotenv_values(path).items() if value is not None}
    return {**values, **os.environ}


def _local_lambda_environment(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The embedded runtime's settings among `environ`, checked now: a bad one stops start-up, naming it."""
    variables = tuple(
        sorted(
            (name, value)
            for name, value in environ.items()
            # Empty means the runtime's default, as for the module's own settings.
            if name.startswith(LOCAL_LAMBDA_PREFIX) and name != "LOCAL_LAMBDA_PORT" and value.strip()
        )
    )
    try:
        runtime_settings(dict(variables))
    except RuntimeSettingsError as error:
        raise SettingsError(str(error)) from None
    return variables
