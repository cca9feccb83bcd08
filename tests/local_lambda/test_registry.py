"""The functions folder as the registry reads it: manifests, their mistakes, and function names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from local_lambda import FunctionRegistry, ManifestError
from local_lambda.errors import InvalidParameterValue, ResourceNotFound
from local_lambda.registry import split_function_name

HANDLER = "def lambda_handler(event, context):\n    return event\n"


def _write(functions_dir: Path, name: str, manifest: Any) -> Path:
    directory = functions_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text(HANDLER)
    (directory / "function.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return directory


def test_defaults_apply_to_an_empty_manifest(functions_dir: Path) -> None:
    _write(functions_dir, "plain", {})

    manifest = FunctionRegistry(functions_dir, "us-east-1").load("plain")

    latest = manifest.latest
    assert (latest.handler, latest.timeout, latest.memory_size, latest.environment) == (
        "handler.lambda_handler",
        3,
        128,
        (),
    )
    assert latest.runtime.startswith("python3.")
    assert manifest.reserved_concurrency is None  # unreserved: the runtime-wide pool, as on Lambda
    assert (manifest.maximum_retry_attempts, manifest.maximum_event_age_seconds) == (2, 21600)
    assert (manifest.versions, manifest.aliases) == ({}, {})


@pytest.mark.parametrize(
    ("manifest", "complaint"),
    [
        ("{not json", "not valid JSON"),
        ([], "must hold a JSON object"),
        ({"timout": 3}, "unknown keys ['timout']"),
        ({"timeout": 0}, "'timeout' must be a whole number of seconds from 1 to 900"),
        ({"timeout": True}, "'timeout'"),
        ({"memory_size": 64}, "'memory_size' must be a whole number of MB from 128 to 10240"),
        ({"runtime": "nodejs20.x"}, "'runtime' must be a Python runtime"),
        ({"handler": "lambda_handler"}, "'handler' must look like module.function"),
        ({"environment": {"A": 1}}, "'environment' must be an object of NAME -> string value"),
        ({"concurrency": -1}, "'concurrency' (the function's reserved concurrency) must be a whole number from 0"),
        ({"concurrency": 1001}, "from 0 to 1000, or left out for none"),
        ({"event_invoke_config": {"retries": 1}}, "'event_invoke_config' must be an object with keys among"),
        ({"event_invoke_config": {"maximum_retry_attempts": 3}}, "'maximum_retry_attempts' must be 0, 1 or 2"),
        ({"event_invoke_config": {"maximum_event_age_in_seconds": 59}}, "from 60 to 21600"),
        ({"event_invoke_config": {"maximum_event_age_in_seconds": 21601}}, "from 60 to 21600"),
        ({"aliases": {"live": {"version": "$LATEST", "note": "x"}}}, "alias 'live' must be a version, or an object"),
        ({"aliases": {"live": "3"}}, "alias 'live' points at '3', which is not a version"),
        ({"aliases": {"123": "$LATEST"}}, "alias '123' must be letters"),
        ({"versions": {"one": {}}}, "version numbers are whole numbers"),
        ({"versions": {"1": {"code": "../elsewhere"}}}, "'code' must name a folder inside"),
        ({"versions": {"1": {}}}, "its code folder"),
        ({"aliases": {"live": ["1"]}}, "alias 'live' points at ['1'], which is not a version"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ],
)
def test_manifest_mistakes_are_named(functions_dir: Path, manifest: Any, complaint: str) -> None:
    _write(functions_dir, "mistaken", manifest)

    with pytest.raises(ManifestError) as error:
        FunctionRegistry(functions_dir, "us-east-1").load("mistaken")

    assert complaint in error.value.message
    assert "mistaken/function.json" in error.value.message


def test_a_manifest_edit_is_read_again(functions_dir: Path) -> None:
    directory = _write(functions_dir, "changing", {"timeout": 3})
    registry = FunctionRegistry(functions_dir, "us-east-1")
    assert registry.load("changing").latest.timeout == 3

    (directory / "function.json").write_text(json.dumps({"timeout": 10, "description": "longer"}))

    assert registry.load("changing").latest.timeout == 10


def test_names_that_are_not_functions_are_not_found(functions_dir: Path) -> None:
    registry = FunctionRegistry(functions_dir, "us-east-1")
    (functions_dir / "no-manifest").mkdir()

    for name in ("missing", "no-manifest", "..", "a/b", ""):
        with pytest.raises(ResourceNotFound):
            registry.load(name)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("echo", ("echo", None)),
        ("echo:live", ("echo", "live")),
        ("123456789012:function:echo", ("echo", None)),
        ("123456789012:function:echo:3", ("echo", "3")),
        ("arn:aws:lambda:eu-west-1:123456789012:function:echo", ("echo", None)),
        ("arn:aws:lambda:eu-west-1:123456789012:function:echo:$LATEST", ("echo", "$LATEST")),
    ],
)
def test_function_names_arns_and_qualifiers(raw: str, expected: tuple[str, str | None]) -> None:
    assert split_function_name(raw) == expected


@pytest.mark.parametrize("raw", ["arn:aws:lambda:function", "a:b:c", "arn:aws:s3:::bucket"])
def test_malformed_names_are_refused(raw: str) -> None:
    with pytest.raises(InvalidParameterValue):
        split_function_name(raw)


def _symlink_layouts(functions_dir: Path) -> dict[str, Path]:
    """Functions reaching outside the functions folder through a symbolic link, each in its own way."""
    outside = functions_dir.parent / "outside"
    outside.mkdir()
    (outside / "function.json").write_text("{}")
    (outside / "handler.py").write_text("def lambda_handler(event, context):\n    return 'outside'\n")
    (outside / "helpers").mkdir()
    (functions_dir / "linked-folder").symlink_to(outside, target_is_directory=True)
    (_write(functions_dir, "linked-manifest", {}) / "function.json").unlink()
    (functions_dir / "linked-manifest" / "function.json").symlink_to(outside / "function.json")
    (_write(functions_dir, "linked-handler", {}) / "handler.py").unlink()
    (functions_dir / "linked-handler" / "handler.py").symlink_to(outside / "handler.py")
    (_write(functions_dir, "linked-package", {}) / "helpers").symlink_to(outside / "helpers")
    version = _write(functions_dir, "linked-version", {"versions": {"1": {}}}) / "versions" / "1"
    version.mkdir(parents=True)
    (version / "handler.py").symlink_to(outside / "handler.py")
    return {path.name: path for path in functions_dir.iterdir()}


@pytest.mark.parametrize(
    ("name", "qualifier"),
    [
        ("linked-folder", None),
        ("linked-manifest", None),
        ("linked-handler", None),
        ("linked-package", None),
        ("linked-version", "1"),
    ],
)
def test_nothing_outside_the_functions_folder_is_loaded(functions_dir: Path, name: str, qualifier: str | None) -> None:
    _symlink_layouts(functions_dir)
    registry = FunctionRegistry(functions_dir, "us-east-1")

    with pytest.raises(ManifestError) as error:
        registry.configuration(registry.resolve(name, qualifier))

    assert "outside the functions folder" in error.value.message
    listed = {(f.name, f.version) for f in registry.list_functions(all_versions=True).configurations}
    assert listed == {("linked-version", "$LATEST")}  # the one function, and version, that stays inside


def test_links_within_the_functions_folder_are_followed(functions_dir: Path) -> None:
    _write(functions_dir, "real", {"description": "the real one"})
    (functions_dir / "shared").mkdir()
    (functions_dir / "shared" / "common.py").write_text("VALUE = 1\n")
    (functions_dir / "real" / "common.py").symlink_to(functions_dir / "shared" / "common.py")
    (functions_dir / "other-name").symlink_to(functions_dir / "real", target_is_directory=True)
    registry = FunctionRegistry(functions_dir, "us-east-1")

    configuration = registry.configuration(registry.resolve("other-name"))

    assert configuration.description == "the real one"
    assert [f.name for f in registry.list_functions().configurations] == ["other-name", "real"]


def test_a_symbolic_link_loop_in_the_code_is_skipped(functions_dir: Path) -> None:
    directory = _write(functions_dir, "loopy", {})
    (directory / "loop").symlink_to(directory / "loop")
    registry = FunctionRegistry(functions_dir, "us-east-1")

    configuration = registry.configuration(registry.resolve("loopy"))

    assert configuration.code_size == len(HANDLER)
