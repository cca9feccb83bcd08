"""The Kubernetes manifests as rendered: valid for a current Kubernetes, strictly, and saying what the module needs."""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from config import PROJECT_ROOT, load_settings

sys.path.insert(0, str(PROJECT_ROOT / "deploy"))

from check_manifests import CheckFailed, lint_dockerfile, overlay_names, render, validate

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (Debian's kubernetes-client)")


def _rendered(overlay: str) -> dict[str, dict[str, Any]]:
    return {document["kind"]: document for document in render(overlay)}


def _container(documents: dict[str, dict[str, Any]], kind: str = "Deployment") -> dict[str, Any]:
    [container] = documents[kind]["spec"]["template"]["spec"]["containers"]
    return container


def _settings(documents: dict[str, dict[str, Any]]) -> dict[str, str]:
    return documents["ConfigMap"]["data"]


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_every_document_is_valid_kubernetes_strictly(overlay: str):
    assert overlay in overlay_names()
    validate(overlay, render(overlay))


def test_strict_validation_refuses_an_unknown_field():
    documents = render("production")
    broken = copy.deepcopy(next(document for document in documents if document["kind"] == "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}

    with pytest.raises(CheckFailed, match="livenessProbes"):
        validate("production", [broken])


def test_strict_validation_refuses_an_unknown_kind():
    with pytest.raises(CheckFailed, match="Couldn't find schema"):
        validate("production", [{"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}}])


def test_rendering_without_kubectl_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", "")

    with pytest.raises(CheckFailed, match="kubernetes-client"):
        render("dev")


def test_production_runs_three_replicas_on_aws_with_its_database_from_a_secret():
    documents = _rendered("production")
    environment = {item["name"]: item for item in _container(documents)["env"]}

    assert documents["Deployment"]["spec"]["replicas"] == 3
    assert documents["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3
    assert _settings(documents)["LAMBDA_BACKEND"] == "aws"
    assert environment["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "lambda-action-secrets"
    assert environment["MODULE_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "module-secret-key"
    assert environment["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "eks.amazonaws.com/role-arn" in documents["ServiceAccount"]["metadata"]["annotations"]
    assert "DATABASE_URL" not in _settings(documents)
    assert documents["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == "lambda-action"


def test_the_init_db_job_needs_only_the_secret_so_it_can_run_before_the_release():
    documents = _rendered("production")
    job = documents["Job"]
    container = _container(documents, "Job")
    environment = {item["name"]: item for item in container["env"]}
    secret_keys = {item["valueFrom"]["secretKeyRef"]["key"] for item in environment.values() if "valueFrom" in item}

    assert container["command"] == ["python", "app.py", "init-db"]
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    # A pre-sync hook runs before the ConfigMap and the ServiceAccount exist: the Job must not wait on them.
    assert "envFrom" not in container
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]
    assert secret_keys == {"module-secret-key", "database-url"}
    assert environment["ENVIRONMENT"]["value"] == "production"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert Path(environment["LOG_DIR"]["value"]).is_relative_to(
        next(mount["mountPath"] for mount in container["volumeMounts"])
    )


def test_dev_runs_one_replica_on_the_embedded_runtime_with_sqlite_on_its_volume():
    documents = _rendered("dev")
    settings = _settings(documents)
    mounts = {mount["mountPath"] for mount in _container(documents)["volumeMounts"]}

    assert documents["Deployment"]["spec"]["replicas"] == 1
    assert settings["LAMBDA_BACKEND"] == "local"
    assert settings["DATABASE_URL"].startswith("sqlite:////var/lib/lambda-action/")
    assert "/var/lib/lambda-action" in mounts
    assert not {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"} & set(documents)
    # The settings load as the module loads them.
    assert load_settings(settings).lambda_backend == "local"


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_the_pod_is_hardened_probed_and_drains_within_its_grace(overlay: str):
    documents = _rendered(overlay)
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    container = _container(documents)
    settings = load_settings({**_settings(documents), "MODULE_SECRET_KEY": "k" * 64, "DATABASE_URL": ""})
    [sleep, pause] = container["lifecycle"]["preStop"]["exec"]["command"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    liveness = container["livenessProbe"]["httpGet"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert sleep == "sleep"
    assert pod["terminationGracePeriodSeconds"] > (
        float(pause) + settings.shutdown_delay_seconds + settings.shutdown_grace_seconds
    )
    assert container["readinessProbe"]["grpc"] == {"port": settings.grpc_port, "service": "lambda_action.LambdaAction"}
    assert settings.grpc_port == 50060
    assert liveness["path"] in ("/health", "/health/live")
    assert ports.get(liveness["port"], liveness["port"]) == settings.rest_port == 8080
    assert set(ports.values()) == {settings.rest_port, settings.grpc_port}
    for amount in ("requests", "limits"):
        assert set(container["resources"][amount]) == {"cpu", "memory"}
    # Only the journal's volume and /tmp are writable, and the journal is where LOG_SPOOL_DIR points.
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts == {"/var/lib/lambda-action", "/tmp"}
    assert Path(settings.log_spool_dir).is_relative_to("/var/lib/lambda-action")
    assert Path(settings.log_dir).is_relative_to("/tmp")
    anti_affinity = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti_affinity[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_the_service_and_the_network_policy_open_both_ports():
    documents = _rendered("production")
    service_ports = {port["name"]: port["port"] for port in documents["Service"]["spec"]["ports"]}
    policy = documents["NetworkPolicy"]["spec"]
    ingress_ports = {port["port"] for rule in policy["ingress"] for port in rule["ports"]}
    egress_ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}

    assert service_ports == {"rest": 8080, "grpc": 50060}
    assert ingress_ports == {8080, 50060}
    assert egress_ports == {53, 443, 5432}


def test_the_dockerfile_passes_hadolint():
    lint_dockerfile()
