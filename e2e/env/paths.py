"""Where things live: the repository, the download/build cache and per-run directories."""

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this module belongs to."""

GO_MODULES = Path(__file__).resolve().parent / "go"
"""Wrapper Go modules that build Kubernetes and etcd from the module proxy."""


def cache_dir() -> Path:
    """The cache for downloads and builds, shared by every checkout on the machine.

    `EXCHANGE_CACHE_DIR` overrides it; the default follows XDG (`~/.cache/exchange-platform`).
    """
    explicit = os.environ.get("EXCHANGE_CACHE_DIR")
    if explicit:
        base = Path(explicit)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(xdg) / "exchange-platform"
    base.mkdir(parents=True, exist_ok=True)
    return base


def bin_dir() -> Path:
    """Built binaries, one directory per part and version (for example `etcd-v3.6.16/etcd`)."""
    path = cache_dir() / "bin"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_run_dir(prefix: str = "exchange-run-") -> Path:
    """A fresh directory for one run's data, readable by the unprivileged PostgreSQL user.

    pytest's own tmp directories are mode 0700 under root; the database server runs as
    another user and must be able to reach its data directory, hence a 0755 directory.
    """
    base = os.environ.get("EXCHANGE_RUN_BASE") or tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    path.chmod(0o755)
    return path
