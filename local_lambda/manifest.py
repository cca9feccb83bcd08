"""A function's manifest, `function.json`: its settings, versions and aliases, checked and parsed.

The functions folder: manifests, versions and aliases, qualifiers, and the configuration Lambda reports.

One sub-folder per function, named as the function, holding its code and a `function.json` manifest:

    {
      "handler": "handler.lambda_handler",
      "runtime": "python3.11",
      "timeout": 3,
      "memory_size": 128,
      "concurrency": 4,
      "description": "Answers chat commands",
      "environment": {"BOT_NAME": "WaddleBot"},
      "event_invoke_config": {"maximum_retry_attempts": 2, "maximum_event_age_in_seconds": 21600},
      "versions": {"1": {"code": "versions/1", "handler": "handler.lambda_handler", ...}},
      "aliases": {"live": "1", "beta": {"version": "$LATEST", "description": "what testers call"}}
    }

Every key is optional. `$LATEST` runs the folder's code with the top-level settings. A published version runs
the copy of the code in its `code` folder (default `versions/N`) with the settings its entry records, falling
back to the top-level ones for those it leaves out (`python -m local_lambda publish NAME` and the PublishVersion
API record them all, so later edits to the manifest do not change the version). An alias names a version or
`$LATEST`, alone or with a description. `concurrency` is the function's reserved concurrency (Lambda's
ReservedConcurrentExecutions): without it the function shares the runtime-wide pool, as an unreserved function
shares the account's. `event_invoke_config` is how Event invocations that fail are retried (Lambda's
MaximumRetryAttempts and MaximumEventAgeInSeconds), for every version of the function.

The runtime's own writes (PublishVersion, CreateAlias, UpdateAlias) replace the manifest whole, under a lock on the
function's folder, so that it is never read half-written and two writers never lose each other's change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local_lambda.errors import ResourceConflict

MANIFEST_FILE = "function.json"
VERSIONS_DIR = "versions"
LATEST = "$LATEST"
ACCOUNT_ID = "000000000000"
DEFAULT_HANDLER = "handler.lambda_handler"
# A folder holding this file and no manifest is a function with every setting at its default.
DEFAULT_HANDLER_FILE = DEFAULT_HANDLER.split(".")[0] + ".py"
DEFAULT_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
DEFAULT_TIMEOUT_SECONDS = 3
DEFAULT_MEMORY_SIZE_MB = 128
MAX_RESERVED_CONCURRENCY = 1000
# Lambda's defaults and bounds for retrying a failed Event invocation (FunctionEventInvokeConfig).
DEFAULT_MAXIMUM_RETRY_ATTEMPTS = 2
DEFAULT_MAXIMUM_EVENT_AGE_SECONDS = 21600
MINIMUM_EVENT_AGE_SECONDS = 60
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
ALIAS_NAME = re.compile(r"(?![0-9]+$)[A-Za-z0-9_-]{1,128}")
_ENVIRONMENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_VERSION_KEYS = {"code", "handler", "runtime", "timeout", "memory_size", "environment", "description", "role"}
_VERSION_KEYS |= {"logging_config"}
_VERSION_KEYS |= {"code_sha256", "last_modified"}
_MANIFEST_KEYS = (_VERSION_KEYS - {"code", "code_sha256", "last_modified"}) | {"concurrency", "versions", "aliases"}
_MANIFEST_KEYS |= {"event_invoke_config"}
_EVENT_INVOKE_KEYS = {"maximum_retry_attempts", "maximum_event_age_in_seconds"}
_ALIAS_KEYS = {"version", "description"}


class ManifestError(ResourceConflict):
    """A function's manifest cannot be used; the message names the file and what to fix.

    A 409 ResourceConflictException, as Lambda answers for a function it cannot run as it stands: clients do not
    retry it (a 5xx would make boto3 and the AWS CLI try four more times over six seconds for nothing).
    """


@dataclass(frozen=True)
class FunctionVersion:
    """One runnable version of a function: `$LATEST` (the folder's code) or a published copy."""

    function_name: str
    version: str
    code_dir: Path
    handler: str
    runtime: str
    timeout: int
    memory_size: int
    environment: tuple[tuple[str, str], ...]
    description: str
    role: str
    published_at: str | None  # LastModified as recorded when the version was published
    excluded: frozenset[str]  # top-level names in code_dir that are not this version's code
    # Lambda's LoggingConfig: "Text" or "JSON", and the levels below which the application's records and
    # Lambda's own (platform.start, platform.report, ...) are dropped.
    log_format: str = "Text"
    application_log_level: str | None = None
    system_log_level: str | None = None

    @property
    def is_latest(self) -> bool:
        return self.version == LATEST


@dataclass(frozen=True)
class FunctionManifest:
    """A function as its folder describes it."""

    name: str
    directory: Path
    reserved_concurrency: int | None  # None: the function shares the runtime-wide pool
    latest: FunctionVersion
    versions: Mapping[str, FunctionVersion]
    aliases: Mapping[str, str]  # alias name -> the version it names
    modified_ns: int
    alias_descriptions: Mapping[str, str] = field(default_factory=dict)
    maximum_retry_attempts: int = DEFAULT_MAXIMUM_RETRY_ATTEMPTS
    maximum_event_age_seconds: int = DEFAULT_MAXIMUM_EVENT_AGE_SECONDS
    event_invoke_configured: bool = False  # whether the manifest sets them (GetFunctionEventInvokeConfig)


def latest_excluded(manifest_raw: Mapping[str, Any]) -> frozenset[str]:
    """The top-level names in a function's folder that are not $LATEST's code: the manifest and the versions."""
    excluded = {MANIFEST_FILE, VERSIONS_DIR}
    versions = manifest_raw.get("versions")
    if isinstance(versions, dict):
        for number, entry in versions.items():
            code = entry.get("code") if isinstance(entry, dict) else None
            code = code if isinstance(code, str) else f"{VERSIONS_DIR}/{number}"
            excluded.add(Path(code).parts[0] if Path(code).parts else code)
    return frozenset(excluded)


def parse_manifest(name: str, path: Path, modified_ns: int) -> FunctionManifest:
    """The manifest at `path`; a folder with its code and no manifest has every setting at its default."""
    try:
        raw = json.loads(path.read_bytes()) if path.exists() else {}
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: nested too deeply
        raise ManifestError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: must hold a JSON object")
    unknown = sorted(set(raw) - _MANIFEST_KEYS)
    if unknown:
        raise ManifestError(f"{path}: unknown keys {unknown}; known keys are {sorted(_MANIFEST_KEYS)}")
    directory = path.parent
    defaults = {
        "handler": DEFAULT_HANDLER,
        "runtime": DEFAULT_RUNTIME,
        "timeout": DEFAULT_TIMEOUT_SECONDS,
        "memory_size": DEFAULT_MEMORY_SIZE_MB,
        "environment": {},
        "description": "",
        "role": f"arn:aws:iam::{ACCOUNT_ID}:role/{name}-role",
        "logging_config": {},
    }
    settings = _settings(raw, defaults, f"{path}")
    latest = _version(name, LATEST, directory, settings, None, latest_excluded(raw))

    versions_raw = raw.get("versions", {})
    if not isinstance(versions_raw, dict):
        raise ManifestError(f"{path}: 'versions' must be an object of version number -> version")
    versions: dict[str, FunctionVersion] = {}
    for number, entry in versions_raw.items():
        where = f"{path}: version {number!r}"
        if not _VERSION_NUMBER.fullmatch(number):
            raise ManifestError(f"{where}: version numbers are whole numbers from 1")
        if not isinstance(entry, dict):
            raise ManifestError(f'{where}: must be an object such as {{"code": "versions/{number}"}}')
        unknown = sorted(set(entry) - _VERSION_KEYS)
        if unknown:
            raise ManifestError(f"{where}: unknown keys {unknown}; known keys are {sorted(_VERSION_KEYS)}")
        code = entry.get("code", f"{VERSIONS_DIR}/{number}")
        code_dir = (directory / code).resolve() if isinstance(code, str) else None
        if code_dir is None or not code_dir.is_relative_to(directory.resolve()) or code_dir == directory.resolve():
            raise ManifestError(f"{where}: 'code' must name a folder inside {directory}")
        if not code_dir.is_dir():
            raise ManifestError(f"{where}: its code folder {code_dir} does not exist")
        published_at = entry.get("last_modified")
        if published_at is not None and not isinstance(published_at, str):
            raise ManifestError(f"{where}: 'last_modified' must be a string")
        versions[number] = _version(name, number, code_dir, _settings(entry, settings, where), published_at)

    aliases_raw = raw.get("aliases", {})
    if not isinstance(aliases_raw, dict):
        raise ManifestError(f"{path}: 'aliases' must be an object of alias name -> version")
    aliases: dict[str, str] = {}
    alias_descriptions: dict[str, str] = {}
    for alias, entry in aliases_raw.items():
        if not ALIAS_NAME.fullmatch(alias):
            raise ManifestError(f"{path}: alias {alias!r} must be letters, digits, - or _, and not only digits")
        target, description = entry, ""
        if isinstance(entry, dict):
            if set(entry) - _ALIAS_KEYS or not isinstance(entry.get("description", ""), str):
                raise ManifestError(
                    f'{path}: alias {alias!r} must be a version, or an object such as {{"version": "1", '
                    '"description": "..."}'
                )
            target, description = entry.get("version"), entry.get("description", "")
        if not isinstance(target, str) or (target != LATEST and target not in versions):
            raise ManifestError(f"{path}: alias {alias!r} points at {target!r}, which is not a version")
        aliases[alias] = target
        if description:
            alias_descriptions[alias] = description

    reserved = raw.get("concurrency")
    if reserved is not None and (not _is_integer(reserved) or not 0 <= reserved <= MAX_RESERVED_CONCURRENCY):
        raise ManifestError(
            f"{path}: 'concurrency' (the function's reserved concurrency) must be a whole number from 0 to "
            f"{MAX_RESERVED_CONCURRENCY}, or left out for none"
        )
    retry_attempts, event_age = _event_invoke_config(raw.get("event_invoke_config", {}), f"{path}")
    return FunctionManifest(
        name,
        directory,
        reserved,
        latest,
        versions,
        aliases,
        modified_ns,
        alias_descriptions=alias_descriptions,
        maximum_retry_attempts=retry_attempts,
        maximum_event_age_seconds=event_age,
        event_invoke_configured="event_invoke_config" in raw,
    )


def _event_invoke_config(config: Any, where: str) -> tuple[int, int]:
    """Lambda's MaximumRetryAttempts and MaximumEventAgeInSeconds, as the manifest spells them, checked."""
    if not isinstance(config, dict) or set(config) - _EVENT_INVOKE_KEYS:
        raise ManifestError(
            f"{where}: 'event_invoke_config' must be an object with keys among {sorted(_EVENT_INVOKE_KEYS)}"
        )
    attempts = config.get("maximum_retry_attempts", DEFAULT_MAXIMUM_RETRY_ATTEMPTS)
    if not _is_integer(attempts) or not 0 <= attempts <= DEFAULT_MAXIMUM_RETRY_ATTEMPTS:
        raise ManifestError(
            f"{where}: event_invoke_config 'maximum_retry_attempts' must be 0, 1 or 2 (retries after a failed "
            "Event invocation)"
        )
    age = config.get("maximum_event_age_in_seconds", DEFAULT_MAXIMUM_EVENT_AGE_SECONDS)
    if not _is_integer(age) or not MINIMUM_EVENT_AGE_SECONDS <= age <= DEFAULT_MAXIMUM_EVENT_AGE_SECONDS:
        raise ManifestError(
            f"{where}: event_invoke_config 'maximum_event_age_in_seconds' must be a whole number of seconds from "
            f"{MINIMUM_EVENT_AGE_SECONDS} to {DEFAULT_MAXIMUM_EVENT_AGE_SECONDS}"
        )
    return attempts, age


def read_manifest_object(path: Path) -> dict[str, Any]:
    """A manifest file as the JSON object it holds (an empty one when the folder has none), to edit and write."""
    if not path.exists():
        return {}
    raw = json.loads(path.read_bytes())
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: must hold a JSON object")
    return raw


def write_manifest(path: Path, raw: Mapping[str, Any]) -> None:
    """Replace a manifest whole: written beside it, then renamed over it, so no reader sees it half-written."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.writing")
    staged.write_text(json.dumps(raw, indent=2) + "\n")
    os.replace(staged, path)


@contextlib.contextmanager
def manifest_lock(directory: Path) -> Iterator[None]:
    """Hold the function folder's lock while its manifest is read, changed and written.

    An flock on the folder: it excludes other threads and other processes (`python -m local_lambda publish`) alike.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _version(
    name: str,
    version: str,
    code_dir: Path,
    settings: dict[str, Any],
    published_at: str | None,
    excluded: frozenset[str] = frozenset(),
) -> FunctionVersion:
    return FunctionVersion(
        function_name=name,
        version=version,
        code_dir=code_dir,
        handler=settings["handler"],
        runtime=settings["runtime"],
        timeout=settings["timeout"],
        memory_size=settings["memory_size"],
        environment=tuple(sorted(settings["environment"].items())),
        description=settings["description"],
        role=settings["role"],
        published_at=published_at,
        excluded=excluded,
        log_format=settings["logging_config"].get("log_format", "Text"),
        application_log_level=settings["logging_config"].get("application_log_level"),
        system_log_level=settings["logging_config"].get("system_log_level"),
    )


_LOGGING_KEYS = {"log_format", "application_log_level", "system_log_level"}
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
# Lambda's own records have three levels only.
SYSTEM_LOG_LEVELS = ("DEBUG", "INFO", "WARN")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _settings(raw: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The run settings an object names, validated, with `defaults` for those it leaves out."""
    settings = {key: raw.get(key, default) for key, default in defaults.items()}
    handler = settings["handler"]
    if not isinstance(handler, str) or "." not in handler.strip(".") or " " in handler:
        raise ManifestError(f"{where}: 'handler' must look like module.function, such as {DEFAULT_HANDLER}")
    if not isinstance(settings["runtime"], str) or not settings["runtime"].startswith("python"):
        raise ManifestError(f"{where}: 'runtime' must be a Python runtime such as {DEFAULT_RUNTIME}")
    if not _is_integer(settings["timeout"]) or not 1 <= settings["timeout"] <= 900:
        raise ManifestError(f"{where}: 'timeout' must be a whole number of seconds from 1 to 900")
    if not _is_integer(settings["memory_size"]) or not 128 <= settings["memory_size"] <= 10240:
        raise ManifestError(f"{where}: 'memory_size' must be a whole number of MB from 128 to 10240")
    environment = settings["environment"]
    if not isinstance(environment, dict) or not all(
        isinstance(key, str) and _ENVIRONMENT_NAME.fullmatch(key) and isinstance(value, str)
        for key, value in environment.items()
    ):
        raise ManifestError(f"{where}: 'environment' must be an object of NAME -> string value")
    for key in ("description", "role"):
        if not isinstance(settings[key], str):
            raise ManifestError(f"{where}: {key!r} must be a string")
    _check_logging_config(settings["logging_config"], where)
    return settings


def _check_logging_config(config: Any, where: str) -> None:
    """Lambda's LoggingConfig, as the manifest spells it: log_format Text or JSON, and the log levels."""
    if not isinstance(config, dict) or set(config) - _LOGGING_KEYS:
        raise ManifestError(f"{where}: 'logging_config' must be an object with keys among {sorted(_LOGGING_KEYS)}")
    if config.get("log_format", "Text") not in ("Text", "JSON"):
        raise ManifestError(f"{where}: logging_config 'log_format' must be Text or JSON")
    for key, levels in (("application_log_level", LOG_LEVELS), ("system_log_level", SYSTEM_LOG_LEVELS)):
        if key in config and config[key] not in levels:
            raise ManifestError(f"{where}: logging_config {key!r} must be one of {', '.join(levels)}")
        if key in config and config.get("log_format", "Text") != "JSON":
            # As Lambda: log levels need the JSON format.
            raise ManifestError(f"{where}: logging_config {key!r} needs 'log_format': 'JSON'")
