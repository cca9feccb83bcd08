"""Publishing: copy a function's current code into its next numbered version and record it in the manifest.

Both `python -m local_lambda publish NAME` and the PublishVersion API come here, so a version published either
way is the same files: a copy of the code under `versions/N` and an entry in `function.json` recording every
setting it runs with.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_lambda.code import code_sha256
from local_lambda.errors import InvalidParameterValue, PreconditionFailed
from local_lambda.manifest import (
    MANIFEST_FILE,
    VERSIONS_DIR,
    FunctionVersion,
    ManifestError,
    manifest_lock,
    read_manifest_object,
    write_manifest,
)
from local_lambda.registry import FunctionRegistry, ResolvedFunction, lambda_timestamp


def publish_version(functions_dir: Path | str, function_name: str, description: str | None = None) -> str:
    """Publish $LATEST as the next version (or return the last one, unchanged since); the version number."""
    registry = FunctionRegistry(Path(functions_dir).resolve(), region="us-east-1")
    return publish_latest(registry, function_name, description)


def publish_latest(
    registry: FunctionRegistry,
    function_name: str,
    description: str | None = None,
    *,
    expected_code_sha256: str | None = None,
    expected_revision_id: str | None = None,
) -> str:
    """Publish a function's $LATEST as its next version, as PublishVersion does; the version number.

    As Lambda: when neither the code nor the configuration changed since the last version, that version is
    answered and nothing is written. `expected_code_sha256` and `expected_revision_id` are PublishVersion's
    CodeSha256 and RevisionId: publish only if $LATEST is still what the caller saw.
    """
    directory = registry.load(function_name).directory  # ResourceNotFound before any lock is taken
    with manifest_lock(directory):
        manifest = registry.load(function_name)  # validates the manifest, as it is now, before anything is copied
        latest = manifest.latest
        if expected_code_sha256 is not None or expected_revision_id is not None:
            current = registry.configuration(ResolvedFunction(manifest, latest, None))
            if expected_code_sha256 is not None and expected_code_sha256 != current.code_sha256:
                raise InvalidParameterValue(
                    f"CodeSHA256 ({expected_code_sha256}) is different from current CodeSHA256 in $LATEST "
                    f"({current.code_sha256}). Please try again with the CodeSHA256 in $LATEST."
                )
            if expected_revision_id is not None and expected_revision_id != current.revision_id:
                raise PreconditionFailed(
                    "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/"
                    "GetAlias API to retrieve the latest Revision Id"
                )
        manifest_path = manifest.directory / MANIFEST_FILE
        raw: dict[str, Any] = read_manifest_object(manifest_path)
        sha256 = code_sha256(latest.code_dir, latest.excluded, registry.root)  # refuses links leading outside
        # Everything the version runs with is recorded, so later edits of the manifest leave the version as it was.
        settings = {
            "handler": latest.handler,
            "runtime": latest.runtime,
            "timeout": latest.timeout,
            "memory_size": latest.memory_size,
            "environment": dict(latest.environment),
            "description": latest.description if description is None else description,
            "role": latest.role,
            "logging_config": _logging_config(latest),
        }
        versions: dict[str, Any] = raw.setdefault("versions", {})
        if versions:
            # As Lambda: no new version when neither code nor configuration changed since the last one. A
            # description given for the version is the version's own, not a change of the function.
            last = max(versions, key=int)
            entry = versions[last]
            compared = [key for key in settings if not (key == "description" and description is not None)]
            if entry.get("code_sha256") == sha256 and all(entry.get(key) == settings[key] for key in compared):
                return last
        number = str(max((int(existing) for existing in versions), default=0) + 1)
        code = f"{VERSIONS_DIR}/{number}"
        target = manifest.directory / code
        if target.exists():
            raise ManifestError(f"{target} exists but {manifest_path} has no version {number}; move it away first")
        staging = manifest.directory / VERSIONS_DIR / f".publishing-{number}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(latest.code_dir, staging, ignore=_not_code(latest.code_dir, latest.excluded))
        os.replace(staging, target)
        versions[number] = {
            "code": code,
            **settings,
            "code_sha256": sha256,
            "last_modified": lambda_timestamp(time.time_ns()),
        }
        write_manifest(manifest_path, raw)  # the runtime never reads a half-written manifest
        return number


def _not_code(root: Path, excluded: frozenset[str]) -> Callable[[str, list[str]], set[str]]:
    """A copytree filter leaving out what is not the version's code: the manifest, versions, caches, hidden files."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        at_root = Path(directory) == root
        return {
            name for name in names if name.startswith(".") or name == "__pycache__" or (at_root and name in excluded)
        }

    return ignore


def _logging_config(version: FunctionVersion) -> dict[str, str]:
    config = {"log_format": version.log_format}
    if version.application_log_level is not None:
        config["application_log_level"] = version.application_log_level
    if version.system_log_level is not None:
        config["system_log_level"] = version.system_log_level
    return config
