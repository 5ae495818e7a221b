"""Recovery: the newest valid snapshot plus the WAL tail, checked against the state hash.

Every WAL entry records the engine's rolling hash after its command. Replaying a command
must reproduce that hash exactly; a mismatch means the log does not describe this engine
(corruption that slipped past the CRC, or non-deterministic code), and the matcher must
not serve from such a state.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from workloads.matcher import snapshot, wal
from workloads.matcher.engine import Engine
from workloads.matcher.spec import MarketSpec

log = logging.getLogger(__name__)


class RecoveryError(RuntimeError):
    """The stored state cannot be trusted; the message says where and why."""


@dataclass(frozen=True)
class Recovered:
    engine: Engine
    snapshot_seq: int
    replayed: int
    last_epoch: int
    seconds: float


def recover(spec: MarketSpec, data_dir: Path) -> Recovered:
    start = time.perf_counter()
    snap = snapshot.load_latest(data_dir / "snapshots")
    if snap is None:
        engine = Engine(spec)
    else:
        engine = Engine.from_state(spec, snap.state)
        if engine.state_hash != snap.state_hash or engine.seq != snap.seq:
            raise RecoveryError(f"snapshot {snap.path} does not match its own header")
    snapshot_seq = engine.seq
    replayed = 0
    last_epoch = engine.epoch
    execute = engine.execute
    for record in wal.read(data_dir / "wal", engine.seq + 1, repair=True):
        last_epoch = record.epoch
        seq = record.first_seq
        for ts, cmd, _events, _correlation, recorded_hash in record.entries:
            if seq > engine.seq:
                if seq != engine.seq + 1:
                    raise RecoveryError(f"WAL gap: seq {seq} after {engine.seq}")
                execute(cmd, seq, ts)
                replayed += 1
                if engine.state_hash != recorded_hash:
                    raise RecoveryError(
                        f"state hash mismatch at seq {seq}: the WAL does not replay to the "
                        "state it recorded"
                    )
            seq += 1
    seconds = time.perf_counter() - start
    log.info(
        "recovered",
        extra={
            "snapshot_seq": snapshot_seq,
            "replayed": replayed,
            "seq": engine.seq,
            "seconds": round(seconds, 3),
        },
    )
    return Recovered(engine, snapshot_seq, replayed, last_epoch, seconds)
