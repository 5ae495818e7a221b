"""containerd + runc from Debian as the node's container runtime, one instance per cluster.

Each cluster's containerd has its own socket, root (images, snapshots) and state, so two
clusters on one host never share containers. The configuration differs from
`containerd config default` only where this machine class needs it (see INFRA-NOTES):

- `restrict_oom_score_adj = true`: without CAP_SYS_RESOURCE a negative oom_score_adj is
  refused, and every sandbox fails with runc's "can't get final child's PID from pipe: EOF";
- `SystemdCgroup = false`: there is no systemd; the kubelet uses cgroupfs too;
- `sandbox_image` = the locally built pause image (the registry is not reachable);
- the CNI directories of this cluster, and network namespaces under containerd's own state
  directory (`netns_mounts_under_state_dir`), so that teardown finds exactly its own.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from e2e.env import images
from e2e.env.process import ManagedProcess

CNI_BIN_DIR = Path("/usr/lib/cni")
"""Where Debian's containernetworking-plugins puts bridge, host-local, portmap, loopback."""

_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{socket}"

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"""


@dataclass
class Containerd:
    """containerd with everything under `home` (config, socket, root, state)."""

    home: Path
    cni_conf_dir: Path
    die_with_parent: bool = True
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def socket(self) -> Path:
        return self.home / "containerd.sock"

    @property
    def endpoint(self) -> str:
        """The CRI endpoint the kubelet and crictl use."""
        return f"unix://{self.socket}"

    @property
    def root(self) -> Path:
        return self.home / "root"

    @property
    def state(self) -> Path:
        return self.home / "state"

    def write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "config.toml"
        config.write_text(
            _CONFIG.format(
                root=self.root,
                state=self.state,
                socket=self.socket,
                opt=self.home / "opt",
                runc_root=self.home / "runc",
                pause=images.PAUSE_IMAGE,
                cni_bin=CNI_BIN_DIR,
                cni_conf=self.cni_conf_dir,
            )
        )
        return config

    def spawn(self) -> ManagedProcess:
        """Start containerd; `ready` tells when it answers on its socket."""
        config = self.write_config()
        self.process = ManagedProcess(
            "containerd",
            ["containerd", "--config", str(config), "--log-level", "warn"],
            self.home,
            die_with_parent=self.die_with_parent,
        )
        self.process.start()
        return self.process

    def ready(self) -> bool:
        if not self.socket.exists():
            return False
        probe = subprocess.run(self.ctr("version"), capture_output=True, check=False)
        return probe.returncode == 0

    def ctr(self, *args: str) -> list[str]:
        """argv for `ctr` on this containerd, in the CRI's `k8s.io` namespace."""
        return ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args]

    def load(self, archive: images.ImageArchive) -> bool:
        """Import an image archive unless this containerd already holds that exact archive;
        returns whether it imported."""
        stamp = self.home / "imported" / archive.name.replace("/", "_")
        if stamp.exists() and stamp.read_text() == archive.key and archive.name in self.images():
            return False
        subprocess.run(
            self.ctr("images", "import", str(archive.path)),
            check=True,
            capture_output=True,
        )
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(archive.key)
        return True

    def images(self) -> set[str]:
        out = subprocess.run(
            self.ctr("images", "list", "--quiet"), capture_output=True, text=True, check=True
        )
        return set(out.stdout.split())

    def tasks(self) -> dict[str, int]:
        """Running containers: id -> host pid of its init process."""
        out = subprocess.run(
            self.ctr("tasks", "list"), capture_output=True, text=True, check=False
        ).stdout
        tasks = {}
        for line in out.splitlines()[1:]:
            words = line.split()
            if len(words) >= 2 and words[1].isdigit():
                tasks[words[0]] = int(words[1])
        return tasks

    def container_pid(self, container_id: str) -> int:
        """The host pid of a container's main process (for crash drills: `kill -9`)."""
        return self.tasks()[container_id]
