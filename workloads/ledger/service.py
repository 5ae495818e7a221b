"""The ledger's parts, opened in dependency order and closed in reverse.

Open: migrate (advisory lock) -> connection pool -> applier (the single settlement writer)
-> reconciliation state -> settlement consumer -> background loops (reconciliation,
invariant guard, funding resends). Close (graceful shutdown): stop the loops, let the
consumer finish its batch and commit its offsets, let the applier finish what was
submitted, close the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import asyncpg
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import Tracer

from workloads.ledger import migrate, tracing
from workloads.ledger.applier import Applier
from workloads.ledger.consumer import SettlementConsumer
from workloads.ledger.corrections import Corrections
from workloads.ledger.funding import Funding
from workloads.ledger.invariants import Invariants
from workloads.ledger.matchers import MatcherClients
from workloads.ledger.reconciler import Reconciler, run_guard
from workloads.ledger.settings import LedgerSettings
from workloads.ledger.wallets import Wallets

log = logging.getLogger(__name__)


@dataclass
class Ledger:
    settings: LedgerSettings
    pool: asyncpg.Pool
    applier: Applier
    matchers: MatcherClients
    invariants: Invariants
    reconciler: Reconciler
    funding: Funding
    corrections: Corrections
    wallets: Wallets
    tracer: Tracer
    tracer_provider: TracerProvider | None = None
    consumer: SettlementConsumer | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    revision: str = ""

    @classmethod
    async def open(
        cls, settings: LedgerSettings, span_exporter: SpanExporter | None = None
    ) -> Ledger:
        """`span_exporter` (tests) receives every span; else LEDGER_OTEL_ENDPOINT's does."""
        db = settings.database
        revision = await migrate.upgrade(db.dsn) if db.migrate_on_start else ""
        provider = None
        if span_exporter is not None or settings.otel.endpoint:
            provider = tracing.provider(settings.otel, span_exporter)
        tracer = tracing.tracer(provider)
        pool = await asyncpg.create_pool(db.dsn, min_size=2, max_size=db.pool_size)
        applier = Applier(
            db.dsn, settings.fee_account, settings.kafka.batch_max_events, tracer=tracer
        )
        await applier.start()
        matchers = MatcherClients(settings.markets)
        invariants = Invariants(pool, matchers, settings.markets)
        reconciler = Reconciler(settings, pool, matchers, invariants)
        await reconciler.load()
        funding = Funding(pool, matchers, settings.funding_retry_ms)
        corrections = Corrections(pool, funding, settings.markets, settings.fee_account)
        wallets = Wallets(pool, funding, settings.fee_account)
        ledger = cls(
            settings,
            pool,
            applier,
            matchers,
            invariants,
            reconciler,
            funding,
            corrections,
            wallets,
            tracer,
            provider,
            revision=revision,
        )
        if settings.kafka.enabled:
            ledger.consumer = SettlementConsumer(
                settings.kafka, applier, settings.fee_account, traced=provider is not None
            )
            await ledger.consumer.start()
        if settings.reconciliation.enabled:
            ledger.tasks.append(asyncio.create_task(reconciler.run(), name="reconciliation"))
        if settings.guard.invariant_interval_ms:
            ledger.tasks.append(
                asyncio.create_task(
                    run_guard(invariants, reconciler, settings.guard.invariant_interval_ms),
                    name="invariant-guard",
                )
            )
        ledger.tasks.append(asyncio.create_task(funding.run(), name="funding-resend"))
        return ledger

    def ready(self) -> tuple[bool, str]:
        if self.consumer is not None and self.consumer.state == "failed":
            return False, f"settlement failing: {self.consumer.last_error}"
        dead = [t.get_name() for t in self.tasks if t.done()]
        if dead:
            return False, f"background task(s) ended: {', '.join(dead)}"
        consuming = "consuming" if self.consumer is not None else "not consuming (Kafka disabled)"
        return True, f"schema {self.revision or 'unchecked'}, {consuming}"

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.consumer is not None:
            await self.consumer.stop()
        await self.applier.stop()
        await self.matchers.close()
        await self.pool.close()
        if self.tracer_provider is not None:  # flushes the spans still queued (blocking)
            await asyncio.to_thread(self.tracer_provider.shutdown)
        log.info("ledger closed")
