"""What the operator asks the workloads: a matcher's status and mode (gRPC), the ledger's
reconciliation verdict, latch release and invariants (HTTP). Pods are reached by their IP
(read from the API), so this works from inside the cluster and from a developer's machine on
the node alike. Every call has a deadline: a silent process must not stall a reconcile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc

from contracts.v1 import common_pb2, matcher_pb2, matcher_pb2_grpc
from exchange_operator.model import LEDGER_PORT, MATCHER_GRPC_PORT
from workloads.common.channels import matcher_channel

TIMEOUT = 3.0
MODES = {
    "NORMAL": common_pb2.SYMBOL_MODE_NORMAL,
    "CANCEL_ONLY": common_pb2.SYMBOL_MODE_CANCEL_ONLY,
    "SOFT_HALT": common_pb2.SYMBOL_MODE_SOFT_HALT,
    "HARD_HALT": common_pb2.SYMBOL_MODE_HARD_HALT,
}


class Unreachable(RuntimeError):
    """The process did not answer (down, restarting, not ready)."""


@dataclass(frozen=True)
class MatcherState:
    seq: int
    epoch: int
    mode: str
    state_hash: str
    durable_seq: int
    published_seq: int
    outbox_lag: int
    leader: bool
    refusal: str
    role: str = ""
    standby: str = ""
    """The leader: its standby's identity (pod/uid), "" when none follows."""
    standby_in_sync: bool = False
    replication_lag: int = 0
    committed_seq: int = 0
    archive: tuple[int, float, str] | None = None
    """(last seq, lag seconds, last error) of the leader's archive; None without one."""

    @classmethod
    def of(cls, status: matcher_pb2.MatcherStatus) -> MatcherState:
        mode = common_pb2.SymbolMode.Name(status.mode).removeprefix("SYMBOL_MODE_")
        return cls(
            status.seq,
            status.epoch,
            mode,
            status.state_hash.hex(),
            status.last_durable_seq,
            status.last_published_seq,
            status.outbox_lag,
            status.leader,
            status.refusal,
            status.role,
            status.standby,
            status.standby_in_sync,
            status.replication_lag,
            status.committed_seq,
            (
                (status.archive_last_seq, status.archive_lag_seconds, status.archive_last_error)
                if status.archive_enabled
                else None
            ),
        )


class Matchers:
    """One channel per matcher address, kept while the address stays the same."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, ip: str) -> matcher_pb2_grpc.MatcherStub:
        target = f"{ip}:{MATCHER_GRPC_PORT}"
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = matcher_channel(target)
        return matcher_pb2_grpc.MatcherStub(channel)

    async def status(self, ip: str) -> MatcherState:
        try:
            reply = await self._stub(ip).GetStatus(matcher_pb2.GetStatusRequest(), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise Unreachable(f"{exc.code().name}: {exc.details()}") from None
        return MatcherState.of(reply)

    async def set_mode(self, ip: str, symbol: str, mode: str, reason: str) -> None:
        request = matcher_pb2.SetSymbolModeRequest(
            symbol=symbol, mode=MODES[mode], reason=reason[:200], correlation_id="operator"
        )
        try:
            reply = await self._stub(ip).SetSymbolMode(request, timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise Unreachable(f"{exc.code().name}: {exc.details()}") from None
        if reply.status != matcher_pb2.COMMAND_STATUS_ACCEPTED:
            reason_name = common_pb2.RejectReason.Name(reply.reject_reason)
            raise Unreachable(f"the matcher refused mode {mode}: {reason_name}")

    async def forget(self, keep: set[str]) -> None:
        """Close the channels of addresses no longer in use (pods that were replaced)."""
        for target in [t for t in self._channels if t.split(":")[0] not in keep]:
            await self._channels.pop(target).close()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


class Ledger:
    """The venue ledger's admin API, with an admin token when the venue has them."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        return self._session

    async def _call(
        self, method: str, ip: str, path: str, token: str, body: Any = None
    ) -> tuple[int, Any]:
        url = f"http://{ip}:{LEDGER_PORT}{path}"
        headers = {"X-Admin-Token": token} if token else {}
        try:
            async with self._http().request(method, url, json=body, headers=headers) as response:
                return response.status, await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unreachable(f"ledger {path}: {exc!r}") from None

    async def market(self, ip: str, symbol: str, token: str) -> dict[str, Any]:
        status, body = await self._call("GET", ip, "/v1/admin/reconciliation/status", token)
        if status != 200:
            raise Unreachable(f"ledger reconciliation status: {status} {body}")
        for market in body.get("markets", []):
            if market.get("symbol") == symbol:
                return dict(market)
        raise Unreachable(f"the ledger does not reconcile {symbol} (yet)")

    async def release(self, ip: str, symbol: str, token: str) -> list[str]:
        """Release the ledger's latch of the market; the reasons it refuses ([]: released)."""
        status, body = await self._call(
            "POST", ip, f"/v1/admin/reconciliation/latch/{symbol}/release", token
        )
        if status == 200:
            return []
        if status == 409:
            return [str(body.get("message") or body)]
        raise Unreachable(f"ledger latch release: {status} {body}")

    async def invariant_failures(self, ip: str, token: str) -> list[str]:
        status, body = await self._call("POST", ip, "/v1/admin/invariants/check", token)
        if status != 200:
            raise Unreachable(f"ledger invariants: {status} {body}")
        return [str(c.get("name")) for c in body.get("checks", []) if not c.get("ok")]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
