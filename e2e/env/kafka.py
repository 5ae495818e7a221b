"""Apache Kafka in KRaft mode: one combined broker and controller, from Maven Central jars."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from e2e.env import paths, versions
from e2e.env.process import ManagedProcess, port_open

_POM = Path(__file__).resolve().parent / "maven" / "kafka-pom.xml"

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = %d{ISO8601} %p %c{1} %m%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server
logger.server.level = info
"""


def lib_dir() -> Path:
    return paths.cache_dir() / f"kafka-{versions.KAFKA}" / "lib"


def install() -> Path:
    """Copy the broker's jars from Maven Central into the cache (once per version)."""
    target = lib_dir()
    done = target / ".complete"
    if done.exists():
        return target
    work = target.parent / "assembly"
    work.mkdir(parents=True, exist_ok=True)
    pom = _POM.read_text().replace("@KAFKA@", versions.KAFKA).replace("@LOG4J@", versions.LOG4J)
    (work / "pom.xml").write_text(pom)
    staging = target.parent / "lib.partial"
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ],
        check=True,
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    done.touch()
    return target


def version() -> str:
    jars = sorted(lib_dir().glob("kafka_2.13-*.jar"))
    return f"Apache Kafka {versions.KAFKA} (KRaft) from {jars[0].name if jars else 'missing jars'}"


def new_cluster_id() -> str:
    """A 22-character URL-safe base64 UUID, the form `StorageTool format -t` expects.

    One that starts with "-" would be read as an option, so those are drawn again.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class KafkaBroker:
    """A single KRaft node on `host:port` (clients) and `host:controller_port` (quorum)."""

    run_dir: Path
    port: int
    controller_port: int
    host: str = "127.0.0.1"
    heap: str = "512m"
    die_with_parent: bool = True
    """Off when the broker outlives its launcher (`make cluster-up`)."""

    def __post_init__(self) -> None:
        self.home = self.run_dir / "kafka"
        self.process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            # The matchers keep their outbox cursor as group offsets: never expire them.
            "offsets.retention.minutes": str(60 * 24 * 365 * 10),
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
        }
        config = self.home / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.properties").write_text(_LOG4J2)
        return config

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            # C1 only: a fresh broker's C2 compiler threads took about a quarter of a core
            # for the first minutes of load on these 2 cores, competing with what is measured.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{lib_dir()}/*",
            *args,
        ]

    def start(self, timeout: float = 90.0) -> float:
        """Format the storage on first start, then run the broker until it answers metadata."""
        config = self._write_config()
        if not (self.home / "data" / "meta.properties").exists():
            subprocess.run(
                self._java(
                    "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(config)
                ),
                check=True,
                capture_output=True,
            )
        self.process = ManagedProcess(
            "kafka",
            self._java("kafka.Kafka", str(config)),
            self.run_dir,
            die_with_parent=self.die_with_parent,
        )
        self.process.start()
        return self.process.wait_ready(self._answers_metadata, timeout)

    def _answers_metadata(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        return asyncio.run(metadata_ready(self.bootstrap))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


async def metadata_ready(bootstrap: str) -> bool:
    """A metadata request that names a live broker: the broker serves clients."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


async def ensure_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    """Create `name` unless it exists (the broker does not auto-create topics)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
