"""Build and check the web UI (workloads/web) with npm: install, build, test, API types.

Each step runs only when its inputs changed: `npm ci` when node_modules is missing or older
than package-lock.json, `npm run build` when a source is newer than dist/index.html. npm's
output is captured and, on failure, raised with its tail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from e2e.env import paths

WEB_DIR = paths.REPO_ROOT / "workloads" / "web"
DIST = WEB_DIR / "dist"
GENERATED = ("openapi.json", "schema.d.ts")
"""The files `npm run gen:api` writes into src/api (committed; inputs to the build)."""
BUILD_INPUTS = ("src", "index.html", "package-lock.json", "vite.config.ts", "tsconfig.json")
TAIL_CHARS = 4000
INSTALL_TIMEOUT_SEC = 900
BUILD_TIMEOUT_SEC = 600


class WebBuildError(RuntimeError):
    """An npm step failed; the message carries the tail of its output."""


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "EXCHANGE_PYTHON": sys.executable,  # gen:api imports the gateway with this Python
    }


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise WebBuildError(f"`{name}` is not on PATH: the web UI needs Node.js 20.19+ and npm")
    return found


def _run(args: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args,
        cwd=WEB_DIR,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise WebBuildError(
            f"`{' '.join(args)}` in {WEB_DIR} exited {result.returncode}:\n{tail(result)}"
        )
    return result


def tail(result: subprocess.CompletedProcess[str], chars: int = TAIL_CHARS) -> str:
    """The end of a step's stdout and stderr, for a failure message."""
    return (result.stdout + result.stderr)[-chars:]


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


def _newest(roots: Iterable[Path]) -> float:
    newest = 0.0
    for root in roots:
        files = root.rglob("*") if root.is_dir() else [root]
        newest = max([newest, *(_mtime(f) for f in files if f.is_file())])
    return newest


def needs_install() -> bool:
    """node_modules is missing or older than package-lock.json."""
    marker = WEB_DIR / "node_modules" / ".package-lock.json"
    return not marker.exists() or _mtime(WEB_DIR / "package-lock.json") > _mtime(marker)


def needs_build() -> bool:
    """dist/index.html is missing or older than one of the build's inputs."""
    built = DIST / "index.html"
    return not built.exists() or _newest(WEB_DIR / p for p in BUILD_INPUTS) > _mtime(built)


def ensure_installed(force: bool = False) -> None:
    if force or needs_install():
        _run([_tool("npm"), "ci"], INSTALL_TIMEOUT_SEC)


def ensure_built(force: bool = False) -> Path:
    """The built UI's directory (dist/), after `npm ci` and `npm run build` if needed
    (`force`: build even when dist/ looks current)."""
    ensure_installed()
    if force or needs_build():
        _run([_tool("npm"), "run", "build"], BUILD_TIMEOUT_SEC)
    return DIST


def openapi_types_current() -> tuple[bool, str]:
    """Whether src/api holds what `npm run gen:api` makes from the gateway's document now;
    with a message naming the stale files."""
    ensure_installed()
    with tempfile.TemporaryDirectory(prefix="web-api-") as scratch:
        _run([_tool("node"), "scripts/gen-api.mjs", scratch], BUILD_TIMEOUT_SEC)
        stale = [
            name
            for name in GENERATED
            if not (WEB_DIR / "src" / "api" / name).exists()
            or (WEB_DIR / "src" / "api" / name).read_bytes() != (Path(scratch) / name).read_bytes()
        ]
    if stale:
        return False, f"stale generated API files {stale}: run `npm run gen:api` in workloads/web"
    return True, "src/api matches the gateway's OpenAPI document"


def vitest() -> subprocess.CompletedProcess[str]:
    """`npx vitest run` in workloads/web (after `npm ci` if needed); the caller checks it."""
    ensure_installed()
    return _run([_tool("npx"), "vitest", "run"], BUILD_TIMEOUT_SEC, check=False)
