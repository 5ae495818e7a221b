"""The history writer's settings, from environment variables, validated at start.

| variable | default | meaning |
|---|---|---|
| HISTORY_CLICKHOUSE_URL | clickhouse://default:@127.0.0.1:29000/default | native protocol |
| HISTORY_KAFKA_BROKERS | 127.0.0.1:29092 | Kafka bootstrap |
| HISTORY_KAFKA_TOPIC | core.events.v1 | the core events topic |
| HISTORY_KAFKA_GROUP_ID | history-<topic> | consumer group (offsets committed after ClickHouse) |
| HISTORY_BATCH_MAX_EVENTS | 50000 | most records per batch (one ClickHouse insert) |
| HISTORY_BATCH_LINGER_MS | 200 | how long a batch may wait to fill (the history's freshness) |
| HISTORY_HTTP_HOST | 127.0.0.1 | address of /healthz, /readyz, /metrics |
| HISTORY_HTTP_PORT | 8093 | |
| LOG_LEVEL | INFO | |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from workloads.common import envvars
from workloads.common.envvars import SettingsError as SettingsError  # re-exported


@dataclass(frozen=True)
class HistorySettings:
    clickhouse_url: str = "clickhouse://default:@127.0.0.1:29000/default"
    brokers: str = "127.0.0.1:29092"
    topic: str = "core.events.v1"
    group_id: str = ""
    batch_max_events: int = 50_000
    batch_linger: float = 0.2
    http_host: str = "127.0.0.1"
    http_port: int = 8093

    @property
    def group(self) -> str:
        return self.group_id or f"history-{self.topic}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> HistorySettings:
        def integer(name: str, default: int, low: int) -> int:
            return envvars.integer(env, name, default, low)

        url = env.get("HISTORY_CLICKHOUSE_URL", cls.clickhouse_url)
        if not url.startswith("clickhouse://"):
            raise SettingsError(f"HISTORY_CLICKHOUSE_URL={url!r} is not a clickhouse:// URL")
        return cls(
            clickhouse_url=url,
            brokers=env.get("HISTORY_KAFKA_BROKERS", cls.brokers),
            topic=env.get("HISTORY_KAFKA_TOPIC", cls.topic),
            group_id=env.get("HISTORY_KAFKA_GROUP_ID", ""),
            batch_max_events=integer("HISTORY_BATCH_MAX_EVENTS", cls.batch_max_events, 1),
            batch_linger=integer("HISTORY_BATCH_LINGER_MS", 200, 0) / 1000,
            http_host=env.get("HISTORY_HTTP_HOST", cls.http_host),
            http_port=integer("HISTORY_HTTP_PORT", cls.http_port, 1),
        )
