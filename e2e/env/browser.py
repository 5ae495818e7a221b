"""A real headless browser for the web UI's end-to-end test and benchmarks: Debian's
`chromium`, driven by Playwright (Python), never Playwright's own download.

`/usr/bin/chromium` is a shell wrapper; Playwright needs the ELF beside it. Debian's security
updates move the version, so tests print it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from e2e.env import apt

DEBIAN_PACKAGES = ("chromium", "fonts-liberation", "fonts-dejavu-core")
EXECUTABLE = Path("/usr/lib/chromium/chromium")


def ensure_installed() -> None:
    apt.ensure(DEBIAN_PACKAGES)


def version() -> str:
    done = subprocess.run([str(EXECUTABLE), "--version"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return (done.stdout or done.stderr or "Chromium ?").strip()
