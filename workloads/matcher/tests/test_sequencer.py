"""The pipelined group commit: nothing is released before its fsync, groups overlap with
execution, and a failing disk stops everything rather than acknowledge what is not durable."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from workloads.matcher import engine as e
from workloads.matcher import recovery, wal
from workloads.matcher.epoch import FileEpoch
from workloads.matcher.sequencer import Sequencer, SequencerFailed, SequencerSettings
from workloads.matcher.tests.test_wal_recovery import SPEC, script

pytestmark = pytest.mark.unit


async def started(data_dir: Path, **settings: Any) -> Sequencer:
    fencing = FileEpoch(data_dir / "epoch", "test")
    sequencer = Sequencer(
        e.Engine(SPEC), data_dir, await fencing.acquire(), fencing, SequencerSettings(**settings)
    )
    sequencer.start()
    return sequencer


async def test_results_wait_for_their_fsync_while_the_next_group_executes(
    tmp_path: Path,
) -> None:
    sequencer = await started(tmp_path, max_batch=300)
    synced = 0  # highest seq an fsync has returned for
    executed_while_writing = 0
    original_sync = sequencer.writer.sync
    original_write = sequencer.writer.write
    written = 0
    lock = threading.Lock()

    def write(record: bytes, first_seq: int) -> None:
        nonlocal written
        original_write(record, first_seq)
        written = first_seq + wal.HEADER.unpack_from(record)[3] - 1

    def sync() -> None:
        nonlocal synced
        original_sync()
        with lock:
            synced = written

    sequencer.writer.write = write  # type: ignore[method-assign]
    sequencer.writer.sync = sync  # type: ignore[method-assign]

    cmds = script(4_000)
    chunks = [cmds[i : i + 9] for i in range(0, len(cmds), 9)]

    async def caller(index: int, chunk: list[tuple[Any, ...]]) -> None:
        nonlocal executed_while_writing
        await asyncio.sleep(index % 40 * 0.0005)  # arrivals spread over the writes
        executed_while_writing += sequencer._writing
        executed = await sequencer.submit([(c, "") for c in chunk])
        with lock:
            assert synced >= executed.last_seq, "released before its fsync returned"
        assert [r.seq for r in executed.results()] == list(
            range(executed.first_seq, executed.last_seq + 1)
        )

    await asyncio.gather(*(caller(i, chunk) for i, chunk in enumerate(chunks)))
    await sequencer.close()
    assert executed_while_writing > 0, "no command executed while a group was being written"
    records = list(wal.read(tmp_path / "wal"))
    assert sum(r.count for r in records) == 4_000
    assert max(r.count for r in records) <= 300
    recovered = recovery.recover(SPEC, tmp_path)
    assert recovered.engine.state_hash == sequencer.engine.state_hash


async def test_duplicates_keep_their_place_in_a_batch(tmp_path: Path) -> None:
    sequencer = await started(tmp_path)
    fund = (e.C_FUNDING, "f", "alice", "USDT", 10**9, e.CREDIT)
    order = (e.C_PLACE, "alice", "o-1", e.BUY, e.LIMIT, e.GTC, 100, 1, False, 0)
    first = await sequencer.submit([(fund, "a"), (order, "b")])
    again = await sequencer.submit([(fund, "c"), ((e.C_CANCEL_ALL, "bob"), "x"), (order, "d")])
    results = list(again.results())
    assert [r.status for r in results] == [e.DUPLICATE, e.ACCEPTED, e.DUPLICATE]
    assert [r.seq for r in results] == [1, 3, 2]
    assert results[2].order_id == list(first.results())[1].order_id == 2
    assert [r.correlation_id for r in results] == ["c", "x", "d"]
    await sequencer.close()


async def test_a_failing_disk_fails_every_waiter_and_refuses_more(tmp_path: Path) -> None:
    sequencer = await started(tmp_path)
    await sequencer.submit([((e.C_FUNDING, "f", "alice", "USDT", 10**9, e.CREDIT), "")])

    def broken(record: bytes, first_seq: int) -> None:
        raise OSError(28, "No space left on device")

    sequencer.writer.write = broken  # type: ignore[method-assign]
    cmds = script(200)[2:]
    waiting = [
        asyncio.ensure_future(sequencer.submit([(c, "")])) for c in cmds[:50]
    ]  # one group in the WAL thread, the rest pending behind it
    done = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(outcome, SequencerFailed) for outcome in done)
    assert sequencer.durable_seq == 1
    with pytest.raises(SequencerFailed):
        sequencer.execute_nowait([(cmds[60], "")])
    await sequencer.close()
