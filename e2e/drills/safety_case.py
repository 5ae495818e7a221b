"""`make safety-case`: a release's evidence in one archive, as the seed's `make safety-case`.

Runs every drill's short form on one venue (`python -m e2e.drills.run all`: bounded by the
drills' own limits, about ten minutes on two cores), then bundles into
`.run/safety-case/safety-case-<UTC time>.tar.gz`:
- `drills.jsonl` (the drills' JSON lines) and `drills/` (their reports);
- `versions.json`: the git commit (and whether the tree had changes), Python, PostgreSQL,
  Kafka, ClickHouse, every pin of `e2e/env/versions.py`, the machine;
- the newest test summary under `.run/` (`test-results*.xml` or `test-summary*.txt`, e.g.
  from `make test PYTEST_ARGS=--junitxml=.run/test-results.xml`) and the newest benchmark
  lines (`bench*.jsonl`, e.g. `make bench | tee .run/bench.jsonl`); a note says which is
  missing;
- `SHA256SUMS`: the SHA-256 of every file in the archive (`sha256sum -c SHA256SUMS`).
The archive's own SHA-256 is printed and written beside it (`<archive>.sha256`). Exits 1
when a drill failed; the archive is written all the same (failing evidence is evidence).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from e2e.drills.report import machine
from e2e.drills.run import DRILLS, LIMITS
from e2e.env import clickhouse, kafka, postgres, versions
from e2e.env.paths import REPO_ROOT

OUT_DIR = REPO_ROOT / ".run" / "safety-case"
RUN_DIR = REPO_ROOT / ".run"


def run_drills() -> list[dict[str, Any]]:
    """Every drill's short form, one venue; their JSON lines."""
    limit = sum(short for short, _ in LIMITS.values()) + 300
    done = subprocess.run(
        [sys.executable, "-m", "e2e.drills.run", "all"],
        stdout=subprocess.PIPE, text=True, timeout=limit, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    ran = {line["drill"] for line in lines}
    return lines + [
        {"drill": name, "ok": False, "problems": ["did not run (the run stopped before it)"]}
        for name in DRILLS
        if name not in ran
    ]


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          check=False)  # fmt: skip
    return done.stdout.strip()


def versions_found() -> dict[str, Any]:
    pins = {k: v for k, v in vars(versions).items() if k.isupper() and isinstance(v, str)}
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "postgresql": postgres.version(),
        "kafka": kafka.version(),
        "clickhouse": clickhouse.version(),
        "pins": pins,
        "machine": machine(),
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def newest(*patterns: str) -> Path | None:
    found = [p for pattern in patterns for p in RUN_DIR.glob(pattern) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def bundle(lines: list[dict[str, Any]], staging: Path) -> list[str]:
    """Lay the evidence out in `staging`; the notes on what is missing."""
    notes = []
    (staging / "drills").mkdir()
    (staging / "drills.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for line in lines:
        report = REPO_ROOT / str(line.get("report", ""))
        if line.get("report") and report.is_file():
            shutil.copy2(report, staging / "drills" / report.name)
    (staging / "versions.json").write_text(json.dumps(versions_found(), indent=2) + "\n")
    for what, found, how in (
        ("test summary", newest("test-results*.xml", "test-summary*.txt"),
         "make test PYTEST_ARGS=--junitxml=.run/test-results.xml"),
        ("benchmark lines", newest("bench*.jsonl"), "make bench | tee .run/bench.jsonl"),
    ):  # fmt: skip
        if found is None:
            notes.append(f"no {what} under .run/ (make one with `{how}`)")
        else:
            shutil.copy2(found, staging / found.name)
    if notes:
        (staging / "MISSING.txt").write_text("\n".join(notes) + "\n")
    sums = [f"{sha256(p)}  {p.relative_to(staging)}"
            for p in sorted(staging.rglob("*")) if p.is_file()]  # fmt: skip
    (staging / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return notes


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    lines = run_drills()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"safety-case-{stamp}"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    archive = OUT_DIR / f"{name}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="safety-case-") as scratch:
        staging = Path(scratch) / name
        staging.mkdir()
        notes = bundle(lines, staging)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(staging, arcname=name)
    digest = sha256(archive)
    Path(f"{archive}.sha256").write_text(f"{digest}  {archive.name}\n")
    ok = all(line.get("ok") for line in lines)
    summary = {
        "safety_case": str(archive.relative_to(REPO_ROOT)),
        "sha256": digest,
        "ok": ok,
        "drills": {line["drill"]: line.get("ok", False) for line in lines},
        "missing": notes,
    }
    print(json.dumps(summary), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
