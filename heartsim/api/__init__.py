"""The HTTP and WebSocket API: :func:`create_app` builds it around an engine, hub and runner."""

from heartsim.api.app import create_app
from heartsim.api.context import AppContext, WebSocketSettings
from heartsim.api.health import HealthSettings
from heartsim.api.security import DEFAULT_RATE_LIMIT, DEFAULT_WS_CONNECT_LIMIT, RateLimit

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "DEFAULT_WS_CONNECT_LIMIT",
    "AppContext",
    "HealthSettings",
    "RateLimit",
    "WebSocketSettings",
    "create_app",
]
