"""The functions folder: manifests, versions and aliases, qualifiers, and the configuration Lambda reports.

One sub-folder per function, named as the function, holding its code and a `function.json` manifest:

    {
      "handler": "handler.lambda_handler",
      "runtime": "python3.11",
      "timeout": 3,
      "memory_size": 128,
      "concurrency": 4,
      "description": "Answers chat commands",
      "environment": {"BOT_NAME": "WaddleBot"},
      "versions": {"1": {"code": "versions/1", "handler": "handler.lambda_handler", ...}},
      "aliases": {"live": "1"}
    }

Every key is optional. `$LATEST` runs the folder's code with the top-level settings. A published version runs
the copy of the code in its `code` folder (default `versions/N`) with the settings its entry records, falling
back to the top-level ones for those it leaves out (`python -m local_lambda publish NAME` records them all, so
later edits to the manifest do not change the version). An alias names a version or `$LATEST`.

Everything is read from disk when asked and cached by modification time, so new folders, edited manifests
and edited code are seen without a restart. Symbolic links are followed only where they stay inside the
functions folder: a function folder, manifest or code file linking outside it is refused, so that nothing
outside the folder is listed or run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import platform
import re
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local_lambda.errors import InvalidParameterValue, ResourceNotFound, ServiceFailure

logger = logging.getLogger(__name__)

MANIFEST_FILE = "function.json"
VERSIONS_DIR = "versions"
LATEST = "$LATEST"
ACCOUNT_ID = "000000000000"
DEFAULT_HANDLER = "handler.lambda_handler"
DEFAULT_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
DEFAULT_TIMEOUT_SECONDS = 3
DEFAULT_MEMORY_SIZE_MB = 128
DEFAULT_CONCURRENCY = 4
MAX_LIST_PAGE = 50  # ListFunctions answers at most this many per page, whatever MaxItems asks for
# $LATEST's files are scanned at every call, so that an edit counts at once. For a large folder (vendored
# packages) a scan costs milliseconds, more than the rest of a warm call: a scan slower than this is reused
# for _SLOW_SCAN_REUSE_SECONDS, so an edit there counts within that time rather than at once.
_SLOW_SCAN_SECONDS = 0.002
_SLOW_SCAN_REUSE_SECONDS = 1.0

_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
_ALIAS_NAME = re.compile(r"(?![0-9]+$)[A-Za-z0-9_-]{1,128}")
_ENVIRONMENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_VERSION_KEYS = {"code", "handler", "runtime", "timeout", "memory_size", "environment", "description", "role"}
_VERSION_KEYS |= {"code_sha256", "last_modified"}
_MANIFEST_KEYS = (_VERSION_KEYS - {"code", "code_sha256", "last_modified"}) | {"concurrency", "versions", "aliases"}
_ARCHITECTURE = "arm64" if platform.machine().lower() in ("arm64", "aarch64") else "x86_64"


class ManifestError(ServiceFailure):
    """A function's manifest cannot be used; the message names the file and what to fix."""


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

    @property
    def is_latest(self) -> bool:
        return self.version == LATEST


@dataclass(frozen=True)
class FunctionManifest:
    """A function as its folder describes it."""

    name: str
    directory: Path
    concurrency: int
    latest: FunctionVersion
    versions: Mapping[str, FunctionVersion]
    aliases: Mapping[str, str]
    modified_ns: int


@dataclass(frozen=True)
class ResolvedFunction:
    """What a function name and qualifier select: the function, the version that runs, the qualifier given."""

    manifest: FunctionManifest
    version: FunctionVersion
    qualifier: str | None  # as the caller gave it (an alias, a version, $LATEST), None when unqualified


@dataclass(frozen=True)
class CodeSnapshot:
    """The state of a version's code files: a fingerprint that changes when any file does, and their size."""

    fingerprint: str
    size: int
    modified_ns: int


def function_arn(region: str, name: str, qualifier: str | None = None) -> str:
    """The ARN Lambda gives a function, or a qualified one."""
    arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def lambda_timestamp(epoch_ns: int) -> str:
    """A time in Lambda's LastModified format, such as 2026-11-28T13:00:00.000+0000."""
    moment = datetime.fromtimestamp(epoch_ns / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def split_function_name(raw: str) -> tuple[str, str | None]:
    """The bare name and the qualifier in `name`, `name:qualifier`, `account:function:name[:q]` or a full ARN."""
    fields = raw.split(":")
    if raw.startswith("arn:") and len(fields) in (7, 8) and fields[5] == "function":
        return fields[6], fields[7] if len(fields) == 8 else None
    if len(fields) in (3, 4) and fields[1] == "function":
        return fields[2], fields[3] if len(fields) == 4 else None
    if len(fields) in (1, 2) and not raw.startswith("arn:"):
        return fields[0], fields[1] if len(fields) == 2 else None
    raise InvalidParameterValue(f"1 validation error detected: Value '{raw}' at 'functionName' is not a valid name")


class FunctionRegistry:
    """The functions in a folder, read from disk on demand and cached by modification time."""

    def __init__(self, functions_dir: Path, region: str) -> None:
        self.functions_dir = functions_dir
        self.region = region
        self.root = functions_dir.resolve()  # where every symbolic link must lead
        self._manifests: dict[str, tuple[tuple[int, int, int], FunctionManifest]] = {}
        # Published versions are immutable: their code is scanned once.
        self._published_snapshots: dict[Path, CodeSnapshot] = {}
        self._slow_latest_snapshots: dict[Path, tuple[CodeSnapshot, float]] = {}  # snapshot, when scanned
        self._digests: dict[tuple[Path, str], str] = {}
        self._broken_manifests_reported: set[tuple[str, str]] = set()

    # -- reading manifests -----------------------------------------------------------------------------

    def function_names(self) -> list[str]:
        """The names of the folders that hold a manifest, sorted."""
        try:
            entries = list(os.scandir(self.functions_dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            entry.name
            for entry in entries
            if _FUNCTION_NAME.fullmatch(entry.name) and os.path.isfile(os.path.join(entry.path, MANIFEST_FILE))
        )

    def load(self, name: str) -> FunctionManifest:
        """A function's manifest; ResourceNotFound when there is no such function, ManifestError when it is broken."""
        directory = self.functions_dir / name
        path = directory / MANIFEST_FILE
        try:
            if not _FUNCTION_NAME.fullmatch(name):
                raise FileNotFoundError(name)
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self._manifests.pop(name, None)
            raise ResourceNotFound(f"Function not found: {function_arn(self.region, name)}") from None
        # Checked at every call, before the cache: a link can be pointed elsewhere at any time.
        for candidate in (directory, path):
            if candidate.is_symlink():
                _check_link_inside(candidate, self.root)
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._manifests.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        manifest = _parse_manifest(name, path, stat.st_mtime_ns)
        self._manifests[name] = (key, manifest)
        return manifest

    def resolve(self, name_or_arn: str, qualifier: str | None = None) -> ResolvedFunction:
        """The version a function name (or ARN, or name:qualifier) and a Qualifier select, as Lambda resolves them."""
        name, derived = split_function_name(name_or_arn)
        if derived and qualifier and derived != qualifier:
            raise InvalidParameterValue(
                "The derived qualifier from the function name does not match the specified qualifier."
            )
        qualifier = qualifier or derived or None
        manifest = self.load(name)
        if qualifier is None or qualifier == LATEST:
            version = manifest.latest
        elif qualifier in manifest.versions:
            version = manifest.versions[qualifier]
        elif qualifier in manifest.aliases:
            target = manifest.aliases[qualifier]
            version = manifest.latest if target == LATEST else manifest.versions[target]
        else:
            raise ResourceNotFound(f"Function not found: {function_arn(self.region, name, qualifier)}")
        return ResolvedFunction(manifest, version, qualifier)

    # -- code ------------------------------------------------------------------------------------------

    def snapshot(self, version: FunctionVersion) -> CodeSnapshot:
        """The current state of a version's code (scanned at each call for $LATEST, once for a published version)."""
        if version.is_latest:
            now = time.monotonic()
            slow = self._slow_latest_snapshots.get(version.code_dir)
            if slow is not None and now - slow[1] < _SLOW_SCAN_REUSE_SECONDS:
                return slow[0]
            snapshot = _scan_code(version.code_dir, version.excluded, self.root)
            if time.monotonic() - now > _SLOW_SCAN_SECONDS:
                self._slow_latest_snapshots[version.code_dir] = (snapshot, now)
            else:
                self._slow_latest_snapshots.pop(version.code_dir, None)
            return snapshot
        published = self._published_snapshots.get(version.code_dir)
        if published is None:
            published = self._published_snapshots[version.code_dir] = _scan_code(
                version.code_dir, version.excluded, self.root
            )
        return published

    def code_sha256(self, version: FunctionVersion, snapshot: CodeSnapshot) -> str:
        """The base64 SHA-256 of a version's code files, computed once per state of the code."""
        key = (version.code_dir, snapshot.fingerprint)
        digest = self._digests.get(key)
        if digest is None:
            digest = self._digests[key] = code_sha256(version.code_dir, version.excluded, self.root)
        return digest

    # -- what Lambda reports ---------------------------------------------------------------------------

    def configuration(self, resolved: ResolvedFunction) -> dict[str, Any]:
        """GetFunctionConfiguration's answer for a resolved function."""
        version, manifest = resolved.version, resolved.manifest
        snapshot = self.snapshot(version)
        if version.published_at is not None:
            last_modified = version.published_at
        else:
            modified_ns = max(snapshot.modified_ns, manifest.modified_ns) if version.is_latest else snapshot.modified_ns
            last_modified = lambda_timestamp(modified_ns)
        sha256 = self.code_sha256(version, snapshot)
        revision = hashlib.sha256(f"{sha256}/{manifest.modified_ns}/{version.version}".encode()).digest()[:16]
        return {
            "FunctionName": manifest.name,
            "FunctionArn": function_arn(self.region, manifest.name, resolved.qualifier),
            "Runtime": version.runtime,
            "Role": version.role,
            "Handler": version.handler,
            "CodeSize": snapshot.size,
            "Description": version.description,
            "Timeout": version.timeout,
            "MemorySize": version.memory_size,
            "LastModified": last_modified,
            "CodeSha256": sha256,
            "Version": version.version,
            "Environment": {"Variables": dict(version.environment)},
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": str(uuid.UUID(bytes=revision)),
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": [_ARCHITECTURE],
            "EphemeralStorage": {"Size": 512},
        }

    def list_functions(
        self, max_items: int | None = None, marker: str | None = None, all_versions: bool = False
    ) -> dict[str, Any]:
        """ListFunctions' answer: one page of configurations sorted by name, and NextMarker when more remain."""
        page_size = MAX_LIST_PAGE if max_items is None else min(max_items, MAX_LIST_PAGE)
        after = _decode_marker(marker) if marker else None
        page: list[dict[str, Any]] = []
        last_key: tuple[str, int] | None = None
        more = False
        for name in self.function_names():
            if after is not None and name < after[0]:
                continue
            try:
                manifest = self.load(name)
            except ResourceNotFound:  # removed since the folder was listed
                continue
            except ManifestError as error:
                self._report_broken(name, error)
                continue
            entries: list[tuple[int, str | None]] = [(-1, None)]
            if all_versions:
                entries += sorted((int(number), number) for number in manifest.versions)
            for order, qualifier in entries:
                key = (name, order)
                if after is not None and key <= after:
                    continue
                if len(page) == page_size:
                    more = True
                    break
                version = manifest.versions[qualifier] if qualifier else manifest.latest
                try:
                    configuration = self.configuration(ResolvedFunction(manifest, version, None))
                except ManifestError as error:  # its code links outside the functions folder
                    self._report_broken(name, error)
                    continue
                if qualifier:  # ListFunctions gives published versions their qualified ARN
                    configuration["FunctionArn"] = function_arn(self.region, name, qualifier)
                page.append(configuration)
                last_key = key
            if more:
                break
        answer: dict[str, Any] = {"Functions": page}
        if more and last_key is not None:
            answer["NextMarker"] = _encode_marker(last_key)
        return answer

    def _report_broken(self, name: str, error: ManifestError) -> None:
        """Warn once per problem with a manifest, rather than at every listing."""
        if (name, error.message) not in self._broken_manifests_reported:
            self._broken_manifests_reported.add((name, error.message))
            logger.warning("ListFunctions skips %s: %s", name, error.message)


def _encode_marker(key: tuple[str, int]) -> str:
    # Opaque to callers, as Lambda's markers are: the last (name, version) of the page; the next page starts
    # after it, so functions added or removed between pages neither repeat nor shift the listing.
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_marker(marker: str) -> tuple[str, int]:
    try:
        name, order = json.loads(base64.urlsafe_b64decode(marker.encode()))
        if isinstance(name, str) and isinstance(order, int):
            return name, order
    except (binascii.Error, ValueError, TypeError, RecursionError):
        pass
    raise InvalidParameterValue(f"Invalid marker: {marker[:100]}")


# -- scanning code ---------------------------------------------------------------------------------------


def _check_link_inside(path: Path | str, root: Path) -> None:
    """ManifestError when the symbolic link `path` leads outside `root`, the functions folder."""
    target = os.path.realpath(path)
    if not Path(target).is_relative_to(root):
        raise ManifestError(f"{path} is a symbolic link to {target}, outside the functions folder {root}")


def _code_files(code_dir: Path, excluded: frozenset[str], root: Path) -> list[tuple[str, os.stat_result]]:
    """A version's code files, relative paths sorted, without caches, hidden files and `excluded` top-level names.

    ManifestError when any of them is a symbolic link leading outside `root`, as the handler would import it.
    """
    files: list[tuple[str, os.stat_result]] = []
    pending = [(str(code_dir), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:  # removed, unreadable: not code this runtime can see either
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name == "__pycache__" or (not prefix and name in excluded):
                continue
            relative = prefix + name
            if entry.is_symlink():
                _check_link_inside(entry.path, root)
            # Directories are not followed through symbolic links, so that a link loop cannot hang a request.
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, relative + "/"))
                elif entry.is_file():
                    files.append((relative, entry.stat()))
            except OSError:  # removed while scanning, or a link that loops
                continue
    files.sort(key=lambda item: item[0])
    return files


def _scan_code(code_dir: Path, excluded: frozenset[str], root: Path) -> CodeSnapshot:
    """The code's fingerprint: paths, sizes, modification times and inodes, so any edit or replacement shows."""
    files = _code_files(code_dir, excluded, root)
    state = repr([(path, stat.st_mtime_ns, stat.st_size, stat.st_ino) for path, stat in files]).encode()
    return CodeSnapshot(
        fingerprint=hashlib.blake2b(state, digest_size=16).hexdigest(),
        size=sum(stat.st_size for _, stat in files),
        modified_ns=max((stat.st_mtime_ns for _, stat in files), default=0),
    )


def code_sha256(code_dir: Path, excluded: frozenset[str], root: Path) -> str:
    """The base64 SHA-256 of a version's code: each file's relative path and content, in path order.

    `root` is the functions folder: ManifestError when a code file links outside it.
    """
    digest = hashlib.sha256()
    for relative, _ in _code_files(code_dir, excluded, root):
        digest.update(relative.encode() + b"\0")
        try:
            digest.update((code_dir / relative).read_bytes())
        except OSError:
            continue
        digest.update(b"\0")
    return base64.b64encode(digest.digest()).decode()


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


# -- parsing manifests -----------------------------------------------------------------------------------


def _parse_manifest(name: str, path: Path, modified_ns: int) -> FunctionManifest:
    try:
        raw = json.loads(path.read_bytes())
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
    for alias, target in aliases_raw.items():
        if not _ALIAS_NAME.fullmatch(alias):
            raise ManifestError(f"{path}: alias {alias!r} must be letters, digits, - or _, and not only digits")
        if not isinstance(target, str) or (target != LATEST and target not in versions):
            raise ManifestError(f"{path}: alias {alias!r} points at {target!r}, which is not a version")

    concurrency = raw.get("concurrency", DEFAULT_CONCURRENCY)
    if not _is_integer(concurrency) or not 1 <= concurrency <= 1000:
        raise ManifestError(f"{path}: 'concurrency' must be a whole number from 1 to 1000")
    return FunctionManifest(name, directory, concurrency, latest, versions, dict(aliases_raw), modified_ns)


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
    )


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
    return settings
