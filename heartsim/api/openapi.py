"""The OpenAPI document of one app, true to that app's access settings.

FastAPI declares the token schemes on every operation whose guard *can* ask for a token. What
an operation requires depends on the server's settings, so the document is adjusted per app:

- with a token, control routes, ``POST /predict`` and ``GET /ws/heartbeat`` (the stream's
  handshake) list the ``Authorization: Bearer`` and ``?token=`` schemes (either suffices);
  read routes list them only when public reads are off;
- everything else has no ``security`` and no 401 response, and without a token the schemes
  are not in the document at all.

Generated clients and conformance tools (schemathesis' ``ignored_auth`` check) then see what the
server enforces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant

from heartsim.api.context import AppContext, control_guard, predict_guard, read_guard
from heartsim.api.ws import HEARTBEAT_PATH


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """The app's path operations, each with ``path_format``, ``methods`` and ``dependant``."""
    # FastAPI >= 0.165 keeps included routers as such in app.routes; iter_route_contexts
    # flattens them. Older versions list every APIRoute in app.routes directly.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = flatten(app.routes) if flatten is not None else app.routes
    for route in routes:
        if getattr(route, "dependant", None) is not None and getattr(
            route, "include_in_schema", False
        ):
            yield route


def needs_token(path: str, dependant: Dependant, ctx: AppContext) -> bool:
    """Whether the operation at ``path`` with ``dependant`` requires the token on this app."""
    if not ctx.auth.enabled:
        return False
    if path == HEARTBEAT_PATH:
        return True
    calls = set(_calls(dependant))
    if control_guard in calls or predict_guard in calls:
        return True
    return read_guard in calls and not ctx.public_read


def _apply_security(app: FastAPI, ctx: AppContext, document: dict[str, Any]) -> None:
    components = document.get("components", {})
    schemes = components.get("securitySchemes", {})
    requirement: list[dict[str, list[str]]] = [
        {name: []} for name in schemes
    ]  # alternatives: any one scheme suffices
    required_anywhere = False
    for route in _api_routes(app):
        required = needs_token(route.path_format, route.dependant, ctx)
        required_anywhere |= required
        path_item = document["paths"].get(route.path_format, {})
        for method in route.methods:
            operation = path_item.get(method.lower())
            if operation is None:
                continue
            operation.pop("security", None)
            if required:
                operation["security"] = requirement
            else:
                operation.get("responses", {}).pop("401", None)
    if not required_anywhere and schemes:
        del components["securitySchemes"]


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (``GET /openapi.json``, ``/docs``) state this app's security."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            _apply_security(app, app.state.heartsim, document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
