"""A leader and its hot standby as real processes on the real Lease and Kafka: the standby
follows in sync; after a kill -9 of the leader (restarted at once, as its instance manager
would) the standby leads with the next epoch, having everything that was acknowledged, and
the former leader rejoins as its standby."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest

from contracts.v1 import matcher_pb2, matcher_pb2_grpc
from e2e.env.matcher import MatcherProcess
from workloads.matcher.tests.test_lease import make_lease
from workloads.matcher.tests.test_process import envelope, fund, order, read_events

pytestmark = pytest.mark.integration

SYMBOL = "BTC-USDT"


@pytest.fixture
def pair(
    run_dir: Path, kubeconfig: Path, k8s_namespace: str, kafka_bootstrap: str, kafka_topic: str
) -> Iterator[list[MatcherProcess]]:
    make_lease(kubeconfig, k8s_namespace, "matcher-btc-usdt")
    pods = [
        MatcherProcess(
            run_dir / f"standby-{k8s_namespace}-{n}", kafka_bootstrap=kafka_bootstrap,
            events_topic=kafka_topic, name=f"matcher-{n}",
        )
        for n in range(2)
    ]  # fmt: skip
    peers = ",".join(f"matcher-btc-usdt-{n}={p.target}" for n, p in enumerate(pods))
    for n, pod in enumerate(pods):
        pod.extra_env.update(
            {
                "MATCHER_EPOCH_PROVIDER": "lease",
                "MATCHER_LEASE_NAMESPACE": k8s_namespace,
                "MATCHER_INSTANCE": f"matcher-btc-usdt-{n}",
                "MATCHER_POD_UID": f"uid-{n}",
                "MATCHER_PEERS": peers,
                "KUBECONFIG": str(kubeconfig),
            }
        )
    yield pods
    for pod in pods:
        pod.stop()


async def status(pod: MatcherProcess) -> matcher_pb2.MatcherStatus | None:
    async with grpc.aio.insecure_channel(pod.target) as channel:
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply: matcher_pb2.MatcherStatus = await matcher_pb2_grpc.MatcherStub(
                channel
            ).GetStatus(matcher_pb2.GetStatusRequest(), timeout=2)
            return reply
    return None


async def until(what: str, check: Any, within: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = await check()
        if found:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {within:.0f}s (last: {found!r})")
        await asyncio.sleep(0.1)


async def roles(pods: list[MatcherProcess]) -> dict[str, matcher_pb2.MatcherStatus]:
    found = {}
    for pod in pods:
        got = await status(pod)
        if got is not None:
            found[got.role] = got
    return found


async def leading_pair(
    pair: list[MatcherProcess],
) -> tuple[MatcherProcess, MatcherProcess, int]:
    """Both launched; (leader, standby, epoch) once the standby is in sync."""
    for pod in pair:
        pod.launch()

    async def in_sync() -> dict[str, matcher_pb2.MatcherStatus] | None:
        found = await roles(pair)
        leader = found.get("leader")
        return found if leader is not None and leader.standby_in_sync else None

    found = await until("a leader with its standby in sync", in_sync)
    first = await status(pair[0])
    leader_pod = pair[0] if first is not None and first.role == "leader" else pair[1]
    standby_pod = pair[1] if leader_pod is pair[0] else pair[0]
    return leader_pod, standby_pod, found["leader"].epoch


async def place(stub: matcher_pb2_grpc.MatcherStub, ids: range) -> dict[str, int]:
    """Orders `ids` in batches of 20; the seq of each acknowledged one."""
    acknowledged: dict[str, int] = {}
    for start in range(ids.start, ids.stop, 20):
        batch = [order(i) for i in range(start, min(start + 20, ids.stop))]
        reply = await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=batch), timeout=5)
        for cmd, r in zip(batch, reply.replies, strict=True):
            assert r.status == matcher_pb2.COMMAND_STATUS_ACCEPTED
            acknowledged[cmd.place_order.client_order_id] = r.seq
    return acknowledged


async def promoted(pod: MatcherProcess, epoch: int) -> matcher_pb2.MatcherStatus:
    async def leads() -> matcher_pb2.MatcherStatus | None:
        got = await status(pod)
        return got if got is not None and got.role == "leader" else None

    new: matcher_pb2.MatcherStatus = await until("the standby leading", leads)
    assert new.epoch == epoch + 1
    return new


async def all_there(pod: MatcherProcess, acknowledged: dict[str, int], epoch: int) -> None:
    """Every acknowledged order is on `pod`, once, at its seq; a new one is accepted."""
    async with grpc.aio.insecure_channel(pod.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        ids = sorted(int(k.removeprefix("o-")) for k in acknowledged)
        resent = await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=[order(i) for i in ids]))
        for i, r in zip(ids, resent.replies, strict=True):
            assert r.status == matcher_pb2.COMMAND_STATUS_DUPLICATE, i
            assert r.seq == acknowledged[f"o-{i}"]
        placed = await stub.PlaceOrder(order(100_000).place_order)
        assert placed.status == matcher_pb2.COMMAND_STATUS_ACCEPTED and placed.epoch == epoch


async def rejoined(pod: MatcherProcess) -> matcher_pb2.MatcherStatus:
    """`pod` leads with its standby (the former leader) in sync again."""

    async def in_sync() -> matcher_pb2.MatcherStatus | None:
        got = await status(pod)
        return got if got is not None and got.standby_in_sync else None

    found: matcher_pb2.MatcherStatus = await until("the former leader in sync", in_sync)
    return found


async def test_the_standby_takes_over_from_a_killed_leader_with_everything_acknowledged(
    pair: list[MatcherProcess], kafka_bootstrap: str, kafka_topic: str
) -> None:
    leader_pod, standby_pod, epoch = await leading_pair(pair)
    async with grpc.aio.insecure_channel(leader_pod.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        funded = await stub.SubmitBatch(
            matcher_pb2.CommandBatch(commands=[fund("alice", "USDT"), fund("bob", "BTC")])
        )
        assert all(r.status == matcher_pb2.COMMAND_STATUS_ACCEPTED for r in funded.replies)
        acknowledged = await place(stub, range(600))
        before = await stub.GetStatus(matcher_pb2.GetStatusRequest())
    assert before.standby_in_sync and before.committed_seq >= max(acknowledged.values())
    mirrored = await status(standby_pod)  # the standby answers GetStatus for itself
    assert mirrored is not None and mirrored.role == "standby" and not mirrored.leader
    assert mirrored.last_durable_seq >= max(acknowledged.values()) and mirrored.standby_in_sync

    leader_pod.kill()
    leader_pod.launch()  # its instance manager would restart it at once: it hands over
    await promoted(standby_pod, epoch)
    await all_there(standby_pod, acknowledged, epoch + 1)
    final = await rejoined(standby_pod)
    events = await read_events(kafka_bootstrap, kafka_topic, final.committed_seq)
    ids = [envelope(e).event_id for e in events]
    assert len(ids) == len(set(ids))
    assert sorted({envelope(e).seq for e in events}) == list(range(1, final.committed_seq + 1))


async def test_the_instance_manager_hands_the_lease_over_the_moment_its_matcher_dies(
    pair: list[MatcherProcess],
) -> None:
    """As in a pod: each matcher under its instance manager. kill -9 of the leading matcher
    (not the manager): the manager frees the Lease for the standby before it starts the
    matcher again; the standby leads, the restarted matcher follows it."""
    managed: list[MatcherProcess] = [
        InstanceManaged(**{f: getattr(p, f) for f in MANAGED_FIELDS}) for p in pair
    ]
    pair[:] = managed  # the fixture stops them
    leader_pod, standby_pod, epoch = await leading_pair(managed)
    async with grpc.aio.insecure_channel(leader_pod.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        await stub.SubmitBatch(
            matcher_pb2.CommandBatch(commands=[fund("alice", "USDT"), fund("bob", "BTC")])
        )
        acknowledged = await place(stub, range(200))
    assert leader_pod.process is not None and leader_pod.process.popen is not None
    manager = leader_pod.process.popen.pid
    children = Path(f"/proc/{manager}/task/{manager}/children")
    (matcher,) = (await asyncio.to_thread(children.read_text)).split()
    os.kill(int(matcher), signal.SIGKILL)
    await promoted(standby_pod, epoch)
    await all_there(standby_pod, acknowledged, epoch + 1)
    assert "the Lease is handed over to its standby" in leader_pod.process.log_tail(200)
    await rejoined(standby_pod)


MANAGED_FIELDS = ("run_dir", "symbol", "kafka_bootstrap", "events_topic", "grpc_port",
                  "http_port", "extra_env", "name")  # fmt: skip


@dataclass
class InstanceManaged(MatcherProcess):
    module: ClassVar[str] = "workloads.matcher.instance"


async def test_a_leader_stopped_gracefully_hands_over_under_load(
    pair: list[MatcherProcess],
) -> None:
    """A rollout's stop (SIGTERM) while orders keep coming: the orders it acknowledged are all
    on the standby, which leads at once (the Lease released, no expiry to wait out)."""
    leader_pod, standby_pod, epoch = await leading_pair(pair)
    acknowledged: dict[str, int] = {}
    async with grpc.aio.insecure_channel(leader_pod.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        await stub.SubmitBatch(
            matcher_pb2.CommandBatch(commands=[fund("alice", "USDT"), fund("bob", "BTC")])
        )

        async def keep_placing() -> None:
            for start in range(0, 100_000, 20):
                try:
                    acknowledged.update(await place(stub, range(start, start + 20)))
                except grpc.aio.AioRpcError:
                    return  # the leader stopped taking commands

        placing = asyncio.create_task(keep_placing())
        await until("orders flowing", lambda: asyncio.sleep(0, len(acknowledged) > 200))
        await asyncio.to_thread(leader_pod.stop)  # SIGTERM, and wait for the exit
        await asyncio.wait_for(placing, timeout=10)
    await promoted(standby_pod, epoch)
    assert acknowledged
    await all_there(standby_pod, acknowledged, epoch + 1)
    leader_pod.launch()
    await rejoined(standby_pod)


async def test_a_frozen_leader_is_replaced_by_its_standby_at_the_lease_end_and_rejoins(
    pair: list[MatcherProcess],
) -> None:
    """SIGSTOP: the standby hears nothing (no heartbeat), takes the Lease once it has not
    been renewed for its duration, and leads; the old leader, woken, finds the Lease lost,
    stops, and (started again) follows the new one."""
    for pod in pair:
        pod.extra_env.update(
            {"MATCHER_LEASE_DURATION_S": "3", "MATCHER_LEASE_RENEW_DEADLINE_S": "2",
             "MATCHER_LEASE_RETRY_PERIOD_S": "0.5"}
        )  # fmt: skip
    leader_pod, standby_pod, epoch = await leading_pair(pair)
    async with grpc.aio.insecure_channel(leader_pod.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        await stub.SubmitBatch(
            matcher_pb2.CommandBatch(commands=[fund("alice", "USDT"), fund("bob", "BTC")])
        )
        acknowledged = await place(stub, range(100))
    frozen = leader_pod.process
    assert frozen is not None
    frozen.signal(signal.SIGSTOP)
    try:
        await promoted(standby_pod, epoch)
        await all_there(standby_pod, acknowledged, epoch + 1)
    finally:
        frozen.signal(signal.SIGCONT)
    await until("the old leader stopping", lambda: asyncio.sleep(0, not frozen.alive()), 15)
    leader_pod.launch()
    await rejoined(standby_pod)
