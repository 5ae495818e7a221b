"""Which part this process plays in its market (cluster mode): lead, follow the leader as its
hot standby, or wait. `settle` returns once this process holds the Lease and may lead.

Each round reads the Lease (`lease.claim`):
- TAKE (free, expired, or an earlier process of this very pod held it): lead, if `may_lead`
  agrees. Nothing published may be missing here: the log must reach the market's published
  seq (read from Kafka; a standby's log is allowed only through the leader's designation
  when Kafka cannot be asked). A process whose log is behind and that has no leader to follow
  says why (`/readyz`, GetStatus `refusal`) and waits: nobody may lead from that log.
- HAND_OVER (an earlier process of this pod led, with a standby in sync): free the Lease for
  that standby, which has everything that was acknowledged; a free Lease naming a standby is
  left to it for a moment (`lease.claim`). The instance manager does this the moment the
  matcher ends, before starting it again (`instance.py`).
- WAIT: another instance leads: follow it (`standby.py`) until its stream ends, then look
  again at once (its process may have died: its pod hands over within a second).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from workloads.matcher.engine import Engine
from workloads.matcher.lease import Claim, Identity, LeaseEpoch, LeaseRecord
from workloads.matcher.standby import Standby

log = logging.getLogger(__name__)


def may_lead(
    *, seq: int, published: int | None, same_pod: bool, designated: bool, caught_up: bool
) -> str | None:
    """None when this process may lead, else why not. `published`: the market's highest
    published seq (None: Kafka could not be asked); `same_pod`: an earlier process of this pod
    held the Lease (this is its log); `designated`: the Lease names this pod's standby as in
    sync; `caught_up`: as a standby, its log reaches the leader's commit line it heard."""
    if published is not None and seq < published:
        return f"its log ends at seq {seq}, below seq {published} already published"
    if same_pod:
        return None
    if designated:
        return None if caught_up else f"designated, but not caught up (seq {seq})"
    if published is None:
        return "the published seq cannot be read from Kafka to check this log against"
    return None


@dataclass
class Role:
    """What GetStatus and `/readyz` say meanwhile."""

    name: str = "starting"
    why: str = ""
    standby: Standby | None = None


async def settle(
    fencing: LeaseEpoch,
    engine: Engine,
    last_epoch: int,
    published: Callable[[], Awaitable[int | None]],
    make_standby: Callable[[Engine], Standby],
    peer: Callable[[str], str],
    role: Role,
) -> tuple[Engine, int, int]:
    """Follow or wait until this process may lead; then (engine, epoch, previous epoch)."""
    retry = fencing.timing.retry_period
    while True:
        record = await fencing.read()
        if record is None:
            await asyncio.sleep(retry)
            continue
        decision = fencing.decide(record)
        if decision is Claim.HAND_OVER:
            await fencing.hand_over(record)  # the standby goes first (`lease.claim`)
            continue
        holder = Identity.parse(record.holder)
        if role.standby is not None:
            engine = role.standby.engine
            last_epoch = max(last_epoch, role.standby.leader_epoch)
        if decision is Claim.TAKE:
            why = may_lead(
                seq=engine.seq,
                published=await published(),
                same_pod=fencing.me.same_pod(holder),
                designated=fencing.me.same_pod(Identity.parse(record.sync_standby)),
                caught_up=role.standby is not None and role.standby.caught_up,
            )
            if why is None:
                epoch = await fencing.take(record, floor=last_epoch + 1)
                if epoch is not None:
                    return engine, epoch, last_epoch
                continue
            role.why = why
            log.warning("may not lead", extra={"why": why, "seq": engine.seq})
        if holder is not None and not fencing.me.same_pod(holder) and record.holder:
            await _follow(role, engine, make_standby, peer(holder.pod), record)
            await asyncio.sleep(0.1)
        else:
            role.name = "waiting"
            await asyncio.sleep(min(retry, 0.5))


async def _follow(
    role: Role,
    engine: Engine,
    make_standby: Callable[[Engine], Standby],
    target: str,
    record: LeaseRecord,
) -> None:
    if role.standby is None:
        role.standby = make_standby(engine)
    role.name, role.why = "standby", f"following {record.holder}"
    await role.standby.follow(target)
