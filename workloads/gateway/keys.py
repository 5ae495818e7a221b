"""Typed application and request keys (aiohttp `web.AppKey`)."""

from __future__ import annotations

from aiohttp import web
from opentelemetry.trace import Tracer

from workloads.gateway.core import Core
from workloads.gateway.feed import Feed
from workloads.gateway.history import History
from workloads.gateway.hub import Hub
from workloads.gateway.ledger import LedgerReader
from workloads.gateway.marketdata import Projection
from workloads.gateway.passwords import Passwords
from workloads.gateway.settings import GatewaySettings
from workloads.gateway.store import Principal, Store

SETTINGS = web.AppKey("settings", GatewaySettings)
STORE = web.AppKey("store", Store)
CORE = web.AppKey("core", Core)
PROJECTION = web.AppKey("projection", Projection)
FEED = web.AppKey("feed", Feed)
HISTORY = web.AppKey("history", History)
LEDGER = web.AppKey("ledger", LedgerReader)
HUB = web.AppKey("hub", Hub)
PASSWORDS = web.AppKey("passwords", Passwords)
TRACER = web.AppKey("tracer", Tracer)
PRINCIPAL = web.RequestKey("principal", Principal)  # None for public routes (not set)
TRACE_ID = web.RequestKey("trace_id", str)  # 32 hex digits, set by the observe middleware
