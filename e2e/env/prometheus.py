"""A Prometheus from Debian's `prometheus` package (2.42), run as a plain process (never as
its system service) with a configuration written here: the scrape jobs and the venue's alert
rules.

`make up` and the e2e tests start one beside the venue. `/-/ready` answers in about 0.3 s,
but a target's first sample comes 5-6 s later (target discovery), so callers poll
`targets()` and `alerts()` instead of sleeping.

The rules are the chart's file (`RULES`): the one copy that the PrometheusRule renders too.
The Prometheus operator's CRDs (for the chart's PodMonitor and PrometheusRule) come from its
Go module, pinned in versions.py, and are cached beside the other Go parts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.env import apt, paths, versions
from e2e.env.process import ManagedProcess, free_port

DEBIAN_PACKAGES = ("prometheus",)
SERVER = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
RULES = paths.REPO_ROOT / "charts" / "exchange-operator" / "files" / "alerts.yaml"
"""The venue's alert rules (the chart renders the same file into its PrometheusRule)."""
RULE_TESTS = paths.REPO_ROOT / "observability" / "alerts.test.yaml"
GOLDEN_SIGNALS = paths.REPO_ROOT / "observability" / "golden-signals.yaml"
OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
OPERATOR_CRDS = ("podmonitors", "prometheusrules", "servicemonitors")


class PrometheusError(RuntimeError):
    """Prometheus answered an API call with an error (a bad query, for example)."""


def ensure_installed() -> None:
    apt.ensure(DEBIAN_PACKAGES)


def version() -> str:
    done = subprocess.run([str(SERVER), "--version"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return (done.stdout or done.stderr or "prometheus ?").strip().splitlines()[0]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`promtool <args>`, not checked: the caller reads the exit code and the output."""
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, check=False,
                          cwd=cwd, timeout=120)  # fmt: skip


def operator_crds() -> Path:
    """The Prometheus operator's CRDs (PodMonitor, PrometheusRule, ServiceMonitor) at the
    pinned version: read from its module (`go mod download`, the module proxy) once, then
    from the cache. Returns the directory that holds them."""
    target = paths.cache_dir() / "crds" / f"prometheus-operator-{versions.PROMETHEUS_OPERATOR}"
    names = [f"monitoring.coreos.com_{kind}.yaml" for kind in OPERATOR_CRDS]
    if all((target / name).exists() for name in names):
        return target
    found = subprocess.run(
        ["go", "mod", "download", "-json", f"{OPERATOR_MODULE}@{versions.PROMETHEUS_OPERATOR}"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    source = Path(json.loads(found.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(source / name, staging / name)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


@dataclass(frozen=True)
class ScrapeJob:
    """Static targets of one process kind; `name` is the `job` label the rules match on, and
    `labels` are added to every series (a matcher's `market`)."""

    name: str
    targets: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    path: str = "/metrics"

    def config(self) -> dict[str, Any]:
        static: dict[str, Any] = {"targets": list(self.targets)}
        if self.labels:
            static["labels"] = dict(self.labels)
        return {"job_name": self.name, "metrics_path": self.path, "static_configs": [static]}


SCRAPED_PORTS = ("http", "metrics")
"""Container ports the chart's PodMonitor scrapes: the workloads' `http`, the operator's
`metrics`."""


def pod_target_groups(pods: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """File-based service discovery groups for the exchange's running pods (`items` of `kubectl
    get pods -o json`), labelled as the chart's PodMonitor labels them: `job` from
    `app.kubernetes.io/name`, `market` from `exchange.io/market`, `namespace`, `pod`.

    Debian's Prometheus is built without Kubernetes discovery, so a Prometheus outside the
    cluster (the local cluster's host) is given its pods this way: whoever lists the pods
    writes these groups with `write_target_groups`, and Prometheus re-reads the file."""
    groups = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status", {})
        labels = meta.get("labels", {})
        if labels.get("app.kubernetes.io/part-of") != "exchange-platform":
            continue
        if status.get("phase") != "Running" or not status.get("podIP"):
            continue
        ports = [
            port["containerPort"]
            for container in pod["spec"]["containers"]
            for port in container.get("ports", [])
            if port.get("name") in SCRAPED_PORTS
        ]
        target_labels = {
            "job": labels.get("app.kubernetes.io/name", "unknown"),
            "namespace": meta["namespace"],
            "pod": meta["name"],
        }
        if "exchange.io/market" in labels:
            target_labels["market"] = labels["exchange.io/market"]
        for port in ports:
            groups.append({"targets": [f"{status['podIP']}:{port}"], "labels": target_labels})
    return groups


def write_target_groups(path: Path, groups: Sequence[Mapping[str, Any]]) -> None:
    """Replace the file-SD file at once (Prometheus may read it at any moment)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(list(groups), indent=1))
    partial.replace(path)


def file_sd_job(name: str, path: Path, refresh_s: float = 5.0) -> dict[str, Any]:
    """A scrape job over the groups in `path` (see `pod_target_groups`); the labels there
    (`job` among them) win over the job's name."""
    return {
        "job_name": name,
        "file_sd_configs": [{"files": [str(path)], "refresh_interval": _duration(refresh_s)}],
    }


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


@dataclass
class PrometheusServer:
    """Prometheus on `host:port`, scraping `jobs` (and `extra_scrape_configs`, raw) every
    `interval` seconds and evaluating `rule_files` as often; configuration and TSDB in
    `run_dir/prometheus`, log and pid file in `run_dir`."""

    run_dir: Path
    port: int = field(default_factory=free_port)
    jobs: Sequence[ScrapeJob] = ()
    rule_files: Sequence[Path] = (RULES,)
    interval: float = 5.0
    """Seconds between scrapes and between rule evaluations: 5 s keeps `make up` light and
    an alert's `for:` of 15 s meaningful; tests use 1 s to see alerts within seconds."""
    extra_scrape_configs: Sequence[Mapping[str, Any]] = ()
    retention: str = "3d"
    host: str = "127.0.0.1"
    die_with_parent: bool = True

    def __post_init__(self) -> None:
        self.home = self.run_dir / "prometheus"
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.home / "prometheus.yml"

    def config(self) -> dict[str, Any]:
        every = _duration(self.interval)
        return {
            "global": {
                "scrape_interval": every,
                "scrape_timeout": _duration(min(self.interval, 10.0)),
                "evaluation_interval": every,
            },
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [job.config() for job in self.jobs]
            + [dict(extra) for extra in self.extra_scrape_configs],
        }

    def write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path

    def start(self, timeout: float = 60.0) -> float:
        if not SERVER.exists():
            raise FileNotFoundError(f"{SERVER} missing: run `make setup` (part observe)")
        self.write_config()
        (self.home / "data").mkdir(exist_ok=True)
        argv = [
            str(SERVER), f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={self.host}:{self.port}", "--web.enable-lifecycle",
            "--log.level=warn",
        ]  # fmt: skip
        self.process = ManagedProcess(
            "prometheus", argv, self.run_dir, die_with_parent=self.die_with_parent
        )
        self.process.start()
        return self.process.wait_ready(self._ready, timeout)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def reload(self) -> None:
        """Re-read the configuration and the rule files (after `write_config`)."""
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def api(self, path: str, **params: str) -> Any:
        """`GET /api/v1/<path>`'s `data`; an error answer raises `PrometheusError`."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 400/422 carry the error in the JSON body
            answer = json.loads(exc.read() or b"{}")
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {answer.get('error', answer)}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (`[{"metric": {...}, "value": [t, "v"]}, ...]`)."""
        data = self.api("query", query=expr)
        return list(data["result"]) if data["resultType"] in ("vector", "matrix") else [data]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts, pending and firing (`labels`, `annotations`, `state`, `value`)."""
        return list(self.api("alerts")["alerts"])

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.alerts()
            if a["labels"].get("alertname") == alertname and a["state"] == "firing"
        ]

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (`labels`, `health`: up/down/unknown, `lastError`)."""
        return list(self.api("targets", state="active")["activeTargets"])

    def rule_groups(self) -> list[dict[str, Any]]:
        """The loaded rule groups, each rule with its `health` and `lastError`."""
        return list(self.api("rules")["groups"])
