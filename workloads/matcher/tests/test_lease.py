"""The Lease protocol: the pure claim decision, the holder's deadline on a driven clock, the
real API server's conditional writes between competing instances, and a real matcher
process frozen past its lease."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from kubernetes import client

from contracts.v1 import matcher_pb2, matcher_pb2_grpc
from e2e.env.matcher import MatcherProcess
from workloads.matcher.lease import (
    Claim,
    Identity,
    LeaseEpoch,
    LeaseLost,
    LeaseRecord,
    LeaseTiming,
    LeaseUnavailable,
    claim,
)
from workloads.matcher.tests.test_process import envelope, fund, order, read_events

TIMING = LeaseTiming(duration=10, renew_deadline=7, retry_period=2)
ME = Identity("matcher-btc-usdt-0", "uid-1", "boot-b")


@pytest.mark.unit
def test_a_free_lease_or_one_of_an_earlier_process_of_this_pod_is_taken_at_once() -> None:
    assert claim(LeaseRecord("", 4, "1"), ME, 0, TIMING) is Claim.TAKE
    earlier = str(Identity("matcher-btc-usdt-0", "uid-1", "boot-a"))
    assert claim(LeaseRecord(earlier, 4, "1"), ME, 0, TIMING) is Claim.TAKE


@pytest.mark.unit
def test_another_pods_lease_is_taken_only_after_it_stayed_unchanged_for_the_duration() -> None:
    # Same pod name, another UID: the pod was deleted and recreated; the old one may live on.
    other = str(Identity("matcher-btc-usdt-0", "uid-0", "boot-a"))
    assert claim(LeaseRecord(other, 4, "1"), ME, 9.9, TIMING) is Claim.WAIT
    assert claim(LeaseRecord(other, 4, "1"), ME, 10, TIMING) is Claim.TAKE
    assert claim(LeaseRecord("not-an-identity", 4, "1"), ME, 0, TIMING) is Claim.WAIT


@pytest.mark.unit
def test_an_earlier_process_of_this_pod_hands_the_lease_to_its_in_sync_standby() -> None:
    earlier = str(Identity("matcher-btc-usdt-0", "uid-1", "boot-a"))
    standby = str(Identity("matcher-btc-usdt-1", "uid-9", "boot-s"))
    assert claim(LeaseRecord(earlier, 4, "1", standby), ME, 0, TIMING) is Claim.HAND_OVER
    # A standby that is this very pod (an earlier process of it) is no one to hand over to.
    own = str(Identity("matcher-btc-usdt-0", "uid-1", "boot-z"))
    assert claim(LeaseRecord(earlier, 4, "1", own), ME, 0, TIMING) is Claim.TAKE
    # Handed over (or released) naming that standby: it goes first, for a moment.
    assert claim(LeaseRecord("", 4, "2", standby), ME, 0.5, TIMING) is Claim.WAIT
    assert claim(LeaseRecord("", 4, "2", standby), ME, 2.0, TIMING) is Claim.TAKE
    assert claim(LeaseRecord("", 4, "2", own), ME, 0, TIMING) is Claim.TAKE


@pytest.mark.unit
def test_the_timing_must_leave_the_holder_silent_before_anyone_may_take_over() -> None:
    with pytest.raises(ValueError, match="renew deadline < duration"):
        LeaseTiming(duration=7, renew_deadline=7, retry_period=2)


@dataclass
class FakeStore:
    """A Lease in memory with the API server's optimistic concurrency."""

    name: str = "matcher-btc-usdt"
    record: LeaseRecord = field(default_factory=lambda: LeaseRecord("", 0, "1"))
    down: bool = False
    writes: list[str] = field(default_factory=list)

    async def read(self) -> LeaseRecord:
        if self.down:
            raise LeaseUnavailable("connection refused")
        return self.record

    async def write(
        self,
        read: LeaseRecord,
        holder: str,
        transitions: int,
        duration: float,
        acquired: bool,
        sync_standby: str | None = None,
    ) -> LeaseRecord | None:
        if self.down:
            raise LeaseUnavailable("connection refused")
        if read.resource_version != self.record.resource_version:
            return None
        standby = read.sync_standby if sync_standby is None else sync_standby
        self.record = LeaseRecord(holder, transitions, str(int(read.resource_version) + 1), standby)
        self.writes.append(holder)
        return self.record


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.unit
async def test_the_holder_stops_leading_at_the_renew_deadline_on_its_own_clock() -> None:
    store, clock = FakeStore(), Clock()
    lease = LeaseEpoch(store, ME, TIMING, clock)
    assert await lease.acquire(floor=5) == 5  # above the WAL's last epoch
    assert lease.is_leader() and store.record.transitions == 5
    clock.now += 6.9
    assert lease.is_leader()
    await lease.renew()  # the renewal counts from when it started
    clock.now += 6.9
    assert lease.is_leader()
    store.down = True  # the API server cannot be reached: no renewal
    clock.now += 0.2
    assert not lease.is_leader()  # silent from the deadline on, before any renewal attempt
    with pytest.raises(LeaseLost, match="not renewed for 7 s"):
        await lease.renew()
    store.down = False
    with pytest.raises(LeaseLost):
        await lease.renew()  # lost for good: the process restarts under a new epoch
    assert not lease.is_leader()


@pytest.mark.unit
async def test_a_leader_past_its_renew_deadline_does_not_touch_the_designation() -> None:
    """A woken leader's watchdog finds its standby late and would withdraw it: a write then
    would restart the standby's wait for the Lease to expire."""
    store, clock = FakeStore(), Clock()
    lease = LeaseEpoch(store, ME, TIMING, clock)
    await lease.acquire()
    assert await lease.designate("matcher-btc-usdt-1/uid-2/boot")
    version = store.record.resource_version
    clock.now += 7.5  # frozen past the renew deadline
    assert not await lease.designate("")
    assert store.record.resource_version == version
    assert store.record.sync_standby == "matcher-btc-usdt-1/uid-2/boot"


@pytest.mark.unit
async def test_a_holder_that_finds_another_in_the_lease_stops_at_once() -> None:
    store, clock = FakeStore(), Clock()
    lease = LeaseEpoch(store, ME, TIMING, clock)
    await lease.acquire()
    store.record = LeaseRecord("someone/else/now", 2, "99")
    with pytest.raises(LeaseLost, match="held by someone/else/now"):
        await lease.renew()
    assert not lease.is_leader()


@pytest.mark.unit
async def test_a_release_frees_the_lease_for_the_next_process() -> None:
    store, clock = FakeStore(), Clock()
    first = LeaseEpoch(store, ME, TIMING, clock)
    assert await first.acquire() == 1
    await first.release()
    assert not first.is_leader() and store.record.holder == ""
    other_pod = LeaseEpoch(store, Identity("matcher-btc-usdt-0", "uid-2", "boot-c"), TIMING, clock)
    assert await other_pod.acquire() == 2  # at once, no duration to wait out


# ---------------------------------------------------------------------- the real API server


def make_lease(kubeconfig: Path, namespace: str, name: str) -> client.ApiClient:
    from workloads.matcher.lease_api import api_client

    api = api_client(str(kubeconfig))
    client.CoordinationV1Api(api).create_namespaced_lease(
        namespace, client.V1Lease(metadata=client.V1ObjectMeta(name=name))
    )
    return api


@pytest.mark.integration
async def test_two_pods_race_for_a_lease_one_wins_and_the_other_waits_out_the_duration(
    kubeconfig: Path, k8s_namespace: str
) -> None:
    from workloads.matcher.lease_api import LeaseApi

    api = make_lease(kubeconfig, k8s_namespace, "matcher-btc-usdt")
    timing = LeaseTiming(duration=3, renew_deadline=2, retry_period=0.5)
    pods = [
        LeaseEpoch(
            LeaseApi(api, k8s_namespace, "matcher-btc-usdt"),
            Identity(f"matcher-btc-usdt-{n}", f"uid-{n}"),
            timing,
        )
        for n in range(2)
    ]
    first = await asyncio.wait(
        [asyncio.create_task(p.acquire()) for p in pods], return_when=asyncio.FIRST_COMPLETED
    )
    winner = next(p for p in pods if p.is_leader())
    loser = next(p for p in pods if p is not winner)
    assert winner.epoch == 1 and not loser.is_leader()
    waiting = next(iter(first[1]))
    await winner.renew()
    await asyncio.sleep(1)
    assert not waiting.done()  # the holder renews: the other waits
    # The winner freezes (no more renewals): after the duration the other takes over.
    taken = await asyncio.wait_for(waiting, 10)
    assert taken == 2 and loser.is_leader()
    lease = client.CoordinationV1Api(api).read_namespaced_lease("matcher-btc-usdt", k8s_namespace)
    assert lease.spec is not None and lease.spec.lease_transitions == 2
    assert lease.spec.holder_identity == loser.identity
    with pytest.raises(LeaseLost, match="not renewed for 2 s"):
        await winner.renew()  # it wakes up past its deadline: it never leads again
    assert not winner.is_leader()


@pytest.mark.integration
async def test_a_restarted_process_in_the_same_pod_takes_over_at_once_with_a_new_epoch(
    kubeconfig: Path, k8s_namespace: str
) -> None:
    from workloads.matcher.lease_api import LeaseApi

    api = make_lease(kubeconfig, k8s_namespace, "matcher-eth-usdt")
    store = LeaseApi(api, k8s_namespace, "matcher-eth-usdt")
    crashed = LeaseEpoch(store, Identity("matcher-eth-usdt-0", "uid-7"))
    assert await crashed.acquire() == 1
    restarted = LeaseEpoch(store, Identity("matcher-eth-usdt-0", "uid-7"))  # a new boot
    assert await asyncio.wait_for(restarted.acquire(), 5) == 2
    await restarted.renew()
    assert restarted.is_leader()


@pytest.mark.integration
async def test_a_frozen_leader_resumes_silent_and_its_successor_leads_with_the_next_epoch(
    run_dir: Path, kubeconfig: Path, k8s_namespace: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    """The zombie: SIGSTOP past the lease's end, SIGCONT. The resumed process accepts nothing
    and publishes nothing more under its epoch, and exits; the next one leads at once."""
    make_lease(kubeconfig, k8s_namespace, "matcher-btc-usdt")
    matcher = MatcherProcess(
        run_dir / "zombie",
        kafka_bootstrap=kafka_bootstrap,
        events_topic=kafka_topic,
        extra_env={
            "MATCHER_EPOCH_PROVIDER": "lease",
            "MATCHER_LEASE_NAMESPACE": k8s_namespace,
            "MATCHER_INSTANCE": "matcher-btc-usdt-0",
            "MATCHER_POD_UID": "uid-1",
            "MATCHER_LEASE_DURATION_S": "3",
            "MATCHER_LEASE_RENEW_DEADLINE_S": "2",
            "MATCHER_LEASE_RETRY_PERIOD_S": "0.5",
            "KUBECONFIG": str(kubeconfig),
        },
    )
    matcher.start()
    try:
        async with grpc.aio.insecure_channel(matcher.target) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            funded = await stub.SubmitBatch(
                matcher_pb2.CommandBatch(commands=[fund("alice", "USDT"), fund("bob", "BTC")])
            )
            assert all(r.status == matcher_pb2.COMMAND_STATUS_ACCEPTED for r in funded.replies)
            before = await stub.GetStatus(matcher_pb2.GetStatusRequest())
            assert before.leader and before.epoch == 1

            assert matcher.process is not None
            matcher.process.signal(signal.SIGSTOP)
            await asyncio.sleep(3.5)  # past the lease's duration

            async def place() -> matcher_pb2.CommandReply:
                reply: matcher_pb2.CommandReply = await stub.PlaceOrder(
                    order(0).place_order, timeout=10
                )
                return reply

            placing = asyncio.create_task(place())  # waits in its socket
            await asyncio.sleep(0.2)
            matcher.process.signal(signal.SIGCONT)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await placing
            assert refused.value.code() in (
                grpc.StatusCode.FAILED_PRECONDITION,  # NOT_LEADER
                grpc.StatusCode.UNAVAILABLE,  # already stopping
                grpc.StatusCode.CANCELLED,  # in flight when the server stopped
            ), refused.value
        popen = matcher.process.popen
        assert popen is not None and await asyncio.to_thread(popen.wait, 30) == 1
        assert "lease lost" in matcher.process.log_tail(40)

        matcher.start()  # the same pod: the lease is taken at once
        async with grpc.aio.insecure_channel(matcher.target) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            after = await stub.GetStatus(matcher_pb2.GetStatusRequest())
            assert after.leader and after.epoch == 2
            placed = await stub.PlaceOrder(order(1).place_order)
            assert placed.status == matcher_pb2.COMMAND_STATUS_ACCEPTED and placed.epoch == 2
            final = await stub.GetStatus(matcher_pb2.GetStatusRequest())
    finally:
        matcher.stop()
    events = await read_events(kafka_bootstrap, kafka_topic, final.seq)
    old_epoch = [envelope(e).seq for e in events if envelope(e).epoch == 1]
    assert old_epoch and max(old_epoch) <= before.last_durable_seq
    assert [envelope(e).seq for e in events] == list(range(1, final.seq + 1))
