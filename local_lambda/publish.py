"""Publishing: copy a function's current code into its next numbered version and record it in the manifest."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_lambda.code import code_sha256
from local_lambda.manifest import MANIFEST_FILE, VERSIONS_DIR, FunctionVersion, ManifestError
from local_lambda.registry import FunctionRegistry, lambda_timestamp


def publish_version(functions_dir: Path | str, function_name: str, description: str | None = None) -> str:
    """Publish $LATEST as the next version (or return the last one, unchanged since); the version number."""
    registry = FunctionRegistry(Path(functions_dir).resolve(), region="us-east-1")
    manifest = registry.load(function_name)  # validates the manifest before anything is copied
    manifest_path = manifest.directory / MANIFEST_FILE
    raw: dict[str, Any] = json.loads(manifest_path.read_bytes())
    latest = manifest.latest
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
        # As Lambda does: no new version when neither code nor configuration changed since the last one.
        last = max(versions, key=int)
        entry = versions[last]
        if entry.get("code_sha256") == sha256 and all(entry.get(key) == value for key, value in settings.items()):
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
    staged_manifest = manifest_path.with_name(f".{MANIFEST_FILE}.publishing")
    staged_manifest.write_text(json.dumps(raw, indent=2) + "\n")
    os.replace(staged_manifest, manifest_path)  # the runtime never reads a half-written manifest
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
