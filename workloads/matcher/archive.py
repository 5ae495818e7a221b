"""The archive: every sealed WAL segment and every snapshot of a market, in an S3 store.

The WAL is the market's journal (every command, with the state hash after it), so the
archive is both its disaster recovery (`restore.py` rebuilds a market from it alone) and
its audit trail. The leader's `Archiver` runs beside the hot path, never on it: a
background task that reads sealed files from disk and uploads them; a store that is slow
or gone makes the archive lag (status, metrics, an alert), never a command wait.

Objects, under the store's prefix (the venue) and the market's symbol:

    <symbol>/wal/<first seq, 20 digits>-<last seq, 20 digits>.wal
    <symbol>/snapshots/<seq, 20 digits>.snap

each with its SHA-256, and for segments the last record's epoch, in the object's metadata.
Writes are create-only (`If-None-Match: *`): an object, once archived, is never replaced.
A second upload of the same range (a restarted leader, or its successor with the same
segment boundaries) finds it there; identical bytes count as archived, different bytes are
a conflict: counted, logged, reported in the status, and the local segment is kept. A
deposed leader can therefore never overwrite what its successor archived.

An upload counts only once verified: the store reports the object's size, and its ETag,
when it is the MD5 of the bytes (single-part uploads), matches. Only archived segments may
be pruned locally (`unarchived_from` bounds the compaction). A segment is sealed when the
WAL rotates at its size limit or when it has held unarchived commands for `seal_after`
seconds (the archive's recovery point, like PostgreSQL's `archive_timeout`).

Retention: the newest `keep_snapshots` archived snapshots, and every segment after the
oldest of them; older objects are deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.store import S3Store
from prometheus_client import Counter, Gauge, Histogram

from workloads.matcher import snapshot, wal

log = logging.getLogger(__name__)

UPLOADS = Counter(
    "matcher_archive_uploads_total",
    "Archive uploads by kind (wal, snapshot) and outcome (archived, present, conflict, error)",
    ["kind", "outcome"],
)
LAST_SEQ = Gauge("matcher_archive_last_seq", "Highest seq in an archived, verified WAL segment")
DELAY_SECONDS = Histogram(
    "matcher_archive_delay_seconds",
    "From a WAL segment's last write (its seal) until its upload was verified",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
LAG_SECONDS = Gauge(
    "matcher_archive_lag_seconds",
    "How long the oldest sealed WAL segment not yet archived has waited (0: none)",
)

SEGMENT_KEY = re.compile(r"(?:^|/)wal/(\d{20})-(\d{20})\.wal$")
SNAPSHOT_KEY = re.compile(r"(?:^|/)snapshots/(\d{20})\.snap$")


def segment_key(symbol: str, first: int, last: int) -> str:
    return f"{symbol}/wal/{first:020d}-{last:020d}.wal"


def snapshot_key(symbol: str, seq: int) -> str:
    return f"{symbol}/snapshots/{seq:020d}.snap"


@dataclass(frozen=True, order=True)
class ArchivedObject:
    """An object of the archive: a segment's seq range, or a snapshot's seq (first = last)."""

    first: int
    last: int
    key: str


def classify(keys: Iterable[str]) -> tuple[list[ArchivedObject], list[ArchivedObject]]:
    """(snapshots, segments) among the listed `keys`, each sorted by seq."""
    snapshots, segments = [], []
    for key in keys:
        if found := SNAPSHOT_KEY.search(key):
            snapshots.append(ArchivedObject(int(found[1]), int(found[1]), key))
        elif found := SEGMENT_KEY.search(key):
            segments.append(ArchivedObject(int(found[1]), int(found[2]), key))
    return sorted(snapshots), sorted(segments)


async def listing(store: S3Store, symbol: str) -> tuple[list[ArchivedObject], list[ArchivedObject]]:
    """(snapshots, segments) archived for `symbol` (keys relative to the store's prefix)."""
    return classify(
        [meta["path"] async for batch in obstore.list(store, prefix=f"{symbol}/") for meta in batch]
    )


@dataclass(frozen=True)
class ArchiveStatus:
    last_seq: int
    lag_seconds: float
    last_error: str


class ArchiveRefused(RuntimeError):
    """The store refuses this matcher's credentials or has no such bucket: a setting to fix,
    not a fault to wait out (the matcher does not start)."""


async def check_store(store: S3Store, symbol: str) -> str:
    """One listing at start: `ArchiveRefused` for wrong credentials (401/403) or a missing
    bucket (404); "" when the store answers; the error when it cannot be reached (the
    matcher starts anyway: an unreachable store only makes the archive lag)."""
    try:
        stream = obstore.list(store, prefix=f"{symbol}/", chunk_size=1)
        await asyncio.wait_for(anext(aiter(stream)), 5.0)
    except StopAsyncIteration:
        return ""
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        for status, what in (("401", "refuses the credentials"), ("403", "refuses the "
                             "credentials"), ("404", "has no such bucket")):  # fmt: skip
            if f"status code: {status}" in text:
                raise ArchiveRefused(f"the archive's store {what}: {text[:300]}") from None
        return text[:300]
    return ""


class ArchiveConflict(RuntimeError):
    """The store holds different bytes under an object this matcher would write."""


@dataclass(frozen=True)
class Segment:
    """A sealed local segment, read and checked: what its object will say about it."""

    path: Path
    data: bytes
    first_seq: int
    last_seq: int
    epoch: int
    sealed_at: float
    """Its last write (the wall clock): when it was sealed."""

    @classmethod
    def read(cls, path: Path) -> Segment | None:
        """None for a segment without records (nothing to archive)."""
        sealed_at = path.stat().st_mtime
        data = path.read_bytes()
        records = [r for _, r in wal.scan(path, data, last_segment=False) if r is not None]
        if not records:
            return None
        first, last = records[0], records[-1]
        return cls(path, data, first.first_seq, last.last_seq, last.epoch, sealed_at)


class Archiver:
    """Uploads the leader's sealed segments and snapshots; see the module's docstring."""

    def __init__(
        self,
        store: S3Store,
        symbol: str,
        data_dir: Path,
        seal: Callable[[], Awaitable[bool]],
        *,
        keep_snapshots: int = 3,
        seal_after: float = 60.0,
        interval: float = 1.0,
    ) -> None:
        self.store = store
        self.symbol = symbol
        self.wal_dir = data_dir / "wal"
        self.snapshot_dir = data_dir / "snapshots"
        self.seal = seal
        self.keep_snapshots = keep_snapshots
        self.seal_after = seal_after
        self.interval = interval
        self.archived: set[str] = set()
        """Local file names (segments and snapshots) whose objects are archived and verified."""
        self.last_seq = 0
        self.last_error = ""
        self._listed = False
        self._waiting_since: dict[str, float] = {}  # sealed, not yet archived: since when
        self._holding_since: float | None = None  # the open segment has held records since
        self._retained_at = 0.0

    # ------------------------------------------------------------------ what others read

    def status(self) -> ArchiveStatus:
        now = time.monotonic()
        oldest = min(self._waiting_since.values(), default=now)
        return ArchiveStatus(self.last_seq, round(now - oldest, 3), self.last_error)

    def unarchived_from(self) -> int | None:
        """The first seq of the oldest local segment not yet archived (sealed or not): local
        compaction must keep it and everything after it."""
        for path in wal.segments(self.wal_dir):
            if path.name not in self.archived:
                return int(path.stem)
        return None

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        while True:
            await self.archive_once()
            await asyncio.sleep(self.interval)

    async def archive_once(self) -> None:
        """One pass: list the store once, seal an old open segment, upload what is sealed,
        apply retention now and then. An error is recorded and retried on the next pass."""
        sealed = wal.segments(self.wal_dir)[:-1]
        now = time.monotonic()
        for path in sealed:
            if path.name not in self.archived:
                self._waiting_since.setdefault(path.name, now)
        try:
            if not self._listed:
                await self._list()
            await self._seal_if_old()
            conflicts = []
            for path in sealed:
                if path.name not in self.archived:
                    try:
                        await self._archive_segment(path)
                    except ArchiveConflict as exc:  # kept locally; the later ones go on
                        conflicts.append(str(exc))
            latest = snapshot.latest_path(self.snapshot_dir)
            if latest is not None and latest.name not in self.archived:
                await self._archive_snapshot(latest)
            if time.monotonic() - self._retained_at > 60:
                await self._retain()
                self._retained_at = time.monotonic()
            self.last_error = "; ".join(conflicts)
        except ArchiveConflict as exc:
            self.last_error = str(exc)
        except Exception as exc:
            UPLOADS.labels("any", "error").inc()
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("archive pass failed", extra={"why": self.last_error})
        finally:
            LAG_SECONDS.set(self.status().lag_seconds)

    async def drain(self) -> None:
        """At a graceful stop: seal the open segment and archive it, so that a restore from
        the archive finds every command this leader wrote (the caller bounds the time)."""
        await self.seal()
        while self.last_error == "" and self._pending():
            await self.archive_once()
            if self._pending():
                await asyncio.sleep(0.2)

    def _pending(self) -> bool:
        return any(p.name not in self.archived for p in wal.segments(self.wal_dir)[:-1])

    # ------------------------------------------------------------------ steps

    async def _list(self) -> None:
        """What is archived already (a restart, or a new leader): the highest seq, and the
        snapshots (one seq, one state). Local segments are offered again: the create-only
        upload finds an identical object and counts it (boundaries may differ between
        leaders, so a name alone proves nothing)."""
        snapshots, segments = await listing(self.store, self.symbol)
        self.last_seq = max([self.last_seq, *(s.last for s in segments)])
        for archived in snapshots:
            self._done(f"{archived.first:020d}{snapshot.SUFFIX}")
        self._listed = True
        LAST_SEQ.set(self.last_seq)

    async def _seal_if_old(self) -> None:
        files = wal.segments(self.wal_dir)
        holding = bool(files) and files[-1].stat().st_size > 0
        if not holding:
            self._holding_since = None
            return
        now = time.monotonic()
        if self._holding_since is None:
            self._holding_since = now
        elif now - self._holding_since >= self.seal_after and await self.seal():
            self._holding_since = None

    async def _archive_segment(self, path: Path) -> None:
        segment = await asyncio.to_thread(Segment.read, path)
        if segment is None:
            self._done(path.name)
            return
        key = segment_key(self.symbol, segment.first_seq, segment.last_seq)
        metadata = {"epoch": str(segment.epoch)}
        await self._upload("wal", key, segment.data, metadata)
        delay = max(time.time() - segment.sealed_at, 0.0)
        DELAY_SECONDS.observe(delay)
        self._done(path.name)
        self.last_seq = max(self.last_seq, segment.last_seq)
        LAST_SEQ.set(self.last_seq)
        log.info("archived", extra={"object": key, "bytes": len(segment.data),
                                    "last_seq": segment.last_seq,
                                    "sealed_for_s": round(delay, 3)})  # fmt: skip

    async def _archive_snapshot(self, path: Path) -> None:
        data = await asyncio.to_thread(path.read_bytes)
        found = snapshot.parse(data, path)
        if found is None:
            return  # damaged or half-written: the next snapshot will do
        key = snapshot_key(self.symbol, found.seq)
        await self._upload("snapshot", key, data, {"state-hash": str(found.state_hash)})
        self._done(path.name)
        log.info("archived", extra={"object": key, "bytes": len(data)})

    def _done(self, name: str) -> None:
        self.archived.add(name)
        self._waiting_since.pop(name, None)

    async def _upload(self, kind: str, key: str, data: bytes, metadata: dict[str, str]) -> None:
        """Create-only upload, then verification; an object already there with the same
        bytes is as good as archived, with other bytes it is a conflict."""
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            await obstore.put_async(
                self.store, key, data, mode="create", attributes={**metadata, "sha256": sha256}
            )
        except AlreadyExistsError:
            existing = await (await obstore.get_async(self.store, key)).bytes_async()
            if hashlib.sha256(bytes(existing)).hexdigest() != sha256:
                UPLOADS.labels(kind, "conflict").inc()
                log.error("archive conflict: kept the archived object and the local file",
                          extra={"object": key})  # fmt: skip
                raise ArchiveConflict(
                    f"{key} is archived with other bytes than the local copy; neither is "
                    "changed (a deposed leader's segment?)"
                ) from None
            UPLOADS.labels(kind, "present").inc()
            return
        meta = await obstore.head_async(self.store, key)
        etag = (meta["e_tag"] or "").strip('"')
        if meta["size"] != len(data) or (
            re.fullmatch(r"[0-9a-f]{32}", etag) and etag != hashlib.md5(data).hexdigest()
        ):
            UPLOADS.labels(kind, "error").inc()
            raise RuntimeError(f"{key}: the store holds {meta['size']} bytes (ETag {etag}), "
                               f"not the {len(data)} uploaded")  # fmt: skip
        UPLOADS.labels(kind, "archived").inc()

    async def _retain(self) -> None:
        """Keep the newest `keep_snapshots` snapshots and every segment after the oldest
        of them; delete older objects."""
        snapshots, segments = await listing(self.store, self.symbol)
        if len(snapshots) <= self.keep_snapshots:
            return
        oldest_kept = snapshots[-self.keep_snapshots].first
        doomed = snapshots[: -self.keep_snapshots] + [s for s in segments if s.last <= oldest_kept]
        for archived in doomed:
            await obstore.delete_async(self.store, archived.key)  # keys are prefix-relative
        log.info("archive retention", extra={"deleted": len(doomed), "from_seq": oldest_kept})
