"""WAL replication between a leader's sequencer and a standby, over a real gRPC stream on
127.0.0.1: the standby replays every command to the leader's hash, the commit line waits for
it while it is in sync and goes on alone when it is not, a standby resumes from its own log,
and one whose log left the leader's starts over from the leader's snapshot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from contracts.v1 import replication_pb2_grpc
from e2e.env.process import free_port
from workloads.matcher import engine as e
from workloads.matcher import recovery, wal
from workloads.matcher.epoch import FileEpoch
from workloads.matcher.replication import Replication
from workloads.matcher.sequencer import Sequencer, SequencerSettings
from workloads.matcher.standby import Diverged, Standby
from workloads.matcher.tests.test_wal_recovery import SPEC, script

pytestmark = pytest.mark.integration


@dataclass
class Leader:
    sequencer: Sequencer
    replication: Replication
    server: grpc.aio.Server
    target: str

    async def run(self, commands: list[tuple[Any, ...]], per_call: int = 20) -> None:
        for start in range(0, len(commands), per_call):
            chunk = commands[start : start + per_call]
            await self.sequencer.submit([(cmd, "") for cmd in chunk])


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[Leader]:
    data = tmp_path / "leader"
    fencing = FileEpoch(data / "epoch", "leader")
    sequencer = Sequencer(
        e.Engine(SPEC), data, await fencing.acquire(), fencing,
        SequencerSettings(snapshot_every=0),
    )  # fmt: skip
    sequencer.start()
    replication = Replication(sequencer, data, sequencer.epoch, sync_timeout=0.3)
    replication.start()
    server = grpc.aio.server()
    replication_pb2_grpc.add_ReplicationServicer_to_server(replication, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    yield Leader(sequencer, replication, server, f"127.0.0.1:{port}")
    await server.stop(0)
    await replication.stop()
    await sequencer.close()


def standby_at(directory: Path) -> Standby:
    recovered = recovery.recover(SPEC, directory)
    return Standby(SPEC, directory, recovered.engine, "standby-0")


async def until(check: Any, what: str, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {within}s")
        await asyncio.sleep(0.01)


async def test_the_standby_replays_to_the_leaders_hash_and_the_commit_waits_for_it(
    leader: Leader, tmp_path: Path
) -> None:
    commands = script(3_000)
    await leader.run(commands[:1_000])  # a backlog on the leader's disk before it connects
    standby = standby_at(tmp_path / "standby")
    following = asyncio.create_task(standby.follow(leader.target))
    await until(lambda: leader.replication.in_sync, "the standby in sync")
    assert standby.engine.state_hash == leader.sequencer.engine.state_hash

    # In sync: nothing is committed that the standby does not have.
    committed = []

    async def observe() -> None:
        while True:
            committed.append((leader.sequencer.committed_seq, standby.durable_seq))
            await asyncio.sleep(0)

    observer = asyncio.create_task(observe())
    await leader.run(commands[1_000:])
    observer.cancel()
    assert all(commit <= durable for commit, durable in committed)
    await until(lambda: standby.durable_seq == leader.sequencer.engine.seq, "the standby's fsync")
    assert standby.engine.state_hash == leader.sequencer.engine.state_hash
    assert standby.caught_up

    # The standby's own disk replays to the same state, independently.
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    replayed = recovery.recover(SPEC, tmp_path / "standby")
    assert replayed.engine.state_hash == leader.sequencer.engine.state_hash


async def test_without_an_in_sync_standby_the_leader_commits_alone(
    leader: Leader, tmp_path: Path
) -> None:
    standby = standby_at(tmp_path / "standby")
    following = asyncio.create_task(standby.follow(leader.target))
    await until(lambda: leader.replication.in_sync, "the standby in sync")
    commands = script(500)
    await leader.run(commands[:300])  # in sync: the standby has all of it
    following.cancel()  # the standby goes away
    await asyncio.gather(following, return_exceptions=True)
    await until(lambda: not leader.replication.in_sync, "out of sync")
    await asyncio.wait_for(leader.run(commands[300:]), 5)  # no waiting for the gone standby
    assert leader.sequencer.committed_seq == leader.sequencer.engine.seq

    # It comes back from its own log and catches up.
    standby = standby_at(tmp_path / "standby")
    assert 0 < standby.engine.seq < leader.sequencer.engine.seq
    following = asyncio.create_task(standby.follow(leader.target))
    await until(lambda: leader.replication.in_sync, "in sync again")
    assert standby.engine.state_hash == leader.sequencer.engine.state_hash
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)


async def test_a_standby_whose_log_left_the_leaders_starts_over_from_its_snapshot(
    leader: Leader, tmp_path: Path
) -> None:
    commands = script(1_500)
    await leader.run(commands[:1_000])
    await leader.sequencer.snapshot()
    await leader.run(commands[1_000:])
    # A former leader's log: the same first 500 commands, then a tail of its own.
    other = tmp_path / "former"
    fencing = FileEpoch(other / "epoch", "former")
    former = Sequencer(e.Engine(SPEC), other, await fencing.acquire(), fencing, SequencerSettings())
    former.start()
    tail = [(e.C_FUNDING, f"x-{i}", "carol", "USDT", 5, e.CREDIT) for i in range(20)]
    for cmd in commands[:500] + tail:
        await former.submit([(cmd, "")])
    await former.close()

    standby = standby_at(other)
    following = asyncio.create_task(standby.follow(leader.target))
    await until(lambda: leader.replication.in_sync, "in sync after starting over")
    assert standby.engine.state_hash == leader.sequencer.engine.state_hash
    assert list((other / "discarded").glob("*/wal/*.wal"))  # kept for inspection
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    replayed = recovery.recover(SPEC, other)
    assert replayed.engine.state_hash == leader.sequencer.engine.state_hash


async def test_a_record_that_does_not_replay_stops_the_standby(tmp_path: Path) -> None:
    standby = standby_at(tmp_path / "standby")
    leader_engine = e.Engine(SPEC)
    commands = script(10)
    entries = []
    for seq, cmd in enumerate(commands, 1):
        events = leader_engine.execute(cmd, seq, 1)
        entries.append([1, cmd, events, "", leader_engine.state_hash ^ (1 if seq == 7 else 0)])
    data = wal.encode(1, 1, leader_engine.state_hash, entries)
    standby._open_writer()
    with pytest.raises(Diverged, match="state hash mismatch at seq 7"):
        standby._replay(data, 1, 10)


async def test_a_standby_that_stops_acknowledging_falls_out_of_sync_and_the_leader_goes_on(
    leader: Leader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    standby = standby_at(tmp_path / "standby")
    following = asyncio.create_task(standby.follow(leader.target))
    await until(lambda: leader.replication.in_sync, "the standby in sync")
    stuck = asyncio.Event()

    def never_durable(*_: Any) -> None:
        stuck.set()
        time.sleep(2)  # a disk that hangs, in the standby's writer thread

    monkeypatch.setattr("workloads.matcher.standby._write_all_and_sync", never_durable)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(leader.run(script(50)), 5)
    waited = asyncio.get_running_loop().time() - started
    assert stuck.is_set() and not leader.replication.in_sync
    assert 0.3 <= waited < 2  # held for the sync timeout, not for the stuck standby
    assert leader.sequencer.committed_seq == leader.sequencer.engine.seq
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
