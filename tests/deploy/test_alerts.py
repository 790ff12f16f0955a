"""deploy/prometheus/alerts.yaml: structure, metric and label names, runbooks, promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT
from tests.fixtures import unavailable

RULES = DEPLOY / "prometheus" / "alerts.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"

# The metrics Ciclo exports, with their labels (counters without the _total Prometheus adds are
# never queried). Histograms also expose _bucket (with le), _sum and _count.
METRICS: dict[str, set[str]] = {
    "ciclo_consumer_records_total": {"group", "outcome"},
    "ciclo_dead_letters_total": {"group"},
    "ciclo_outbox_published_total": {"outbox"},
    "ciclo_sends_total": {"provider", "outcome"},
    "ciclo_dispatch_ambiguous_total": {"provider"},
    "ciclo_consumer_lag": {"group", "topic"},
    "ciclo_outbox_depth": {"outbox"},
    "ciclo_http_requests_total": {"method", "route", "status"},
    "ciclo_webhook_deliveries_total": {"source", "outcome"},
    "ciclo_journey_timers_due": set(),
    "ciclo_journey_timers_fired_total": set(),
    "up": set(),
}
HISTOGRAMS: dict[str, set[str]] = {
    "ciclo_consumer_batch_seconds": {"group"},
    "ciclo_http_request_seconds": {"method", "route"},
    "ciclo_journey_timer_lateness_seconds": set(),
}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
LABEL_VALUES = {
    ("ciclo_sends_total", "outcome"): {"sent", "failed", "skipped", "ambiguous"},
    ("ciclo_consumer_records_total", "outcome"): {"ok", "dead_letter"},
    ("ciclo_webhook_deliveries_total", "outcome"): {
        "accepted",
        "duplicate",
        "unknown_topic",
        "skipped",
        "ping",
        "unauthorized",
        "invalid",
    },
}
REQUIRED_ALERTS = {
    "CicloTargetDown",
    "CicloConsumerLagGrowing",
    "CicloConsumerStalled",
    "CicloDeadLetters",
    "CicloProviderErrorRatioHigh",
    "CicloProviderDown",
    "CicloAmbiguousSends",
    "CicloOutboxNotDraining",
    "CicloIngest5xxRatioHigh",
    "CicloHighLatencyP99",
    "CicloTimersBehind",
}
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "inf",
    "nan",
}


def known_series() -> dict[str, set[str]]:
    series = dict(METRICS)
    for name, labels in HISTOGRAMS.items():
        series[f"{name}_bucket"] = labels | {"le"}
        series[f"{name}_sum"] = labels
        series[f"{name}_count"] = labels
    return {name: labels | TARGET_LABELS for name, labels in series.items()}


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", match.group()):
            continue
        names.add(match.group())
    return names


def grouping_labels(expr: str) -> set[str]:
    labels = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    return labels


def matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, operator, value) for every label matcher."""
    found = []
    for metric, body in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", expr):
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', body):
            found.append((metric, label, op, value))
    return found


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    found = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        assert group["name"].startswith("ciclo.")
        found += group["rules"]
    return found


def test_every_rule_is_a_complete_alert(rules: list[dict[str, Any]]) -> None:
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED_ALERTS
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description", "runbook"} <= set(rule["annotations"])
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_exprs_use_only_metrics_and_labels_that_exist(rules: list[dict[str, Any]]) -> None:
    series = known_series()
    for rule in rules:
        expr = rule["expr"]
        used = metric_names(expr)
        assert used, f"{rule['alert']}: no metric found in {expr!r}"
        unknown = used - set(series)
        assert not unknown, f"{rule['alert']}: unknown metrics {unknown}"
        labels = set().union(*(series[m] for m in used))
        assert grouping_labels(expr) <= labels, f"{rule['alert']}: grouping by a missing label"
        for metric, label, op, value in matchers(expr):
            assert label in series[metric], f"{rule['alert']}: {metric} has no label {label}"
            allowed = LABEL_VALUES.get((metric, label))
            if allowed and op in ("=", "=~"):
                assert set(value.split("|")) <= allowed, f"{rule['alert']}: {metric}{{{label}}}"


def test_the_checks_above_can_fail() -> None:
    assert metric_names('sum by (group) (rate(ciclo_consumer_lagg{group="x"}[5m])) > 0') == {
        "ciclo_consumer_lagg"
    }
    assert grouping_labels("sum by (provider, le) (x)") == {"provider", "le"}
    assert matchers('ciclo_sends_total{outcome=~"sent|failed"}') == [
        ("ciclo_sends_total", "outcome", "=~", "sent|failed")
    ]


def test_each_runbook_is_a_section_of_the_operations_guide(rules: list[dict[str, Any]]) -> None:
    headings = re.findall(r"^#{2,4} (.+)$", OPERATIONS.read_text(), flags=re.MULTILINE)
    anchors = {github_anchor(h) for h in headings}
    for rule in rules:
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == "docs/operations.md"
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {path}"


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        unavailable("promtool (Debian package prometheus)")
        raise AssertionError("unreachable")
    return binary


def test_promtool_check_rules(rules: list[dict[str, Any]]) -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_promtool_unit_tests_fire_the_alerts() -> None:
    """deploy/prometheus/alerts_test.yaml feeds series and expects exactly these alerts."""
    done = subprocess.run(
        [_promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested >= REQUIRED_ALERTS


def test_the_prometheus_rule_recipe_in_the_guide_wraps_the_file() -> None:
    """docs/operations.md indents alerts.yaml under `spec:` with sed; the result must parse."""
    recipe = re.search(r"\{ printf '(.*?)'\n\s+sed 's/\^/  /' (\S+);", OPERATIONS.read_text())
    assert recipe, "the PrometheusRule recipe is gone from docs/operations.md"
    header = recipe.group(1).encode().decode("unicode_escape")
    assert (ROOT / recipe.group(2)) == RULES
    body = "".join(f"  {line}" for line in RULES.read_text().splitlines(keepends=True))
    rule = yaml.safe_load(header + body)
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
