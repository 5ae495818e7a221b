"""Debian packages the real parts need, installed once and only when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable


def missing(packages: Iterable[str]) -> list[str]:
    """Packages from the list that dpkg does not report as installed."""
    absent = []
    for name in packages:
        probe = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if "install ok installed" not in probe.stdout:
            absent.append(name)
    return absent


def ensure(packages: Iterable[str]) -> list[str]:
    """Install what is missing with apt-get (as root); return what was installed."""
    wanted = missing(packages)
    if not wanted:
        return []
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get not found; install these packages by hand: {wanted}")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *wanted],
        check=True,
        env=env,
    )
    return wanted
