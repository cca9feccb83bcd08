"""The functions folder: which functions exist, what a name and qualifier select, and what Lambda reports of them.

One sub-folder per function, named as the function, holding its code and a `function.json` manifest (see
`local_lambda.manifest` for what it holds).

Everything is read from disk when asked and cached by modification time, so new folders, edited manifests
and edited code are seen without a restart. Symbolic links are followed only where they stay inside the
functions folder: a function folder, manifest or code file linking outside it is refused, so that nothing
outside the folder is listed or run.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import os
import platform
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from local_lambda.code import CodeSnapshot, check_link_inside, code_sha256, scan_code
from local_lambda.errors import InvalidParameterValue, ResourceNotFound
from local_lambda.manifest import (
    ACCOUNT_ID,
    DEFAULT_HANDLER_FILE,
    FUNCTION_NAME,
    LATEST,
    MANIFEST_FILE,
    FunctionManifest,
    FunctionVersion,
    ManifestError,
    parse_manifest,
)

logger = logging.getLogger(__name__)

# The default handler's module may also be a package, as Python imports either.
DEFAULT_HANDLER_PACKAGE = str(Path(DEFAULT_HANDLER_FILE).with_suffix("") / "__init__.py")

MAX_LIST_PAGE = 50  # ListFunctions answers at most this many per page, whatever MaxItems asks for
# $LATEST's files are scanned at every call, so that an edit counts at once. For a large folder (vendored
# packages) a scan costs milliseconds, more than the rest of a warm call: a scan slower than this is reused
# for _SLOW_SCAN_REUSE_SECONDS, so an edit there counts within that time rather than at once.
_SLOW_SCAN_SECONDS = 0.002
_SLOW_SCAN_REUSE_SECONDS = 1.0

# Every unreserved call needs the folder's total reservation; it is counted again after this long, so that a
# reservation added to a manifest counts within a second without a folder scan at every call.
_RESERVED_TOTAL_REUSE_SECONDS = 1.0

_ARCHITECTURE = "arm64" if platform.machine().lower() in ("arm64", "aarch64") else "x86_64"


@dataclass(frozen=True)
class FunctionConfiguration:
    """What Lambda reports of one function version; `local_lambda.api` renders it in Lambda's JSON."""

    name: str
    arn: str
    runtime: str
    role: str
    handler: str
    code_size: int
    description: str
    timeout: int
    memory_size: int
    last_modified: str
    code_sha256: str
    version: str
    environment: dict[str, str]
    revision_id: str
    architecture: str
    log_format: str = "Text"
    application_log_level: str | None = None
    system_log_level: str | None = None


@dataclass(frozen=True)
class FunctionListing:
    """One page of ListFunctions, and the marker of the next page (None on the last)."""

    configurations: list[FunctionConfiguration]
    next_marker: str | None


@dataclass(frozen=True)
class ResolvedFunction:
    """What a function name and qualifier select: the function, the version that runs, the qualifier given."""

    manifest: FunctionManifest
    version: FunctionVersion
    qualifier: str | None  # as the caller gave it (an alias, a version, $LATEST), None when unqualified


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


def unqualified_name(name_or_arn: str) -> str:
    """The bare name for an operation on the function itself, which takes no qualifier (aliases, versions)."""
    name, qualifier = split_function_name(name_or_arn)
    if qualifier is not None:
        raise InvalidParameterValue(f"Unsupported qualifier {qualifier!r} in function name: give the function alone")
    return name


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
        self._reserved_total: tuple[int, float] | None = None  # the total, when it was counted
        self._not_functions_reported: set[str] = set()

    # -- reading manifests -----------------------------------------------------------------------------

    def function_names(self) -> list[str]:
        """The names of the folders that are functions (a manifest, or the default handler's file), sorted; any
        other folder is said once in the log, with why it is not a function."""
        try:
            entries = list(os.scandir(self.functions_dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for entry in entries:
            if not entry.is_dir() or entry.name.startswith((".", "_")):
                continue
            if not FUNCTION_NAME.fullmatch(entry.name):
                self._report_not_a_function(entry.name, "its name is not a Lambda function name")
            elif _is_function_folder(Path(entry.path)):
                names.append(entry.name)
            else:
                why = f"it holds neither {MANIFEST_FILE} nor {DEFAULT_HANDLER_FILE} nor {DEFAULT_HANDLER_PACKAGE}"
                self._report_not_a_function(entry.name, why)
        return sorted(names)

    def _report_not_a_function(self, name: str, why: str) -> None:
        if name not in self._not_functions_reported:
            self._not_functions_reported.add(name)
            logger.warning("%s/%s is not a function: %s", self.functions_dir, name, why)

    def load(self, name: str) -> FunctionManifest:
        """A function's manifest; ResourceNotFound when there is no such function, ManifestError when it is broken."""
        directory = self.functions_dir / name
        path = directory / MANIFEST_FILE
        try:
            if not FUNCTION_NAME.fullmatch(name):
                raise FileNotFoundError(name)
            # Without a manifest, the handler's module stands for it (every setting at its default).
            stat = path.stat() if path.exists() else _default_handler_module(directory).stat()
        except (FileNotFoundError, NotADirectoryError):
            self._manifests.pop(name, None)
            raise ResourceNotFound(f"Function not found: {function_arn(self.region, name)}") from None
        # Checked at every call, before the cache: a link can be pointed elsewhere at any time.
        for candidate in (directory, path):
            if candidate.is_symlink():
                check_link_inside(candidate, self.root)
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._manifests.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        manifest = parse_manifest(name, path, stat.st_mtime_ns)
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
            snapshot = scan_code(version.code_dir, version.excluded, self.root)
            if time.monotonic() - now > _SLOW_SCAN_SECONDS:
                self._slow_latest_snapshots[version.code_dir] = (snapshot, now)
            else:
                self._slow_latest_snapshots.pop(version.code_dir, None)
            return snapshot
        published = self._published_snapshots.get(version.code_dir)
        if published is None:
            published = self._published_snapshots[version.code_dir] = scan_code(
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

    def configuration(self, resolved: ResolvedFunction) -> FunctionConfiguration:
        """What Lambda reports of a resolved function (GetFunctionConfiguration; the API renders it)."""
        version, manifest = resolved.version, resolved.manifest
        snapshot = self.snapshot(version)
        if version.published_at is not None:
            last_modified = version.published_at
        else:
            modified_ns = max(snapshot.modified_ns, manifest.modified_ns) if version.is_latest else snapshot.modified_ns
            last_modified = lambda_timestamp(modified_ns)
        sha256 = self.code_sha256(version, snapshot)
        revision = hashlib.sha256(f"{sha256}/{manifest.modified_ns}/{version.version}".encode()).digest()[:16]
        return FunctionConfiguration(
            name=manifest.name,
            arn=function_arn(self.region, manifest.name, resolved.qualifier),
            runtime=version.runtime,
            role=version.role,
            handler=version.handler,
            code_size=snapshot.size,
            description=version.description,
            timeout=version.timeout,
            memory_size=version.memory_size,
            last_modified=last_modified,
            code_sha256=sha256,
            version=version.version,
            environment=dict(version.environment),
            revision_id=str(uuid.UUID(bytes=revision)),
            architecture=_ARCHITECTURE,
            log_format=version.log_format,
            application_log_level=version.application_log_level,
            system_log_level=version.system_log_level,
        )

    def list_versions(
        self, name_or_arn: str, max_items: int | None = None, marker: str | None = None
    ) -> FunctionListing:
        """One page of a function's versions, $LATEST first then by number (ListVersionsByFunction)."""
        name = unqualified_name(name_or_arn)
        manifest = self.load(name)
        page_size = MAX_LIST_PAGE if max_items is None else min(max_items, MAX_LIST_PAGE)
        after = _decode_marker(marker) if marker else None
        entries = [(-1, LATEST), *sorted((int(number), number) for number in manifest.versions)]
        remaining = [(order, qualifier) for order, qualifier in entries if after is None or (name, order) > after]
        page = remaining[:page_size]
        configurations = []
        for _, qualifier in page:
            version = manifest.latest if qualifier == LATEST else manifest.versions[qualifier]
            # Each with its qualified ARN, $LATEST's too, as Lambda lists them.
            configurations.append(self.configuration(ResolvedFunction(manifest, version, qualifier)))
        more = len(remaining) > len(page)
        return FunctionListing(configurations, _encode_marker((name, page[-1][0])) if more and page else None)

    def reserved_concurrency_total(self) -> int:
        """The concurrency the folder's functions reserve between them, read again at most once a second."""
        now = time.monotonic()
        if self._reserved_total is not None and now - self._reserved_total[1] < _RESERVED_TOTAL_REUSE_SECONDS:
            return self._reserved_total[0]
        total = 0
        for name in self.function_names():
            try:
                total += self.load(name).reserved_concurrency or 0
            except (ResourceNotFound, ManifestError):  # removed since listed, or broken: it reserves nothing
                continue
        self._reserved_total = (total, now)
        return total

    def list_functions(
        self, max_items: int | None = None, marker: str | None = None, all_versions: bool = False
    ) -> FunctionListing:
        """One page of configurations sorted by name (ListFunctions), and the marker of the next when more remain."""
        page_size = MAX_LIST_PAGE if max_items is None else min(max_items, MAX_LIST_PAGE)
        after = _decode_marker(marker) if marker else None
        page: list[FunctionConfiguration] = []
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
                    configuration = dataclasses.replace(configuration, arn=function_arn(self.region, name, qualifier))
                page.append(configuration)
                last_key = key
            if more:
                break
        return FunctionListing(page, _encode_marker(last_key) if more and last_key is not None else None)

    def _report_broken(self, name: str, error: ManifestError) -> None:
        """Warn once per problem with a manifest, rather than at every listing."""
        if (name, error.message) not in self._broken_manifests_reported:
            self._broken_manifests_reported.add((name, error.message))
            logger.warning("ListFunctions skips %s: %s", name, error.message)


def _is_function_folder(directory: Path) -> bool:
    return (directory / MANIFEST_FILE).is_file() or _default_handler_module(directory).is_file()


def _default_handler_module(directory: Path) -> Path:
    """The file of the default handler's module: handler.py, or else a handler/ package's __init__.py."""
    module = directory / DEFAULT_HANDLER_FILE
    package = directory / DEFAULT_HANDLER_PACKAGE
    return package if not module.is_file() and package.is_file() else module


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
