"""The Grafana dashboard shipped in deploy/grafana/: every query names only metrics the module exports."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from config import PROJECT_ROOT
from services.metrics import Metrics

DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "lambda-action.json"
_METRIC = re.compile(r"\blambda_action_[a-z_]+")


def _exported_names() -> set[str]:
    metrics = Metrics()
    # Every labelled metric once, so its samples (with their suffixes) appear in the exposition.
    metrics.invocation_ended("waddlebot-echo", "RequestResponse", "rest", "success", 0.01)
    metrics.retries.labels("TooManyRequestsException").inc()
    metrics.refused.labels("Throttled").inc()
    metrics.auth_failures.labels("bad credentials").inc()
    text = metrics.render().decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_query_names_an_exported_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exported = _exported_names()

    named = {name for expression in expressions for name in _METRIC.findall(expression)}
    assert named, "the dashboard queries no metric of the module"
    assert named <= exported, sorted(named - exported)
    # And each metric the module exports is on the dashboard (a new metric needs a panel).
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", name) for name in exported}
    assert families <= {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in named}, sorted(families)
