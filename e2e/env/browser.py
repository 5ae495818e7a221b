"""A real headless browser for the web UI's end-to-end test and benchmarks: Debian's
`chromium`, driven by Playwright (Python), never Playwright's own download.

`/usr/bin/chromium` is a shell wrapper; Playwright needs the ELF beside it. Debian's security
updates move the version, so tests print it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from e2e.env import apt

if TYPE_CHECKING:
    from playwright.async_api import Browser

DEBIAN_PACKAGES = ("chromium", "fonts-liberation", "fonts-dejavu-core")
EXECUTABLE = Path("/usr/lib/chromium/chromium")
LAUNCH_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
)  # fmt: skip
"""The machine's network is closed: without the background-networking flags Chromium's own
connections are refused at every start."""


def ensure_installed() -> None:
    apt.ensure(DEBIAN_PACKAGES)


def version() -> str:
    done = subprocess.run([str(EXECUTABLE), "--version"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return (done.stdout or done.stderr or "Chromium ?").strip()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright; its version printed on stderr."""
    from playwright.async_api import async_playwright

    print(f"browser: {version()}", file=sys.stderr)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(EXECUTABLE), headless=True, args=list(LAUNCH_ARGS)
        )
        try:
            yield launched
        finally:
            await launched.close()
