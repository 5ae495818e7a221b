"""Recovery: the newest valid snapshot plus the WAL tail, checked against the state hash.

Every WAL entry records the engine's rolling hash after its command. Replaying a command
must reproduce that hash exactly; a mismatch means the log does not describe this engine
(corruption that slipped past the CRC, or non-deterministic code), and the matcher must
not serve from such a state.
"""

from __future__ import annotations

import gc
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
    """The engine as the newest intact snapshot plus the WAL tail leave it, hash-checked.

    The cyclic garbage collector is paused meanwhile: recovery builds millions of objects
    that stay alive (the book, the idempotency window) or die by reference counting (decoded
    records), so collections would find nothing to free, yet each full one rescans them
    all; on the benchmark's million commands they took longer than the replay itself.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _recover(spec, data_dir)
    finally:
        if collecting:
            gc.enable()


def _recover(spec: MarketSpec, data_dir: Path) -> Recovered:
    start = time.perf_counter()
    snap = snapshot.load_latest(data_dir / "snapshots")
    if snap is None:
        engine = Engine(spec)
    else:
        engine = Engine.from_state(spec, snap.state)
        if engine.state_hash != snap.state_hash or engine.seq != snap.seq:
            raise RecoveryError(f"snapshot {snap.path} does not match its own header")
    snapshot_seq = engine.seq
    last_epoch = engine.epoch
    execute = engine.execute
    for record in wal.read(data_dir / "wal", engine.seq + 1, repair=True):
        last_epoch = record.epoch
        seq = record.first_seq
        entries = record.entries
        if seq <= engine.seq:  # the record straddles the snapshot: skip what it covers
            entries = entries[engine.seq + 1 - seq :]
            seq = engine.seq + 1
        if entries and seq != engine.seq + 1:
            raise RecoveryError(f"WAL gap: seq {seq} after {engine.seq}")
        for ts, cmd, _events, _correlation, recorded_hash in entries:
            execute(cmd, seq, ts)
            if engine.state_hash != recorded_hash:
                raise RecoveryError(
                    f"state hash mismatch at seq {seq}: the WAL does not replay to the "
                    "state it recorded"
                )
            seq += 1
    seconds = time.perf_counter() - start
    replayed = engine.seq - snapshot_seq
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
