"""The venue's alert rules (`charts/exchange-operator/files/alerts.yaml`, the one copy) with
Debian's promtool: `check rules`, and `test rules` on `observability/alerts.test.yaml`, whose
cases give every alert series that fire it and series that must not. Beside them, pure checks
that each alert carries what the person on call needs, and that every metric a rule or a
golden-signal query names is one the project's processes export."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from e2e.env import paths, prometheus
from e2e.env.prometheus import GOLDEN_SIGNALS, RULE_TESTS, RULES, promtool

RUNBOOK = "https://github.com/exchange-platform/exchange-platform/blob/main/README.md#runbook-"
EXPORTING_MODULES = (
    "workloads.ledger.metrics",
    "workloads.matcher.__main__",
    "workloads.matcher.sequencer",
    "workloads.matcher.outbox",
    "workloads.matcher.archive",
    "workloads.gateway.observe",
    "workloads.gateway.errors",
    "workloads.gateway.feed",
    "workloads.gateway.hub",
    "workloads.history.writer",
    "exchange_operator.metrics",
)
"""The modules that define the metrics the rules and the golden signals use."""
OWN_METRIC = re.compile(
    r"\b(?:gateway|ledger|matcher|reconciliation|invariant|history|exchange_operator)_[a-z0-9_]+"
)


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def golden_signals() -> list[dict[str, Any]]:
    return list(yaml.safe_load(GOLDEN_SIGNALS.read_text())["signals"])


def needs_promtool() -> None:
    if not prometheus.PROMTOOL.exists():
        pytest.fail("promtool missing: run `make setup` (part observe)", pytrace=False)


@pytest.mark.integration
def test_the_rules_pass_promtool_check() -> None:
    needs_promtool()
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


@pytest.mark.integration
def test_the_rules_pass_their_promtool_unit_tests() -> None:
    needs_promtool()
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.integration
def test_the_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The tests are not vacuous: the lag warning moved from half the grace to the whole
    grace fails them."""
    needs_promtool()
    text = RULES.read_text()
    assert text.count("(0.5 * reconciliation_lag_grace_seconds)") == 1
    (tmp_path / "alerts.yaml").write_text(
        text.replace("(0.5 * reconciliation_lag_grace_seconds)", "reconciliation_lag_grace_seconds")
    )
    cases = yaml.safe_load(RULE_TESTS.read_text())
    cases["rule_files"] = ["alerts.yaml"]
    (tmp_path / "alerts.test.yaml").write_text(yaml.safe_dump(cases))
    tested = promtool("test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert tested.returncode == 1
    assert "alertname: ReconciliationLag" in tested.stdout + tested.stderr


@pytest.mark.integration
def test_the_golden_signal_queries_parse(tmp_path: Path) -> None:
    needs_promtool()
    recording = [
        {"record": f"golden:{re.sub(r'[^a-z0-9]+', '_', signal['name'])}", "expr": signal["expr"]}
        for signal in golden_signals()
    ]
    path = tmp_path / "golden.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "golden", "rules": recording}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.unit
def test_every_alert_has_a_severity_a_for_a_summary_a_description_and_its_runbook() -> None:
    for rule in rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == RUNBOOK + name.lower(), name


@pytest.mark.unit
def test_every_alert_has_series_that_fire_it_and_an_evaluation_where_it_does_not() -> None:
    """promtool compares the whole list of firing alerts at each evaluation, so the series of
    a case that are not expected to fire are checked not to."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - fires == set()
    assert names - quiet == set()


@pytest.mark.unit
def test_every_metric_the_rules_and_the_golden_signals_name_is_exported() -> None:
    for module in EXPORTING_MODULES:
        importlib.import_module(module)
    exported: set[str] = set()
    for family in REGISTRY.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "summary": ("_count", "_sum"),
        }.get(family.type, ("",))
        exported.update(family.name + suffix for suffix in suffixes)
    expressions = [rule["expr"] for rule in rules()] + [s["expr"] for s in golden_signals()]
    named = {name for expr in expressions for name in OWN_METRIC.findall(expr)}
    assert named - exported == set()
    assert {"reconciliation_latched", "matcher_leader", "gateway_feed_lag_records"} <= named


@pytest.mark.unit
def test_the_readme_has_every_alerts_runbook_and_every_golden_signal() -> None:
    """The runbook links resolve (GitHub's heading anchors) and the README's queries are the
    ones the e2e test runs, not a copy that drifts."""
    readme = (paths.REPO_ROOT / "README.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", readme, re.MULTILINE)
    }
    for rule in rules():
        assert f"runbook-{rule['alert'].lower()}" in anchors, rule["alert"]
    flat = " ".join(readme.split())
    for signal in golden_signals():
        assert " ".join(signal["expr"].split()) in flat, signal["name"]
