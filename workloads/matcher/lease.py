"""Cluster mode's fencing: the market's `coordination.k8s.io` Lease, held from inside the pod.

The protocol (client-go's leader election, with the epoch in the same write):

- The operator creates the Lease `matcher-<market>`; the matcher's ServiceAccount may only
  get and update that one (RBAC by `resourceNames`).
- Every write is a PUT conditional on the `resourceVersion` just read (Patroni's rule): of
  two candidates, one wins and the other gets 409, re-reads and sees the winner.
- Taking the lease (a new `holderIdentity`) raises `spec.leaseTransitions` in that same
  write, and that number is the fencing epoch: no second object can disagree with it. It is
  raised at least to one above the last epoch in the matcher's own WAL, so that an epoch
  never goes back even if the Lease was recreated.
- The identity is `<pod>/<pod uid>/<boot>`: every start of the process is a new holder and
  a new epoch.
- A candidate may take the lease when it is free (released by a graceful stop), when the
  holder is an earlier process of this very pod (same pod UID: it is dead, since the
  instance manager and the kubelet start a process only after the previous one exited), or
  when the record has not changed for `duration` seconds of the candidate's own monotonic
  clock, counted from when it first saw that version (never from timestamps written by
  another machine).
- The holder renews every `retry_period` and counts as leader only while less than
  `renew_deadline` has passed on its own monotonic clock since the start of its last
  successful renewal. That is checked before every command and every outbox transaction,
  so a process that was frozen or cut off is silent from the moment the deadline passes,
  before anyone may take over at `duration` (renew_deadline < duration: the margin covers
  clock-rate differences and scheduling delays). Having lost it, the matcher stops and
  exits; the next process starts with a new epoch.

Timing bounds (defaults, `MATCHER_LEASE_*`, from the Market's `spec.failover`): duration
D = 10 s, renew deadline R = 7 s, retry period P = 2 s. A crashed matcher is replaced by its
instance manager at once and takes the lease at once (same pod UID). A frozen or partitioned
one stops serving at most R after its last renewal; another instance may lead at D after the
last renewal it observed; the operator fences (deletes) a pod whose lease stayed expired for
`spec.failover.timeoutSeconds` more. A second instance (the hot standby) fits the same
protocol: it waits for the lease, so it leads only after D, or at once when the operator has
fenced the old leader and released the lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTiming:
    duration: float = 10.0
    """Seconds after the last renewal it observed before anyone else may take the lease."""
    renew_deadline: float = 7.0
    """Seconds after its last successful renewal at which the holder stops serving."""
    retry_period: float = 2.0
    """Seconds between renewals (and between a candidate's attempts)."""

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ValueError(
                "lease timing needs 0 < retry period < renew deadline < duration, got"
                f" {self.retry_period}, {self.renew_deadline}, {self.duration}"
            )


@dataclass(frozen=True)
class Identity:
    pod: str
    uid: str
    boot: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __str__(self) -> str:
        return f"{self.pod}/{self.uid}/{self.boot}"

    @classmethod
    def parse(cls, text: str | None) -> Identity | None:
        parts = (text or "").split("/")
        return cls(*parts) if len(parts) == 3 and all(parts) else None

    def same_pod(self, other: Identity | None) -> bool:
        return other is not None and (other.pod, other.uid) == (self.pod, self.uid)


SYNC_STANDBY = "exchange.io/sync-standby"
"""The Lease's annotation naming the standby that is in sync (may be promoted); the leader
sets it once the standby is in sync and clears it before it commits without it."""


@dataclass(frozen=True)
class LeaseRecord:
    """What the API server holds, as far as the protocol cares."""

    holder: str
    transitions: int
    resource_version: str
    sync_standby: str = ""


HAND_OVER_GRACE_S = 2.0
"""How long a free Lease that names an in-sync standby is left to that standby before any other
instance may take it (the standby may be gone too)."""


class Claim(Enum):
    TAKE = "take"  # write ourselves in as the new holder, epoch + 1
    WAIT = "wait"  # someone else may still lead
    HAND_OVER = "hand over"  # free the lease for the in-sync standby


def claim(record: LeaseRecord, me: Identity, unchanged_for: float, timing: LeaseTiming) -> Claim:
    """A candidate's decision on the record it just read (`unchanged_for`: seconds of its own
    clock since it first saw this resourceVersion). Whether it may lead at all (its log
    complete enough) is decided apart (`roles.may_lead`)."""
    if not record.holder:
        # Released, or handed over: a standby it names as in sync goes first.
        designated = Identity.parse(record.sync_standby)
        if designated is not None and not me.same_pod(designated):
            return Claim.TAKE if unchanged_for >= HAND_OVER_GRACE_S else Claim.WAIT
        return Claim.TAKE
    if me.same_pod(Identity.parse(record.holder)):
        # An earlier process of this pod: it has exited. If its standby was in sync, that
        # standby has everything it acknowledged and should lead: hand over to it.
        standby = Identity.parse(record.sync_standby)
        if standby is not None and not me.same_pod(standby):
            return Claim.HAND_OVER
        return Claim.TAKE
    if unchanged_for >= timing.duration:
        return Claim.TAKE  # the holder stopped renewing
    return Claim.WAIT


class LeaseLost(RuntimeError):
    """This process no longer holds the market's lease: it must not serve again."""


class LeaseUnavailable(RuntimeError):
    """The API server could not be asked (network, timeout, an error other than 409)."""


class LeaseStore(Protocol):
    """One Lease: read it, and write over the version read (None: someone else wrote)."""

    name: str

    async def read(self) -> LeaseRecord: ...

    async def write(
        self,
        read: LeaseRecord,
        holder: str,
        transitions: int,
        duration: float,
        acquired: bool,
        sync_standby: str | None = None,
    ) -> LeaseRecord | None:
        """`sync_standby`: the annotation's new value (None: left as it is)."""
        ...


class LeaseEpoch:
    """The `EpochProvider` of cluster mode (see the module docstring for the protocol)."""

    def __init__(
        self,
        api: LeaseStore,
        me: Identity,
        timing: LeaseTiming = LeaseTiming(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.me = me
        self.timing = timing
        self.clock = clock
        self.epoch = 0
        self.lost: str | None = None
        self._record: LeaseRecord | None = None
        self._renewed_at = float("-inf")
        self._seen: tuple[str, float] | None = None  # (resourceVersion, when first seen)

    @property
    def identity(self) -> str:
        return str(self.me)

    def is_leader(self) -> bool:
        return (
            self.epoch > 0
            and self.lost is None
            and self.clock() - self._renewed_at < self.timing.renew_deadline
        )

    async def acquire(self, floor: int = 0) -> int:
        """Wait until this process may take the lease, take it, and return the new epoch
        (at least `floor`). The single-instance path; with a standby see `roles`."""
        while True:
            record = await self.read()
            if record is not None:
                decision = self.decide(record)
                if decision is Claim.HAND_OVER:
                    decision = Claim.TAKE  # nobody to hand over to on this path
                if decision is Claim.TAKE:
                    epoch = await self.take(record, floor)
                    if epoch is not None:
                        return epoch
                    continue  # someone else wrote first: look again at once
                log.info("waiting for the lease", extra={"holder": record.holder})
            await asyncio.sleep(self.timing.retry_period)

    async def read(self) -> LeaseRecord | None:
        return await self._read()

    def decide(self, record: LeaseRecord) -> Claim:
        return claim(record, self.me, self._unchanged_for(record), self.timing)

    async def take(self, record: LeaseRecord, floor: int = 0) -> int | None:
        """Take the lease over `record` (conditionally): the new epoch, or None when someone
        else wrote first. A new leader has no standby in sync yet: the annotation goes."""
        epoch = max(record.transitions + 1, floor)
        started = self.clock()
        written = await self._write(record, epoch, acquired=True, sync_standby="")
        if written is None:
            return None
        self._took(written, started, record.holder)
        return epoch

    async def hand_over_if_due(self) -> bool:
        """Hand over now if an earlier process of this pod held the Lease with a standby in
        sync (the instance manager, the moment its matcher ended)."""
        record = await self.read()
        return (
            record is not None
            and self.decide(record) is Claim.HAND_OVER
            and (await self.hand_over(record))
        )

    async def hand_over(self, record: LeaseRecord) -> bool:
        """Free a lease held by this pod's earlier (dead) process, for its in-sync standby."""
        written = await self._write(record, record.transitions, acquired=False, holder="")
        if written is not None:
            log.warning(
                "lease handed over to the in-sync standby",
                extra={"lease": self.api.name, "standby": record.sync_standby},
            )
        return written is not None

    async def designate(self, standby: str) -> bool:
        """As the leader: name the in-sync standby in the Lease ("" to withdraw it). Only
        while this process holds the lease, and not past its renew deadline: a woken leader
        must not write the Lease (a write resets everyone's wait for it to expire); True once
        the API server has it."""
        for _ in range(3):
            if not self.is_leader():
                return False
            record = await self._read()
            if record is None or record.holder != self.identity or not self.is_leader():
                return False
            if record.sync_standby == standby:
                return True
            written = await self._write(
                record, record.transitions, acquired=False, sync_standby=standby
            )
            if written is not None:
                self._record = written
                return True
        return False

    def _took(self, record: LeaseRecord, started: float, previous: str) -> None:
        self._record = record
        self._renewed_at = started
        self.epoch = record.transitions
        self.lost = None
        log.warning(
            "lease taken",
            extra={"lease": self.api.name, "epoch": self.epoch, "previous": previous or None},
        )

    async def renew(self) -> None:
        """One renewal; raises `LeaseLost` when the lease is someone else's or the renew
        deadline has passed."""
        if self.lost is not None:
            raise LeaseLost(self.lost)
        started = self.clock()
        if started - self._renewed_at >= self.timing.renew_deadline:
            # Silent since the deadline (frozen, or the API unreachable): renewing now would
            # make it lead again under an epoch others may have seen end.
            self._lose(f"not renewed for {self.timing.renew_deadline:g} s")
        record = await self._read()
        if record is not None and record.holder != self.identity:
            self._lose(f"the lease is held by {record.holder or 'nobody'} now")
        if record is not None:
            written = await self._write(record, record.transitions, acquired=False)
            if written is not None:
                self._record = written
                self._renewed_at = started
        if self.clock() - self._renewed_at >= self.timing.renew_deadline:
            self._lose(f"not renewed for {self.timing.renew_deadline:g} s")

    def _lose(self, why: str) -> None:
        self.lost = why
        log.error("lease lost: not serving", extra={"lease": self.api.name, "why": why})
        raise LeaseLost(why)

    async def keep(self) -> None:
        """Renew every retry period until the lease is lost (then raise `LeaseLost`)."""
        while True:
            await asyncio.sleep(self.timing.retry_period)
            await self.renew()

    async def release(self) -> None:
        """Give the lease up (a graceful stop, after the last command): the next instance
        may take it at once instead of waiting out the duration."""
        if self.epoch == 0 or self.lost is not None:
            return
        self.lost = "released"
        record = await self._read()
        if record is not None and record.holder == self.identity:
            await self._write(record, record.transitions, acquired=False, holder="")
            log.info("lease released", extra={"lease": self.api.name, "epoch": self.epoch})

    async def _read(self) -> LeaseRecord | None:
        try:
            return await self.api.read()
        except LeaseUnavailable as exc:
            log.warning("lease read failed", extra={"why": _why(exc)})
            return None

    async def _write(
        self,
        record: LeaseRecord,
        transitions: int,
        *,
        acquired: bool,
        holder: str | None = None,
        sync_standby: str | None = None,
    ) -> LeaseRecord | None:
        try:
            return await self.api.write(
                record,
                self.identity if holder is None else holder,
                transitions,
                self.timing.duration,
                acquired,
                sync_standby,
            )
        except LeaseUnavailable as exc:
            log.warning("lease write failed", extra={"why": _why(exc)})
            return None

    def _unchanged_for(self, record: LeaseRecord) -> float:
        now = self.clock()
        if self._seen is None or self._seen[0] != record.resource_version:
            self._seen = (record.resource_version, now)
        return now - self._seen[1]


def _why(exc: BaseException) -> str:
    return str(exc) or repr(exc)
