"""A git server on 127.0.0.1 (`git daemon`) with one repository made from the project's
working tree: what Argo CD's repo server clones in the GitOps tests, and where they commit.

The repository holds what Argo CD reads (`gitops/`, `charts/`, `crds/`), copied from the
working tree as it is, so a test syncs the manifests of the change under test. Commits go to
a clone and are pushed, as a platform engineer's would.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from e2e.env import paths
from e2e.env.process import ManagedProcess, free_port, port_open

SYNCED_DIRS = ("gitops", "charts", "crds")
"""The project's directories that Argo CD reads."""


@dataclass
class GitServer:
    run_dir: Path
    port: int = field(default_factory=free_port)
    name: str = "exchange-platform"
    die_with_parent: bool = True
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"git://127.0.0.1:{self.port}/{self.name}.git"

    @property
    def bare(self) -> Path:
        return self.run_dir / "repos" / f"{self.name}.git"

    @property
    def work(self) -> Path:
        """The clone commits are made in."""
        return self.run_dir / "work"

    def start(self) -> float:
        if not self.bare.exists():
            self._seed()
        self.process = ManagedProcess(
            "git-daemon",
            [
                "git", "daemon", f"--base-path={self.run_dir / 'repos'}", "--export-all",
                "--reuseaddr", "--listen=127.0.0.1", f"--port={self.port}",
                str(self.run_dir / "repos"),
            ],
            self.run_dir,
            die_with_parent=self.die_with_parent,
        )  # fmt: skip
        self.process.start()
        return self.process.wait_ready(lambda: port_open("127.0.0.1", self.port), timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def _seed(self) -> None:
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        _git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        _git("init", "--quiet", "--initial-branch=main", str(self.work))
        _git("-C", str(self.work), "remote", "add", "origin", str(self.bare))
        for name in SYNCED_DIRS:
            shutil.copytree(paths.REPO_ROOT / name, self.work / name, symlinks=True)
        self.commit("the project's working tree")

    def commit(self, message: str, change: Callable[[Path], None] | None = None) -> str:
        """Apply `change` to the clone, commit everything and push; the new commit's sha."""
        if change is not None:
            change(self.work)
        _git("-C", str(self.work), "add", "--all")
        _git(
            "-C", str(self.work), "-c", "user.name=platform-engineer",
            "-c", "user.email=platform@exchange.invalid", "commit", "--quiet", "-m", message,
        )  # fmt: skip
        _git("-C", str(self.work), "push", "--quiet", "origin", "HEAD:main")
        return _git("-C", str(self.work), "rev-parse", "HEAD").strip()


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout
