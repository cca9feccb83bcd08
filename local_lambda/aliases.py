"""Aliases: GetAlias, ListAliases, CreateAlias and UpdateAlias over the `aliases` of a function's manifest.

An alias is a line of `function.json` (`"live": "1"`, or `"live": {"version": "1", "description": "..."}` when it
has a description), so a change made through the API shows in a diff of the functions folder like a hand edit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from local_lambda.errors import InvalidParameterValue, PreconditionFailed, ResourceConflict, ResourceNotFound
from local_lambda.manifest import (
    ALIAS_NAME,
    LATEST,
    MANIFEST_FILE,
    FunctionManifest,
    manifest_lock,
    read_manifest_object,
    write_manifest,
)
from local_lambda.registry import MAX_LIST_PAGE, FunctionRegistry, function_arn, unqualified_name

MAX_DESCRIPTION_CHARACTERS = 256


@dataclass(frozen=True)
class Alias:
    """What Lambda reports of an alias (AliasConfiguration)."""

    name: str
    arn: str
    function_version: str
    description: str
    revision_id: str


@dataclass(frozen=True)
class AliasListing:
    """One page of ListAliases, and the marker of the next page (None on the last)."""

    aliases: list[Alias]
    next_marker: str | None


def get_alias(registry: FunctionRegistry, function_name: str, alias_name: str) -> Alias:
    """An alias of a function; ResourceNotFound when it has none of that name."""
    manifest = registry.load(unqualified_name(function_name))
    if alias_name not in manifest.aliases:
        raise ResourceNotFound(f"Alias not found: {function_arn(registry.region, manifest.name, alias_name)}")
    return _alias(registry, manifest, alias_name)


def list_aliases(
    registry: FunctionRegistry,
    function_name: str,
    function_version: str | None = None,
    max_items: int | None = None,
    marker: str | None = None,
) -> AliasListing:
    """One page of a function's aliases sorted by name, only those naming `function_version` when given."""
    manifest = registry.load(unqualified_name(function_name))
    after = _decode_marker(marker) if marker else None
    names = sorted(
        name
        for name, target in manifest.aliases.items()
        if (function_version is None or target == function_version) and (after is None or name > after)
    )
    page = names[: MAX_LIST_PAGE if max_items is None else min(max_items, MAX_LIST_PAGE)]
    more = len(names) > len(page)
    return AliasListing(
        [_alias(registry, manifest, name) for name in page], _encode_marker(page[-1]) if more and page else None
    )


def create_alias(
    registry: FunctionRegistry, function_name: str, alias_name: str, function_version: str, description: str = ""
) -> Alias:
    """Add an alias to the function's manifest; ResourceConflict when the alias exists."""
    _check_alias_name(alias_name)
    _check_description(description)
    name = unqualified_name(function_name)
    directory = registry.load(name).directory
    with manifest_lock(directory):
        manifest = registry.load(name)
        if alias_name in manifest.aliases:
            raise ResourceConflict(f"Alias already exists: {function_arn(registry.region, name, alias_name)}")
        _check_target(registry, manifest, function_version)
        _write_alias(manifest, alias_name, function_version, description)
        return _alias(registry, registry.load(name), alias_name)


def update_alias(
    registry: FunctionRegistry,
    function_name: str,
    alias_name: str,
    function_version: str | None = None,
    description: str | None = None,
    revision_id: str | None = None,
) -> Alias:
    """Point an alias at another version or change its description; what is not given stays as it was."""
    if description is not None:
        _check_description(description)
    name = unqualified_name(function_name)
    directory = registry.load(name).directory
    with manifest_lock(directory):
        current = get_alias(registry, name, alias_name)
        if revision_id is not None and revision_id != current.revision_id:
            raise PreconditionFailed(
                "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API "
                "to retrieve the latest Revision Id"
            )
        manifest = registry.load(name)
        target = current.function_version if function_version is None else function_version
        _check_target(registry, manifest, target)
        _write_alias(manifest, alias_name, target, current.description if description is None else description)
        return _alias(registry, registry.load(name), alias_name)


def render_alias(alias: Alias) -> dict[str, Any]:
    """An alias in Lambda's JSON (AliasConfiguration)."""
    return {
        "AliasArn": alias.arn,
        "Name": alias.name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    }


def _alias(registry: FunctionRegistry, manifest: FunctionManifest, alias_name: str) -> Alias:
    target = manifest.aliases[alias_name]
    description = manifest.alias_descriptions.get(alias_name, "")
    # Changes whenever the alias does, and only then, as Lambda's RevisionId for an alias.
    revision = hashlib.sha256(f"{manifest.name}/{alias_name}/{target}/{description}".encode()).digest()[:16]
    return Alias(
        name=alias_name,
        arn=function_arn(registry.region, manifest.name, alias_name),
        function_version=target,
        description=description,
        revision_id=str(uuid.UUID(bytes=revision)),
    )


def _write_alias(manifest: FunctionManifest, alias_name: str, target: str, description: str) -> None:
    path = manifest.directory / MANIFEST_FILE
    raw = read_manifest_object(path)
    aliases = raw.setdefault("aliases", {})
    # The short form when there is no description, so the manifest reads as a hand-written one would.
    aliases[alias_name] = {"version": target, "description": description} if description else target
    write_manifest(path, raw)


def _check_alias_name(alias_name: str) -> None:
    if not ALIAS_NAME.fullmatch(alias_name):
        raise InvalidParameterValue(
            f"1 validation error detected: Value '{alias_name}' at 'name' failed to satisfy constraint: an alias "
            "name is 1 to 128 letters, digits, - or _, and not only digits"
        )


def _check_description(description: str) -> None:
    if len(description) > MAX_DESCRIPTION_CHARACTERS:
        raise InvalidParameterValue(
            f"1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have "
            f"length less than or equal to {MAX_DESCRIPTION_CHARACTERS}"
        )


def _check_target(registry: FunctionRegistry, manifest: FunctionManifest, function_version: str) -> None:
    """An alias names $LATEST or a published version; Lambda answers ResourceNotFound for any other."""
    if function_version != LATEST and function_version not in manifest.versions:
        raise ResourceNotFound(f"Function not found: {function_arn(registry.region, manifest.name, function_version)}")


def _encode_marker(alias_name: str) -> str:
    return base64.urlsafe_b64encode(alias_name.encode()).decode()


def _decode_marker(marker: str) -> str:
    try:
        return base64.urlsafe_b64decode(marker.encode()).decode()
    except (binascii.Error, ValueError):
        raise InvalidParameterValue(f"Invalid marker: {marker[:100]}") from None
