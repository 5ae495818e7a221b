"""Keep a Prometheus file-discovery file listing the exchange's pods, for a Prometheus on the
cluster's host: Debian's Prometheus is built without Kubernetes discovery.

`python -m e2e.env.podtargets --kubectl K --kubeconfig C --out F [--every S]` lists the pods
labelled `app.kubernetes.io/part-of=exchange-platform` every S seconds and rewrites F with
their scrape targets, labelled as the chart's PodMonitor labels them
(`prometheus.pod_target_groups`). The host reaches pod IPs directly (the local cluster's
bridge; kind's ranges are routed to its node by `make e2e-kind`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from e2e.env import gobuild, paths
from e2e.env.process import ManagedProcess
from e2e.env.prometheus import pod_target_groups, write_target_groups

log = logging.getLogger("e2e.env.podtargets")
SELECTOR = "app.kubernetes.io/part-of=exchange-platform"


def refresh(kubectl: str, kubeconfig: str, out: Path) -> int:
    """Rewrite `out` from the pods running now; the number of targets."""
    listed = subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, "get", "pods", "-A", "-l", SELECTOR, "-o", "json"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    groups = pod_target_groups(json.loads(listed.stdout)["items"])
    write_target_groups(out, groups)
    return len(groups)


def process(run_dir: Path, kubeconfig: Path, out: Path, die_with_parent: bool) -> ManagedProcess:
    """This module as a process of its own (write `out` empty before Prometheus starts: it
    reads the file at once)."""
    argv = [
        sys.executable, "-m", "e2e.env.podtargets", "--kubectl", str(gobuild.binary("kubectl")),
        "--kubeconfig", str(kubeconfig), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    return ManagedProcess("podtargets", argv, run_dir, env=env, die_with_parent=die_with_parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--every", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    while True:
        try:
            refresh(args.kubectl, args.kubeconfig, args.out)
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
            log.warning("listing the pods failed: %s", exc)  # the API server may be restarting
        time.sleep(args.every)


if __name__ == "__main__":
    main()
