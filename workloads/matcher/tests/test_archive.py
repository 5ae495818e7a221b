"""The archive against a real S3 server (SeaweedFS) and real matcher processes: sealed
segments and snapshots uploaded while trading, a lost volume restored from the archive
alone with the same state hash and book, a restore to a point, a corrupt object or a gap
named in the error, create-only writes that never overwrite, and a store that is gone
never stalling trading."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import obstore
import pytest

from contracts.v1 import matcher_pb2, matcher_pb2_grpc
from e2e.env.matcher import MatcherProcess, restore
from e2e.env.process import StartError, free_port
from e2e.env.s3 import S3Server
from workloads.common.objectstore import ObjectStoreSettings, open_store
from workloads.matcher.archive import ArchiveConflict, Archiver, segment_key
from workloads.matcher.restore import archived_objects
from workloads.matcher.tests.test_process import fund, order

pytestmark = pytest.mark.integration

SYMBOL = "BTC-USDT"
FAST = {  # small segments, frequent snapshots, a 1 s recovery point
    "MATCHER_WAL_SEGMENT_BYTES": "16384",
    "MATCHER_SNAPSHOT_EVERY": "700",
    "MATCHER_ARCHIVE_SEAL_SECONDS": "1",
}


def matcher_with_archive(run_dir: Path, archive: ObjectStoreSettings) -> MatcherProcess:
    return MatcherProcess(run_dir, extra_env={**FAST, **archive.env("MATCHER_ARCHIVE")})


async def status(stub: matcher_pb2_grpc.MatcherStub) -> matcher_pb2.MatcherStatus:
    found: matcher_pb2.MatcherStatus = await stub.GetStatus(
        matcher_pb2.GetStatusRequest(symbol=SYMBOL)
    )
    return found


async def trade(stub: matcher_pb2_grpc.MatcherStub, orders: range) -> None:
    for start in range(orders.start, orders.stop, 100):
        batch = [order(i) for i in range(start, min(start + 100, orders.stop))]
        reply = await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=batch))
        assert all(r.status == matcher_pb2.COMMAND_STATUS_ACCEPTED for r in reply.replies)


def restore_cli(
    archive: ObjectStoreSettings, data_dir: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return restore(archive, SYMBOL, data_dir, *args)


@dataclass
class Archived:
    """A market that traded 3,000 orders with its archive on, then lost its process (kill -9)."""

    archive: ObjectStoreSettings
    matcher: MatcherProcess
    seq: int
    state_hash: bytes
    book: matcher_pb2.OrderBookSnapshot


@pytest.fixture(scope="module")
def archived(run_dir: Path, s3_server: S3Server) -> Iterator[Archived]:
    archive = s3_server.settings(prefix="venue-archive-test")
    matcher = matcher_with_archive(run_dir / "archived", archive)
    matcher.start()
    try:
        seq, state_hash, book = asyncio.run(_trade_until_archived(matcher))
        matcher.kill()
        yield Archived(archive, matcher, seq, state_hash, book)
    finally:
        matcher.stop()


async def _trade_until_archived(
    matcher: MatcherProcess,
) -> tuple[int, bytes, matcher_pb2.OrderBookSnapshot]:
    """3,000 orders, then wait until the archive holds every one of them."""
    async with grpc.aio.insecure_channel(matcher.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        await stub.SubmitBatch(
            matcher_pb2.CommandBatch(commands=[fund("alice", "USDT"), fund("bob", "BTC")])
        )
        await trade(stub, range(3_000))
        before = await status(stub)
        assert before.archive_enabled
        for _ in range(200):  # sealed after 1 s, uploaded on the next pass
            now = await status(stub)
            if now.archive_last_seq == before.seq and now.archive_lag_seconds == 0:
                break
            await asyncio.sleep(0.1)
        assert now.archive_last_seq == before.seq, now
        assert now.archive_last_error == ""
        book = await stub.GetOrderBook(matcher_pb2.GetOrderBookRequest(symbol=SYMBOL, depth=100))
    return before.seq, before.state_hash, book


async def test_sealed_segments_and_snapshots_are_archived_while_trading(
    archived: Archived,
) -> None:
    snapshots, segments = archived_objects(open_store(archived.archive), SYMBOL)
    assert len(segments) > 5 and snapshots  # 16 KiB segments, a snapshot every 700 commands
    assert segments[0].first == 1 and segments[-1].last == archived.seq
    for previous, following in itertools.pairwise(segments):
        assert following.first == previous.last + 1  # contiguous, nothing twice
    head = obstore.get(open_store(archived.archive), segments[0].key)
    assert set(head.attributes) >= {"sha256", "epoch"}


async def test_a_lost_volume_comes_back_from_the_archive_with_the_same_state(
    archived: Archived,
) -> None:
    shutil.rmtree(archived.matcher.data_dir)  # the volume is gone
    archived.matcher.start()
    async with grpc.aio.insecure_channel(archived.matcher.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        now = await status(stub)
        assert now.seq == archived.seq + 1  # everything, then the new epoch's EpochStarted
        assert now.epoch == 2
        book = await stub.GetOrderBook(matcher_pb2.GetOrderBookRequest(symbol=SYMBOL, depth=100))
        assert (book.bids, book.asks) == (archived.book.bids, archived.book.asks)
        reply = await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=[order(10_000)]))
        assert reply.replies[0].status == matcher_pb2.COMMAND_STATUS_ACCEPTED  # trading resumes
        resent = await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=[order(2_999)]))
        assert resent.replies[0].status == matcher_pb2.COMMAND_STATUS_DUPLICATE
    archived.matcher.stop()


async def test_a_restore_to_a_point_reaches_the_state_hash_recorded_there(
    archived: Archived, tmp_path: Path
) -> None:
    done = restore_cli(archived.archive, tmp_path / "at-end", "--to-seq", str(archived.seq))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["seq"] == archived.seq
    assert bytes.fromhex(result["state_hash"]) == archived.state_hash
    assert (tmp_path / "at-end" / "snapshots").is_dir()
    middle = restore_cli(archived.archive, tmp_path / "middle", "--to-seq", "1234")
    assert middle.returncode == 0, middle.stderr
    assert json.loads(middle.stdout)["seq"] == 1234
    beyond = restore_cli(archived.archive, tmp_path / "beyond", "--to-seq", str(10**9))
    assert beyond.returncode != 0 and "the archive ends at seq" in beyond.stderr


async def test_a_corrupt_object_or_a_gap_fails_the_restore_and_names_the_object(
    archived: Archived, s3_server: S3Server, tmp_path: Path
) -> None:
    # A copy of the archive's segments (no snapshot: the restore replays them all) under
    # another prefix, damaged two ways.
    source = open_store(archived.archive)
    _, segments = archived_objects(source, SYMBOL)
    copy = s3_server.settings(prefix="venue-archive-damaged")
    target = open_store(copy)
    for segment in segments:
        got = obstore.get(source, segment.key)
        obstore.put(target, segment.key, bytes(got.bytes()), attributes=got.attributes)
    victim = segments[len(segments) // 2]
    original = bytes(obstore.get(target, victim.key).bytes())
    flipped = original[:100] + bytes([original[100] ^ 0xFF]) + original[101:]
    sha = hashlib.sha256(original).hexdigest()  # the checksum it was archived with
    obstore.put(target, victim.key, flipped, attributes={"sha256": sha})
    corrupt = restore_cli(copy, tmp_path / "corrupt")
    assert corrupt.returncode != 0
    assert f"{victim.key} is corrupt" in corrupt.stderr

    obstore.delete(target, victim.key)  # now a gap instead
    gap = restore_cli(copy, tmp_path / "gap")
    assert gap.returncode != 0
    assert "the archive has a gap" in gap.stderr
    assert segments[len(segments) // 2 + 1].key in gap.stderr


async def test_an_archived_object_is_never_overwritten_by_a_second_writer(
    s3_server: S3Server, tmp_path: Path
) -> None:
    store = open_store(s3_server.settings(prefix="venue-create-only"))
    archiver = Archiver(store, SYMBOL, tmp_path, seal=lambda: asyncio.sleep(0, False))
    key = segment_key(SYMBOL, 1, 10)
    await archiver._upload("wal", key, b"the successor's segment", {"epoch": "2"})
    await archiver._upload("wal", key, b"the successor's segment", {"epoch": "2"})  # present
    with pytest.raises(ArchiveConflict, match=key):
        await archiver._upload("wal", key, b"a deposed leader's segment", {"epoch": "1"})
    kept = await (await obstore.get_async(store, key)).bytes_async()
    assert bytes(kept) == b"the successor's segment"


async def test_a_store_that_is_gone_never_stalls_trading_and_the_status_says_so(
    run_dir: Path,
) -> None:
    gone = ObjectStoreSettings(f"http://127.0.0.1:{free_port()}", "nowhere", "k", "s")
    matcher = matcher_with_archive(run_dir / "no-store", gone)
    # An empty volume needs its archive (it may hold the market): the start says so.
    with pytest.raises(StartError, match="cannot list the archive of BTC-USDT"):
        matcher.start(timeout=20)
    # A market with a volume of its own trades whatever the store does.
    matcher.extra_env["MATCHER_ARCHIVE_ENDPOINT"] = ""
    matcher.start()
    matcher.stop()
    matcher.extra_env["MATCHER_ARCHIVE_ENDPOINT"] = gone.endpoint
    matcher.start()
    try:
        async with grpc.aio.insecure_channel(matcher.target) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            await stub.SubmitBatch(
                matcher_pb2.CommandBatch(commands=[fund("alice", "USDT"), fund("bob", "BTC")])
            )
            await trade(stub, range(2_000))  # every order accepted, whatever the store does

            async def reported() -> matcher_pb2.MatcherStatus | None:
                now = await status(stub)
                return now if now.archive_last_error and now.archive_lag_seconds > 1 else None

            found = None
            for _ in range(100):
                found = await reported()
                if found is not None:
                    break
                await asyncio.sleep(0.2)
            assert found is not None, await status(stub)
            assert found.archive_last_seq == 0
        # Nothing was archived, so nothing was pruned: the whole log is still on disk.
        segments = sorted((matcher.data_dir / "wal").glob("*.wal"))
        assert len(segments) > 3 and segments[0].name == f"{1:020d}.wal"
        metrics = await asyncio.to_thread(matcher.metrics)
        assert 'matcher_archive_uploads_total{kind="any",outcome="error"}' in metrics
    finally:
        matcher.stop()


async def test_retention_keeps_the_newest_snapshots_and_what_follows_them(
    archived: Archived, s3_server: S3Server, tmp_path: Path
) -> None:
    source = open_store(archived.archive)
    copy = s3_server.settings(prefix="venue-archive-retained")
    target = open_store(copy)
    snapshots, segments = archived_objects(source, SYMBOL)
    assert len(snapshots) >= 2
    for item in (*snapshots, *segments):
        got = obstore.get(source, item.key)
        obstore.put(target, item.key, bytes(got.bytes()), attributes=got.attributes)
    archiver = Archiver(
        target, SYMBOL, tmp_path, seal=lambda: asyncio.sleep(0, False), keep_snapshots=1
    )
    await archiver._retain()
    kept_snapshots, kept_segments = archived_objects(target, SYMBOL)
    assert kept_snapshots == snapshots[-1:]
    assert kept_segments == [s for s in segments if s.last > snapshots[-1].first]
    restored = restore_cli(copy, tmp_path / "retained")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["seq"] == segments[-1].last


async def test_wrong_credentials_or_a_missing_bucket_stop_the_start_with_a_clear_error(
    run_dir: Path, s3_server: S3Server
) -> None:
    good = s3_server.settings(prefix="venue-wrong-credentials")
    matcher = matcher_with_archive(run_dir / "wrong-credentials", good)
    matcher.extra_env["MATCHER_ARCHIVE_ENDPOINT"] = ""  # a volume of its own first
    matcher.start()
    matcher.stop()
    for wrong, says in (
        (replace(good, secret_access_key="not-the-secret"), "refuses the credentials"),
        (replace(good, bucket="no-such-bucket"), "has no such bucket"),
    ):
        matcher.extra_env.update(wrong.env("MATCHER_ARCHIVE"))
        with pytest.raises(StartError, match=says):
            matcher.start(timeout=20)
        matcher.stop()
