"""A real Argo CD on the local cluster: Redis, the repo server and the application controller.

They run as host processes, not pods: the git server they read listens on 127.0.0.1 (tests
use nothing else), which only host processes reach, and the binary runs from the build
cache without an image of its own to build and load. The one difference that makes: a
controller outside a pod cannot use `https://kubernetes.default.svc`, so the cluster is
registered as a destination (a Secret with its API server's URL and the admin's client
certificate) and Applications name that URL (`server`).

What the controller needs in the cluster comes first: namespace `argocd`, Argo CD's CRDs
(of the pinned version, kept beside the binary), `argocd-cm` with the venue's health
checks patched in as `gitops/README.md` tells a platform engineer to, `argocd-rbac-cm`,
`argocd-cmd-params-cm` and `argocd-secret`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.env import gobuild, kube, paths
from e2e.env.cluster import Cluster
from e2e.env.process import ManagedProcess, free_port, port_open, wait_until

NAMESPACE = "argocd"
HEALTH_PATCH = paths.REPO_ROOT / "gitops" / "argocd" / "health.yaml"
BOOTSTRAP = paths.REPO_ROOT / "gitops" / "bootstrap"
PART_OF = {"app.kubernetes.io/part-of": "argocd"}
COMPONENTS = ("argocd-repo-server", "argocd-application-controller")


@dataclass
class ArgoCD:
    cluster: Cluster
    run_dir: Path
    redis_port: int = field(default_factory=free_port)
    repo_port: int = field(default_factory=free_port)
    repo_metrics_port: int = field(default_factory=free_port)
    controller_metrics_port: int = field(default_factory=free_port)
    processes: list[ManagedProcess] = field(default_factory=list, init=False)

    @property
    def server(self) -> str:
        """The cluster as Applications name it (their `destination.server`)."""
        return self.cluster.plane.server

    def start(self) -> dict[str, float]:
        """Objects, then Redis, the repo server and the controller; seconds per step."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        timings = {"objects": self._apply_objects()}
        redis = self._launch(
            "redis-server",
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
             "--save", "", "--appendonly", "no", "--dir", str(self.run_dir),
             # Redis rewrites its command line; keep the run directory in it, by which
             # `cluster-down` finds what a `make argocd-up` left running.
             "--proc-title-template", f"{{title}} {{listen-addr}} {self.run_dir}"],
        )  # fmt: skip
        timings["redis"] = redis.wait_ready(self._port(self.redis_port), timeout=15)
        repo = self._launch(
            "argocd-repo-server",
            [str(self._component("argocd-repo-server")),
             "--port", str(self.repo_port), "--metrics-port", str(self.repo_metrics_port),
             "--redis", f"127.0.0.1:{self.redis_port}", "--disable-tls",
             "--address", "127.0.0.1", "--loglevel", "warn"],
        )  # fmt: skip
        timings["repo-server"] = repo.wait_ready(self._port(self.repo_port), timeout=60)
        controller = self._launch(
            "argocd-application-controller",
            [str(self._component("argocd-application-controller")),
             "--kubeconfig", str(self.cluster.kubeconfig), "--namespace", NAMESPACE,
             "--repo-server", f"127.0.0.1:{self.repo_port}", "--repo-server-plaintext",
             "--redis", f"127.0.0.1:{self.redis_port}",
             "--metrics-port", str(self.controller_metrics_port), "--loglevel", "warn",
             # resources' health in the Application (3.x keeps it in Redis by default)
             "--persist-resource-health"],
        )  # fmt: skip
        timings["application-controller"] = controller.wait_ready(
            self._port(self.controller_metrics_port), timeout=60
        )
        return timings

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    # -- the cluster's side -----------------------------------------------------------

    def _apply_objects(self) -> float:
        begin = time.monotonic()
        kubectl = self.cluster.kubectl
        kubectl("create", "namespace", NAMESPACE, check=False)
        crds = gobuild.binary("argocd").parent / "crds"
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
        kube.wait_established(kubectl, "applications.argoproj.io", "appprojects.argoproj.io")
        settings = ("argocd-cm", "argocd-rbac-cm", "argocd-cmd-params-cm")
        self.cluster.apply(
            *(_config_map(name) for name in settings),
            _secret("argocd-secret", {"server.secretkey": secrets.token_urlsafe(32)}, PART_OF),
            self._cluster_secret(),
        )
        # The documented install step of the venue's health checks, as it is documented.
        kubectl("-n", NAMESPACE, "patch", "configmap", "argocd-cm", "--type", "merge",
                "--patch-file", str(HEALTH_PATCH))  # fmt: skip
        return time.monotonic() - begin

    def _cluster_secret(self) -> dict[str, Any]:
        """The local cluster as Argo CD's destination: its URL and the admin's certificate."""
        config = yaml.safe_load(self.cluster.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]

        def pem(entry: dict[str, Any], key: str) -> str:
            data = entry.get(f"{key}-data")
            if data:
                return str(data)
            return base64.b64encode(Path(entry[key]).read_bytes()).decode()

        tls = {
            "caData": pem(cluster, "certificate-authority"),
            "certData": pem(user, "client-certificate"),
            "keyData": pem(user, "client-key"),
        }
        return _secret(
            "cluster-local",
            {"name": "local", "server": self.server,
             "config": json.dumps({"tlsClientConfig": tls})},
            {**PART_OF, "argocd.argoproj.io/secret-type": "cluster"},
        )  # fmt: skip

    # -- processes --------------------------------------------------------------------

    def _component(self, name: str) -> Path:
        """Argo CD picks the component by the name it is called under: a link named after
        it (in the run directory, so `ps` shows the component and the run)."""
        link = self.run_dir / "bin" / name
        if not link.exists():
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(gobuild.binary("argocd"))
        return link

    def _launch(self, name: str, argv: list[str]) -> ManagedProcess:
        home = self.run_dir / "home"
        for sub in ("ssh", "tls", "gnupg"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "gnupg").chmod(0o700)
        env = {
            **os.environ,
            # The repo server runs git and helm (the build cache's) to render Applications.
            "PATH": f"{gobuild.binary('helm').parent}:{os.environ.get('PATH', '')}",
            "HOME": str(home),
            "ARGOCD_GPG_ENABLED": "false",
            "ARGOCD_SSH_DATA_PATH": str(home / "ssh"),
            "ARGOCD_TLS_DATA_PATH": str(home / "tls"),
            "ARGOCD_GNUPGHOME": str(home / "gnupg"),
        }
        process = ManagedProcess(
            name, argv, self.run_dir, env=env, die_with_parent=not self.cluster.settings.daemon
        )
        process.start()
        self.processes.append(process)
        return process

    @staticmethod
    def _port(port: int) -> Callable[[], bool]:
        return lambda: port_open("127.0.0.1", port)

    # -- what tests and `make argocd-up` ask of it ------------------------------------

    def bootstrap(self, repo_url: str, environment: str) -> None:
        """`kubectl apply` of the AppProject and the environment's root Application (the
        README's bootstrap step), with the repository and the cluster set to this one's."""
        project = yaml.safe_load((BOOTSTRAP / "project.yaml").read_text())
        project["spec"]["sourceRepos"] = [repo_url]
        root = yaml.safe_load((BOOTSTRAP / f"root-{environment}.yaml").read_text())
        root["spec"]["source"]["repoURL"] = repo_url
        root["spec"]["destination"]["server"] = self.server
        local = {"repoURL": repo_url, "destinationServer": self.server}
        for parameter in root["spec"]["source"]["helm"]["parameters"]:
            parameter["value"] = local.get(parameter["name"], parameter["value"])
        self.cluster.apply(project, root)

    def application(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            self.cluster.kubectl("get", "application", name, "-n", NAMESPACE, "-o", "json")
        )
        return found

    def markets(self) -> str:
        """Every Market's phase and conditions: why Argo CD finds one Degraded."""
        out = self.cluster.kubectl("get", "markets", "-A", "-o", "json", check=False)
        found = json.loads(out)["items"] if out else []
        return "\n".join(
            f"market {m['metadata']['namespace']}/{m['metadata']['name']}: "
            f"{(m.get('status') or {}).get('phase')} "
            + json.dumps([(c["type"], c["status"], c["reason"], c["message"][:300])
                          for c in (m.get("status") or {}).get("conditions") or []])
            for m in found
        )  # fmt: skip

    def refresh(self, name: str, hard: bool = False) -> None:
        """Ask the controller to compare `name` with git now (not at its next poll)."""
        self.cluster.kubectl(
            "annotate", "application", name, "-n", NAMESPACE, "--overwrite",
            f"argocd.argoproj.io/refresh={'hard' if hard else 'normal'}",
        )  # fmt: skip

    def wait_application(
        self, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float
    ) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def done() -> bool:
            out = self.cluster.kubectl(
                "get", "application", name, "-n", NAMESPACE, "-o", "json", check=False
            )
            seen.clear()
            seen.update(json.loads(out) if out else {})
            return bool(seen) and bool(check(seen))

        try:
            wait_until(done, timeout=timeout, what=f"application {name}: {what}", interval=0.5)
        except TimeoutError as exc:
            status = seen.get("status") or {}
            resources = [
                (r.get("kind"), r.get("name"), r.get("status"), r.get("health"))
                for r in status.get("resources") or []
            ]
            summary = json.dumps({"conditions": status.get("conditions"), "resources": resources})
            raise AssertionError(
                f"{exc}\nsync {sync_status(seen)}, health {health_status(seen)}\n{summary}\n"
                f"{self.markets()}\n{self.log_tails()}"
            ) from None
        return dict(seen)

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(f"{p.name}:\n{p.log_tail(lines)}" for p in self.processes)


def sync_status(app: dict[str, Any]) -> str:
    return str(((app.get("status") or {}).get("sync") or {}).get("status", ""))


def health_status(app: dict[str, Any]) -> str:
    return str(((app.get("status") or {}).get("health") or {}).get("status", ""))


def refreshed(app: dict[str, Any]) -> bool:
    """The controller has done the refresh asked for (it removes the annotation then)."""
    return "argocd.argoproj.io/refresh" not in (app["metadata"].get("annotations") or {})


def synced_at(app: dict[str, Any], revision: str) -> bool:
    """Synced with git at `revision` (a commit's sha)."""
    sync = (app.get("status") or {}).get("sync") or {}
    return sync.get("status") == "Synced" and sync.get("revision") == revision


def synced_and_healthy(app: dict[str, Any]) -> bool:
    return sync_status(app) == "Synced" and health_status(app) == "Healthy"


def _config_map(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": PART_OF},
    }


def _secret(name: str, data: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "stringData": data,
    }
