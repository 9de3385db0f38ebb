"""Typed keys for what the app and each request carry (no module-level state)."""

from __future__ import annotations

from aiohttp import web
from llamahome.auth import TokenClaims
from llamahome.monitoring import AdvancedMetrics

from llamahomed.core.authority import Authority
from llamahomed.core.config_store import ConfigStore
from llamahomed.http.route import RouteTable
from llamahomed.observability.metrics import Monitoring
from llamahomed.service.inference import InferenceService

CONFIG = web.AppKey("config", ConfigStore)
AUTHORITY = web.AppKey("authority", Authority)
INFERENCE = web.AppKey("inference", InferenceService)
STARTED_AT = web.AppKey("started_at", float)
MONITORING = web.AppKey("monitoring", Monitoring)
# The counters other parts call: app[METRICS].rate_limited(), .auth_failed(), ...
METRICS = web.AppKey("metrics", AdvancedMetrics)
ROUTES = web.AppKey("routes", RouteTable)

REQUEST_ID = web.RequestKey("request_id", str)
CLAIMS = web.RequestKey("claims", TokenClaims)
