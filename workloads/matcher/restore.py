"""Restore a market from its archive alone (see `archive.py` for what the archive holds).

The newest archived snapshot (at or below `to_seq`), then the archived segments after it,
replayed command by command through the engine with the state hash checked after each one
(as local recovery does): a restore never yields a state whose hash does not match. Segments
archived by different leaders may overlap (their boundaries differ); each command is taken
once, from the first segment that holds it. The result is written as a local snapshot, from
which the matcher then recovers as usual.

Every object is checked against the SHA-256 it was archived with. A corrupt or truncated
object, or a gap between two segments, is a `RestoreError` naming the object: never a
silent partial restore.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.store import S3Store

from workloads.matcher import snapshot, wal
from workloads.matcher.archive import ArchivedObject, classify
from workloads.matcher.engine import Engine
from workloads.matcher.spec import MarketSpec

log = logging.getLogger(__name__)


class RestoreError(RuntimeError):
    """The archive cannot give a trustworthy state; the message names the object."""


@dataclass(frozen=True)
class Restored:
    engine: Engine
    snapshot_seq: int
    segments: int
    seconds: float


def archived_objects(
    store: S3Store, symbol: str
) -> tuple[list[ArchivedObject], list[ArchivedObject]]:
    """(snapshots, segments) archived for `symbol`, each sorted by seq (blocking)."""
    return classify(meta["path"] for batch in obstore.list(store, prefix=f"{symbol}/")
                    for meta in batch)  # fmt: skip


def _fetch(store: S3Store, key: str) -> bytes:
    """An object's bytes, checked against the SHA-256 it was archived with."""
    try:
        result = obstore.get(store, key)
        data = bytes(result.bytes())
    except Exception as exc:
        raise RestoreError(f"cannot read {key}: {exc}") from None
    expected = result.attributes.get("sha256")
    if expected is None:
        raise RestoreError(f"{key} has no sha256 in its metadata: not written by the archiver")
    if hashlib.sha256(data).hexdigest() != expected:
        raise RestoreError(f"{key} is corrupt: its SHA-256 is not the one it was archived with")
    return data


def restore(
    store: S3Store, spec: MarketSpec, data_dir: Path, to_seq: int | None = None
) -> Restored | None:
    """The market as the archive leaves it (up to `to_seq`), written as a local snapshot
    in `data_dir`; None when nothing is archived for the market. Blocking: run it in a
    thread. The cyclic GC is paused, as in local recovery (see `recovery.recover`)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _restore(store, spec, data_dir, to_seq)
    finally:
        if collecting:
            gc.enable()


def _restore(
    store: S3Store, spec: MarketSpec, data_dir: Path, to_seq: int | None
) -> Restored | None:
    start = time.perf_counter()
    try:
        snapshots, segments = archived_objects(store, spec.symbol)
    except Exception as exc:
        raise RestoreError(
            f"cannot list the archive of {spec.symbol}: {_first_line(exc)} (an empty volume "
            "needs its archive: it may hold the market's state)"
        ) from None
    if not snapshots and not segments:
        return None
    limit = to_seq if to_seq is not None else 1 << 63
    usable = [s for s in snapshots if s.first <= limit]
    engine = Engine(spec)
    if usable:
        chosen = usable[-1]
        found = snapshot.parse(_fetch(store, chosen.key), Path(chosen.key))
        if found is None:
            raise RestoreError(f"{chosen.key} is not a readable snapshot")
        engine = Engine.from_state(spec, found.state)
        if engine.seq != found.seq or engine.state_hash != found.state_hash:
            raise RestoreError(f"{chosen.key} does not restore to the state its header names")
    snapshot_seq = engine.seq
    used = 0
    while engine.seq < limit:
        following = [s for s in segments if s.first <= engine.seq + 1 < s.last + 1]
        if not following:
            later = [s for s in segments if s.first > engine.seq + 1]
            if later and later[0].first <= limit:
                raise RestoreError(
                    f"the archive has a gap: seq {engine.seq + 1} to {later[0].first - 1} is in "
                    f"no object (the next is {later[0].key})"
                )
            break
        segment = max(following, key=lambda s: s.last)
        _replay(engine, segment.key, _fetch(store, segment.key), limit)
        used += 1
    if to_seq is not None and engine.seq < to_seq:
        raise RestoreError(f"the archive ends at seq {engine.seq}, before {to_seq}")
    snapshot.write(data_dir / "snapshots", engine.seq, engine.state_hash, engine.to_state())
    seconds = time.perf_counter() - start
    log.info(
        "restored from the archive",
        extra={"seq": engine.seq, "snapshot_seq": snapshot_seq, "segments": used,
               "seconds": round(seconds, 3)},
    )  # fmt: skip
    return Restored(engine, snapshot_seq, used, seconds)


def _replay(engine: Engine, key: str, data: bytes, limit: int) -> None:
    """Execute the segment's commands after the engine's seq (up to `limit`), each checked
    against the state hash the WAL recorded after it."""
    try:
        records = [r for _, r in wal.scan(Path(key), data, last_segment=False) if r is not None]
    except wal.WalCorruption as exc:
        raise RestoreError(f"{key}: {exc}") from None
    execute = engine.execute
    for record in records:
        seq = record.first_seq
        for ts, cmd, _events, _correlation, recorded_hash in record.entries:
            if seq > limit:
                return
            if seq == engine.seq + 1:
                execute(cmd, seq, ts)
                if engine.state_hash != recorded_hash:
                    raise RestoreError(
                        f"{key}: state hash mismatch at seq {seq}: the archive does not replay "
                        "to the state it recorded"
                    )
            elif seq > engine.seq + 1:
                raise RestoreError(f"{key}: seq {seq} follows {engine.seq} (a gap inside it)")
            seq += 1


def _first_line(exc: Exception) -> str:
    """obstore's errors carry the whole error chain over many lines; the first says it."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
