"""A real S3 server: SeaweedFS's `weed mini` (master, volume, filer and S3 in one process),
built from the Go module proxy (`e2e/env/go/seaweedfs`).

Why SeaweedFS: it is the S3 server this machine's registries serve (MinIO's server is not a
Go module one can build from the proxy any more), it honours conditional writes
(`If-None-Match: *` answers 412 to the loser), checksums and path-style requests, and it
starts in seconds. Every port is set (it would otherwise open more, on 0.0.0.0); the
buckets are created at start (`-bucket`), with the credentials from the environment.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import obstore

from e2e.env import gobuild
from e2e.env.process import ManagedProcess, free_port
from workloads.common.objectstore import ObjectStoreSettings, open_store

ACCESS_KEY = "exchange"
SECRET_KEY = "exchange-secret-key"
REGION = "us-east-1"


@dataclass
class S3Server:
    """SeaweedFS serving S3 at `http://host:port`: data and its own logs in `run_dir/s3`,
    its pid file and stdout in `run_dir` (as PostgreSQL's and Kafka's)."""

    run_dir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    buckets: tuple[str, ...] = ("exchange-archive",)
    die_with_parent: bool = True

    def __post_init__(self) -> None:
        self.home = self.run_dir / "s3"
        self.process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def settings(self, bucket: str | None = None, prefix: str = "") -> ObjectStoreSettings:
        """How a client reaches `bucket` (the first one by default) under `prefix`."""
        return ObjectStoreSettings(
            self.endpoint, bucket or self.buckets[0], ACCESS_KEY, SECRET_KEY, prefix, REGION
        )

    def start(self, timeout: float = 60.0) -> float:
        data, logs = self.home / "data", self.home / "logs"
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port(self.host) for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port.grpc", "webdav.port", "admin.port", "admin.port.grpc",
        )}  # fmt: skip
        argv = [
            str(gobuild.binary("weed")), f"-logdir={logs}", "mini", f"-dir={data}",
            f"-ip={self.host}", f"-ip.bind={self.host}", "-master.telemetry=false",
            f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-admin.ui=false", "-admin.port.legacy=0",
            f"-bucket={','.join(self.buckets)}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]  # fmt: skip
        env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        self.process = ManagedProcess(  # pid file and log beside the other parts'
            "seaweedfs", argv, self.run_dir, env={**os.environ, **env},
            die_with_parent=self.die_with_parent,
        )  # fmt: skip
        self.process.start()
        return self.process.wait_ready(self._writable, timeout)

    def _writable(self) -> bool:
        """Ready only once a PUT into every bucket succeeds (S3 answers before that)."""
        try:
            for bucket in self.buckets:
                obstore.put(open_store(self.settings(bucket)), f".ready/{uuid.uuid4().hex}", b"ok")
        except Exception:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
