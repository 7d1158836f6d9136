"""The alert rules and the Grafana dashboard in deploy/: the rules pass `promtool check
rules` and their unit tests (`promtool test rules`), every dashboard query is valid
PromQL, and both name only metrics the service exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
import yaml

from inventory.ops import metrics

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "inventory.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install prometheus; .ci/run does)",
)
_SAMPLE_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def promtool(*args: str) -> str:
    """Run promtool; its output, asserting success."""
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], capture_output=True, timeout=120, check=False, cwd=RULES.parent
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output
    return output


def rule_expressions() -> list[str]:
    """Every alert expression in alerts.yml."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    """Every query of the dashboard, with Grafana's $__rate_interval made concrete."""
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    return [
        target["expr"].replace("$__rate_interval", "5m")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def family_of(name: str) -> str | None:
    """The exported family a sample name in a query belongs to (None: unknown)."""
    families = set().union(*metrics.FAMILIES.values())
    if name in families:
        return name
    for suffix in _SAMPLE_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in families:
            return name.removesuffix(suffix)
    return None


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    """alerts.yml is valid Prometheus rule syntax."""
    assert "SUCCESS" in promtool("check", "rules", str(RULES))


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    """The rules fire (and stay quiet) exactly as alerts_test.yml expects."""
    assert "SUCCESS" in promtool("test", "rules", str(RULE_TESTS))


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every dashboard query parses (checked as recording rules by promtool)."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_expressions())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"  # JSON is YAML too
    path.write_bytes(orjson.dumps(rules))
    assert "SUCCESS" in promtool("check", "rules", str(path))


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    """Every inventory_* name in the rules and the dashboard is a metric the service
    exports (a renamed metric cannot silently blank a panel or an alert)."""
    expressions = rule_expressions() + dashboard_expressions()
    names = {n for expr in expressions for n in re.findall(r"\binventory_[a-z_]+", expr)}
    assert names
    unknown = {name for name in names if family_of(name) is None}
    assert not unknown, unknown


def test_dashboard_covers_every_family() -> None:
    """Each exported family appears on the dashboard or in an alert (or is listed as
    detail-only here)."""
    detail_only = {
        "inventory_tags",
        "inventory_sampler_failures",
        "inventory_sampler_last_success_timestamp_seconds",
        "inventory_expirer_sweeps",
        "inventory_expirer_changes",
        "inventory_events",
        "inventory_outbox_streams",
        "inventory_persist_batches",
        "inventory_persist_autoclaimed",
        "inventory_persist_last_commit_timestamp_seconds",
        "inventory_his_circuit_transitions",
        "inventory_reconciliation_last_run_timestamp_seconds",
        "inventory_check_lagging_tags",
        "inventory_check_fenced_tags",
        "inventory_check_last_run_timestamp_seconds",
    }
    expressions = rule_expressions() + dashboard_expressions()
    used = {family_of(n) for expr in expressions for n in re.findall(r"\binventory_[a-z_]+", expr)}
    missing = set().union(*metrics.FAMILIES.values()) - used - detail_only
    assert not missing, missing
