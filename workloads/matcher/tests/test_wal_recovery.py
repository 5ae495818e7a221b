"""WAL framing, torn tails, corruption, snapshots and hash-checked recovery on a real disk."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from workloads.matcher import engine as e
from workloads.matcher import recovery, snapshot, wal
from workloads.matcher.epoch import FileEpoch
from workloads.matcher.sequencer import Sequencer, SequencerSettings
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.unit

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT", maker_fee_bps=10, taker_fee_bps=20)


def script(count: int) -> list[tuple[Any, ...]]:
    """Funding, then alternating crossing orders and some cancels: trades on most steps."""
    cmds: list[tuple[Any, ...]] = [
        (e.C_FUNDING, "f-a", "alice", "BTC", 10**9, e.CREDIT),
        (e.C_FUNDING, "f-b", "bob", "USDT", 10**12, e.CREDIT),
    ]
    for i in range(count - 2):
        if i % 5 == 4:
            cmds.append((e.C_CANCEL, "alice", i + 1, ""))
        elif i % 2:
            cmds.append(
                (e.C_PLACE, "alice", f"a{i}", e.SELL, e.LIMIT, e.GTC, 100 + i % 7, 3, False, 0)
            )
        else:
            cmds.append(
                (e.C_PLACE, "bob", f"b{i}", e.BUY, e.LIMIT, e.GTC, 100 + i % 5, 2, False, 0)
            )
    return cmds


async def run_sequencer(data_dir: Path, cmds: list[tuple[Any, ...]], **settings: Any) -> Sequencer:
    recovered = recovery.recover(SPEC, data_dir)
    fencing = FileEpoch(data_dir / "epoch", "test")
    epoch = await fencing.acquire()
    seq = Sequencer(
        recovered.engine,
        data_dir,
        epoch,
        fencing,
        SequencerSettings(**settings),
        snapshot_seq=recovered.snapshot_seq,
    )
    seq.start()
    # Many concurrent callers, so that group commit has something to group.
    chunks = [cmds[i : i + 7] for i in range(0, len(cmds), 7)]
    await asyncio.gather(*(seq.submit([(c, "corr") for c in chunk]) for chunk in chunks))
    return seq


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def replay_in_subprocess(data_dir: Path) -> tuple[int, ...]:
    code = (
        "import sys; from pathlib import Path\n"
        "from workloads.matcher import recovery\n"
        "from workloads.matcher.tests.test_wal_recovery import SPEC\n"
        "r = recovery.recover(SPEC, Path(sys.argv[1]))\n"
        "print(r.engine.seq, r.engine.state_hash)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # salted str hashing must not matter
    out = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return tuple(int(x) for x in out.stdout.split())


def straight_hash(cmds: list[tuple[Any, ...]]) -> tuple[int, int]:
    engine = e.Engine(SPEC)
    for seq, cmd in enumerate(cmds, 1):
        engine.execute(cmd, seq, seq)
    return engine.seq, engine.state_hash


async def test_group_commit_covers_many_commands_per_fsync_and_recovers(tmp_path: Path) -> None:
    cmds = script(3_000)
    seq = await run_sequencer(tmp_path, cmds, max_batch=500)
    assert seq.durable_seq == seq.engine.seq == 3_000
    records = list(wal.read(tmp_path / "wal"))
    assert sum(r.count for r in records) == 3_000
    assert len(records) < 3_000 / 5, "fsyncs were not grouped"
    assert max(r.count for r in records) <= 500
    expected_hash = seq.engine.state_hash
    await seq.close()

    recovered = recovery.recover(SPEC, tmp_path)
    assert (recovered.engine.seq, recovered.engine.state_hash) == (3_000, expected_hash)
    assert recovered.replayed == 3_000


async def test_snapshot_plus_tail_and_segment_rotation(tmp_path: Path) -> None:
    cmds = script(4_000)
    seq = await run_sequencer(
        tmp_path, cmds[:2_500], snapshot_every=0, segment_bytes=16 * 1024, max_batch=200
    )
    await seq.snapshot()
    chunks = [(c, "") for c in cmds[2_500:]]
    await seq.submit(chunks)
    final_hash = seq.engine.state_hash
    await seq.close()
    assert len(wal.segments(tmp_path / "wal")) > 3, "segments did not rotate"
    snap = snapshot.load_latest(tmp_path / "snapshots")
    assert snap is not None and snap.seq == 2_500

    recovered = recovery.recover(SPEC, tmp_path)
    assert recovered.snapshot_seq == 2_500
    assert recovered.replayed == 1_500
    assert recovered.engine.state_hash == final_hash


async def test_compaction_keeps_what_recovery_and_the_outbox_still_need(tmp_path: Path) -> None:
    cmds = script(4_000)
    seq = await run_sequencer(
        tmp_path, cmds[:3_000], snapshot_every=0, segment_bytes=16 * 1024, max_batch=200
    )
    await seq.snapshot()
    before = wal.segments(tmp_path / "wal")
    assert await seq.compact(published_seq=1_000) > 0  # the outbox still needs 1,001 on
    kept = wal.segments(tmp_path / "wal")
    assert len(kept) < len(before)
    assert next(wal.read(tmp_path / "wal", 1_001)).first_seq <= 1_001
    assert await seq.compact(published_seq=3_000) > 0
    await seq.submit([(c, "") for c in cmds[3_000:]])
    final_hash = seq.engine.state_hash
    await seq.close()
    recovered = recovery.recover(SPEC, tmp_path)
    assert (recovered.engine.seq, recovered.engine.state_hash) == (4_000, final_hash)


async def test_periodic_snapshots_follow_the_durable_log(tmp_path: Path) -> None:
    seq = await run_sequencer(tmp_path, script(2_500), snapshot_every=1_000, max_batch=100)
    await seq.close()
    snap = snapshot.load_latest(tmp_path / "snapshots")
    assert snap is not None and 1_000 <= snap.seq <= 2_500
    assert snap.seq <= seq.durable_seq


async def test_torn_tail_is_truncated_and_acknowledged_commands_survive(tmp_path: Path) -> None:
    seq = await run_sequencer(tmp_path, script(600), max_batch=100)
    durable_hash = seq.engine.state_hash
    await seq.close()
    newest = wal.segments(tmp_path / "wal")[-1]
    good_size = newest.stat().st_size
    torn = wal.encode(601, 1, 0, [[1, (e.C_SET_MODE, e.NORMAL, "x"), [], "", 0]])
    append(newest, torn[: len(torn) // 2])  # a crash in the middle of a write

    recovered = recovery.recover(SPEC, tmp_path)
    assert (recovered.engine.seq, recovered.engine.state_hash) == (600, durable_hash)
    assert newest.stat().st_size == good_size, "torn tail not truncated"


async def test_corruption_in_the_middle_refuses_to_start_naming_file_and_offset(
    tmp_path: Path,
) -> None:
    seq = await run_sequencer(tmp_path, script(600), max_batch=100)
    await seq.close()
    newest = wal.segments(tmp_path / "wal")[-1]
    records = list(wal.read(tmp_path / "wal"))
    assert len(records) > 2
    data = bytearray(newest.read_bytes())
    data[wal.HEADER.size + 10] ^= 0xFF  # inside the first record's payload
    newest.write_bytes(bytes(data))

    with pytest.raises(wal.WalCorruption) as refused:
        recovery.recover(SPEC, tmp_path)
    assert refused.value.path == newest
    assert refused.value.offset == 0
    assert str(newest) in str(refused.value) and "offset 0" in str(refused.value)


def test_recovery_checks_the_recorded_hash(tmp_path: Path) -> None:
    cmds = script(50)
    engine = e.Engine(SPEC)
    entries: list[list[Any]] = []
    for seq, cmd in enumerate(cmds, 1):
        events = engine.execute(cmd, seq, seq)
        entries.append([seq, cmd, events, "", engine.state_hash])
    entries[30][4] ^= 1  # a log that does not describe this engine
    writer = wal.WalWriter(tmp_path / "wal", 1)
    writer.write(wal.encode(1, 1, entries[-1][4], entries), 1)
    writer.sync()
    writer.close()
    with pytest.raises(recovery.RecoveryError, match="state hash mismatch at seq 31"):
        recovery.recover(SPEC, tmp_path)


def test_damaged_newest_snapshot_falls_back_to_the_older_one(tmp_path: Path) -> None:
    snapshot.write(tmp_path, 10, 111, {"a": 1})
    newest = snapshot.write(tmp_path, 20, 222, {"a": 2})
    newest.write_bytes(newest.read_bytes()[:-1] + b"\x00")
    loaded = snapshot.load_latest(tmp_path)
    assert loaded is not None and (loaded.seq, loaded.state_hash) == (10, 111)


@pytest.mark.integration
async def test_a_fresh_process_replays_the_log_to_the_same_hash(tmp_path: Path) -> None:
    cmds = script(2_000)
    seq = await run_sequencer(tmp_path, cmds)
    expected = (seq.engine.seq, seq.engine.state_hash)
    await seq.close()
    assert expected == straight_hash(cmds)
    assert replay_in_subprocess(tmp_path) == expected
