"""Disaster recovery from the object store alone: a market (matcher and ledger, real
processes) trades with its matcher archiving to S3 and its PostgreSQL archiving WAL and a
base backup there; then both volumes are lost (the matcher's data directory and
PostgreSQL's data directory deleted). PostgreSQL is restored from its base backup and WAL
into a fresh directory, the matcher restores from its archive onto an empty one, and the
venue comes back with the same balances, the same book and the same state hash, settles
on (reconciliation lag 0, invariants pass) and trades."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts.v1 import matcher_pb2, matcher_pb2_grpc
from e2e.drills.load import CrossingLoad
from e2e.drills.venue import Venue
from e2e.env import postgres
from e2e.env.matcher import restore
from e2e.env.pgbackup import PgArchive, archive_current_wal, promoted
from e2e.env.process import free_port
from e2e.env.pytest_plugin import unique_name
from e2e.env.s3 import S3Server
from workloads.common.channels import matcher_channel

pytestmark = pytest.mark.integration


async def snapshot_of(venue: Venue) -> dict[str, Any]:
    """What must survive: the matcher's seq, hash and book, and the ledger's balances."""
    async with matcher_channel(venue.matcher.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        status = await stub.GetStatus(matcher_pb2.GetStatusRequest(symbol=venue.symbol))
        book = await stub.GetOrderBook(
            matcher_pb2.GetOrderBookRequest(symbol=venue.symbol, depth=100)
        )
    balances = (await venue.get("/v1/admin/balances"))["balances"]
    return {
        "seq": status.seq,
        "state_hash": status.state_hash.hex(),
        "book": (list(book.bids), list(book.asks)),
        "balances": sorted((b["account"], b["asset"], b["available"], b["hold"]) for b in balances),
    }


async def settled(venue: Venue, seq: int) -> dict[str, Any]:
    """The ledger's reconciliation once it has applied `seq` (lag 0)."""
    market: dict[str, Any] = {}
    for _ in range(300):
        market = await venue.reconciliation()
        if (market.get("applied_seq") or 0) >= seq and market.get("lag") == 0:
            return market
        await asyncio.sleep(0.1)
    raise AssertionError(f"the ledger did not settle seq {seq}: {market}")


async def test_a_market_and_its_ledger_come_back_from_the_object_store_alone(
    run_dir: Path, s3_server: S3Server, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = unique_name("dr")
    pg_archive = PgArchive(s3_server.settings(prefix=f"{name}-postgres"))
    archive = s3_server.settings(prefix=name)
    pg = postgres.PostgresServer(run_dir / name / "pg", free_port(), archive=pg_archive)
    pg.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    await admin.close()

    def venue_on(dsn: str) -> Venue:
        venue = Venue(run_dir / name, dsn, kafka_bootstrap, name)
        venue.matcher.extra_env.update(archive.env("MATCHER_ARCHIVE"))
        venue.matcher.extra_env["MATCHER_ARCHIVE_SEAL_SECONDS"] = "1"
        return venue

    venue = venue_on(pg.dsn)
    await asyncio.to_thread(venue.start)
    try:
        await asyncio.to_thread(pg_archive.base_backup, pg.host, pg.port, postgres.SUPERUSER)
        load = CrossingLoad(venue.matcher.target, venue.symbol, traders=4, rate=60)
        await venue.fund(load.accounts)
        await load.run_for(5)
        assert len(load.acked) > 100
        before = await snapshot_of(venue)
        await settled(venue, before["seq"])
        before = await snapshot_of(venue)  # balances as settled
    finally:
        await asyncio.to_thread(venue.stop)  # the matcher seals and archives its last segment
    await archive_current_wal(pg.dsn)
    pg.stop()

    # The disaster: both volumes are gone.
    shutil.rmtree(venue.matcher.data_dir)
    shutil.rmtree(pg.data_dir)

    begin = time.monotonic()
    restored_pg = postgres.PostgresServer(run_dir / name / "pg-restored", free_port(),
                                          archive=pg_archive)  # fmt: skip
    await asyncio.to_thread(pg_archive.restore, restored_pg.data_dir, None,
                            postgres.server_user())  # fmt: skip
    await asyncio.to_thread(restored_pg.start, 120)
    try:
        await promoted(restored_pg.dsn)
        venue = venue_on(restored_pg.dsn)
        await asyncio.to_thread(venue.start)  # the matcher restores from its archive first
        try:
            print(f"\nDR: venue back {time.monotonic() - begin:.1f}s after the restore began")
            after = await snapshot_of(venue)
            assert after["seq"] == before["seq"] + 1  # everything, then the new EpochStarted
            assert after["book"] == before["book"]
            assert after["balances"] == before["balances"]
            restored = await asyncio.to_thread(
                restore, archive, venue.symbol, tmp_path / "at-seq", "--to-seq", str(before["seq"])
            )
            assert restored.returncode == 0, restored.stderr
            assert json.loads(restored.stdout)["state_hash"] == before["state_hash"]
            market = await settled(venue, after["seq"])
            assert not market.get("breach"), market
            status, checked = await venue.post("/v1/admin/invariants/check")
            assert status == 200 and checked.get("ok") is True, checked
            # It trades again.
            again = CrossingLoad(venue.matcher.target, venue.symbol, traders=4, rate=40)
            again.sent = 10_000  # fresh client order ids
            await again.run_for(2)
            assert again.acked and not again.failed
        finally:
            await asyncio.to_thread(venue.stop)
    finally:
        restored_pg.stop()
