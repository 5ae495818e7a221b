"""dr: the venue loses its data and comes back from its backups, while traders trade.

Backups are taken while trading, the way `make up` keeps them:
- PostgreSQL (the ledger's book and the gateways' state) archives every WAL segment to the
  S3 store, and a base backup is taken in the middle of the trading, with barman-cloud.
  Why a base backup plus the WAL archive and not pg_dump: the archive is continuous (what is
  lost is bounded by `archive_timeout`, not by the time since the last dump), it restores to
  any point in time, and a base backup copies files rather than re-executing every row, so
  neither backup nor restore grows with a full logical export; pg_dump is one consistent
  snapshot at one moment. It is also what CloudNativePG runs for the same job.
- The matcher archives its sealed WAL segments and its snapshots to the same store (for the
  drill it seals every second and snapshots every 1,000 commands; `make up` seals every 60 s).

The disaster: trading stops, the venue is stopped, and both data directories (PostgreSQL's
and the matcher's) are deleted. The restore: PostgreSQL from its newest base backup plus the
archived WAL, the matcher from its archive (every command hash-checked), then the ledger and
the gateways. The venue must come back with the same balances, the same book and the same
state hash (the archive restored to the last seq gives the hash the matcher had), and trade
again; then the usual audit.

Figures: `rpo_records` (commands and journal entries committed before the disaster and not
in the restored venue, target 0), `rto_seconds` (from the start of the restore to the first
order accepted again), the recovery point (`recovery_seq`, `recovery_time`), and
`exposure_records`: how far the matcher's archive was behind when trading stopped, what an
abrupt loss without the orderly stop would have cost (the matcher then refuses to serve
rather than reuse a seq the topic already has; see the README's Archive section).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from e2e.drills import audit
from e2e.drills.harness import Context, exercise, timed
from e2e.drills.report import Plan, Result
from e2e.drills.stackvenue import DrillVenue
from e2e.env import postgres
from e2e.env.matcher import restore
from e2e.env.pgbackup import PgArchive, archive_current_wal, promoted
from e2e.env.s3 import S3Server
from e2e.env.stack import UP_PG_PREFIX

TRADING = {False: 8.0, True: 45.0}
"""Seconds of trading with the backups running, before the disaster (short, full)."""
DRILL_MATCHER_ENV = {"MATCHER_ARCHIVE_SEAL_SECONDS": "1", "MATCHER_SNAPSHOT_EVERY": "1000"}


async def state(venue: DrillVenue) -> dict[str, Any]:
    """What must survive: the matcher's seq, hash and book, the ledger's balances and
    journal."""
    status = await venue.status()
    _, balances = await venue.admin("GET", "/v1/admin/balances")
    conn = await asyncpg.connect(venue.dsn)
    try:
        journal = await conn.fetchval("SELECT count(*) FROM journal")
    finally:
        await conn.close()
    rows = balances["balances"]
    return {
        "seq": status.seq,
        "state_hash": status.state_hash.hex(),
        "archived_seq": status.archive_last_seq,
        "book": await venue.book(),
        "balances": sorted((b["account"], b["asset"], b["available"], b["hold"]) for b in rows),
        "journal": journal,
    }


async def wal_unarchived(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        current = await conn.fetchval("SELECT pg_walfile_name(pg_current_wal_lsn())")
        row = await conn.fetchrow("SELECT last_archived_wal, archived_count FROM pg_stat_archiver")
    finally:
        await conn.close()
    return {"current_wal": current, **dict(row or {})}


async def disaster(ctx: Context) -> None:
    venue, flow, result = ctx.venue, ctx.flow, ctx.result
    figures, details = result.figures, result.details
    pg = venue.postgres
    assert pg.archive is not None
    pg_archive: PgArchive = pg.archive
    store = next(p for p in venue.stack.parts if isinstance(p, S3Server))
    matcher_archive = store.settings(prefix="up")
    details["matcher_settings"] = DRILL_MATCHER_ENV
    venue.matcher.extra_env.update(DRILL_MATCHER_ENV)
    await asyncio.to_thread(venue.matcher.stop)
    await venue.restart(venue.matcher)

    # Backups while trading: the WAL archives of both run all along; a base backup midway.
    await asyncio.sleep(TRADING[ctx.plan.full] / 2)
    began = time.monotonic()
    details["base_backup"] = await asyncio.to_thread(
        pg_archive.base_backup, pg.host, pg.port, postgres.SUPERUSER
    )
    timed(figures, "base_backup_seconds", began)
    await asyncio.sleep(TRADING[ctx.plan.full] / 2)

    flow.held = True  # trading stops
    await flow.drained()
    details["settled"] = await audit.settle(venue)
    before = await state(venue)
    await ctx.chain.sample(venue, "before the disaster")
    details["postgres_archive_when_trading_stopped"] = await wal_unarchived(pg.dsn)
    figures["exposure_records"] = before["seq"] - before["archived_seq"]
    recovery_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    # The disaster: the venue stopped, both data directories gone.
    for part in [*venue.gateways, venue.ledger, venue.matcher]:
        await asyncio.to_thread(part.stop)
    await archive_current_wal(pg.dsn)
    await asyncio.to_thread(pg.stop)
    shutil.rmtree(venue.matcher.data_dir)
    shutil.rmtree(pg.data_dir)
    details["destroyed"] = [str(venue.matcher.data_dir), str(pg.data_dir)]

    # The restore.
    began = time.monotonic()
    details["restored_from_backup"] = await asyncio.to_thread(
        pg_archive.restore, pg.data_dir, None, postgres.server_user()
    )
    timed(figures, "pg_download_seconds", began)
    await asyncio.to_thread(pg.start, 300)
    await promoted(pg.dsn, within=300)
    timed(figures, "pg_restored_seconds", began)
    await asyncio.to_thread(venue.matcher.start, 300)  # from its archive, hash-checked
    timed(figures, "matcher_restored_seconds", began)
    for part in [venue.ledger, *venue.gateways]:
        await venue.restart(part)
    after = await state(venue)
    restored_to = await asyncio.to_thread(restored_hash, matcher_archive, venue.symbol,
                                          before["seq"])  # fmt: skip
    flow.held = False
    loop = asyncio.get_running_loop()
    resumed = loop.time()
    for _ in range(1200):  # a minute at most
        if flow.acked_after(resumed):
            break
        await asyncio.sleep(0.05)
    timed(figures, "rto_seconds", began)
    figures["cycles"] = 1

    lost = (before["seq"] - (after["seq"] - 1)) + (before["journal"] - after["journal"])
    figures.update({"rpo_records": lost, "recovery_seq": before["seq"],
                    "recovery_time": recovery_time, "pg_wal_archive": PG_ARCHIVE_NOTE})  # fmt: skip
    same = {
        "seq": after["seq"] == before["seq"] + 1,  # everything, then the new EpochStarted
        "book": after["book"] == before["book"],
        "balances": after["balances"] == before["balances"],
        "journal": after["journal"] == before["journal"],
        "state_hash": restored_to == before["state_hash"],
    }
    figures["restored_same"] = all(same.values())
    details["restored"] = {"before": {k: v for k, v in before.items() if k != "balances"},
                           "after": {k: v for k, v in after.items() if k != "balances"},
                           "same": same, "archive_hash_at_recovery_seq": restored_to}  # fmt: skip
    if not figures["restored_same"]:
        result.problems.append(f"the restored venue differs: {same}")
    if lost:
        result.problems.append(f"{lost} records committed before the disaster were not restored")
    if not flow.acked_after(resumed):
        result.problems.append("no order was accepted within 60 s of the restore")


PG_ARCHIVE_NOTE = f"barman-cloud base backup + WAL archive (s3 prefix {UP_PG_PREFIX})"


def restored_hash(archive: Any, symbol: str, seq: int) -> str:
    """The state hash the matcher's archive gives at `seq` (restored into a scratch
    directory with the matcher's own restore command)."""
    with tempfile.TemporaryDirectory(prefix="drill-dr-") as scratch:
        done = restore(archive, symbol, Path(scratch) / "data", "--to-seq", str(seq))
    if done.returncode != 0:
        return f"restore failed: {done.stderr.strip()[-300:]}"
    return str(json.loads(done.stdout)["state_hash"])


async def run(venue: DrillVenue, plan: Plan) -> Result:
    return await exercise(venue, plan, disaster, rate=40.0)
