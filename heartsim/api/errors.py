"""Error responses: one body shape (:class:`~heartsim.schema.ErrorBody`) for every error.

422 bodies name the offending field and its allowed range, whether FastAPI's validation or the
engine (a ``ValueError`` naming the parameter) rejected the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from heartsim.schema import ErrorBody, ValidationErrorBody, ValidationIssue, describe_range


class ApiError(Exception):
    """An error answered with ``{"error": ..., "message": ...}`` and ``status``.

    Parameters
    ----------
    status
        HTTP status code.
    error
        Short title, e.g. ``"Unknown person"``.
    message
        What happened and what to do.
    headers
        Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self, status: int, error: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})


def unknown_person(person: str, known: list[str]) -> ApiError:
    """404 for a ``?person=`` that does not exist."""
    shown = known if len(known) <= 20 else [*known[:20], "..."]
    return ApiError(
        404,
        "Unknown person",
        f"person {person!r} is unknown; known persons: {shown} (GET /persons)",
    )


def not_running(state: str) -> ApiError:
    """400 for a command that needs a running simulation."""
    return ApiError(
        400,
        "Simulation not running",
        f"The simulation is {state}; start it first using POST /simulation/start",
    )


_FIELD_AT_START = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*) ")


def validation_error(field: str | None, message: str, location: str = "query") -> ApiError:
    """422 for ``field`` (at ``location``: query, body) with ``message`` saying what is allowed."""
    detail = [ValidationIssue(loc=[location, field or "value"], msg=message, type="value_error")]
    return _ValidationApiError(message, field, detail)


def engine_value_error(exc: ValueError, location: str = "query") -> ApiError:
    """422 from an engine ``ValueError`` (its message names the parameter and its range)."""
    message = str(exc)
    match = _FIELD_AT_START.match(message)
    return validation_error(match.group(1) if match else None, message, location)


class _ValidationApiError(ApiError):
    def __init__(self, message: str, field: str | None, detail: list[ValidationIssue]) -> None:
        super().__init__(422, "Invalid parameter", message)
        self.field = field
        self.detail = detail


# Errors about a container itself (its type, its length), where the range of its items does
# not apply.
_CONTAINER_ERRORS = frozenset({"too_long", "too_short", "list_type", "dict_type"})


def _field_message(issue: Mapping[str, Any]) -> tuple[str | None, str]:
    loc = [part for part in issue.get("loc", ()) if part not in ("query", "body", "path")]
    parts: list[str] = []
    for part in loc:  # list items as rr_ms[3]; the range is the list's (its last name)
        if isinstance(part, int) and parts:
            parts[-1] += f"[{part}]"
        else:
            parts.append(str(part))
    field = ".".join(parts) if parts else None
    name = next((p for p in reversed(loc) if isinstance(p, str)), str(loc[-1])) if loc else None
    got = issue.get("input")
    kind = issue.get("type")
    rule = describe_range(name) if name is not None and kind not in _CONTAINER_ERRORS else None
    if kind == "json_invalid":  # loc holds the character position, not a field
        position = issue.get("loc", ())[-1]
        error = (issue.get("ctx") or {}).get("error", issue.get("msg"))
        return None, f"the request body is not valid JSON: {error} at character {position}"
    if kind == "missing":
        if field is None:
            return None, "a JSON request body is required"
        return field, f"{field} is required" + (f" ({rule})" if rule else "")
    if rule is not None:
        return field, f"{field} must be {rule}, got {got!r}"
    return field, f"{field}: {issue.get('msg')}" if field else str(issue.get("msg"))


def _json_error(
    status: int, body: ErrorBody, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status, headers=dict(headers or {})
    )


def error_response(exc: ApiError) -> JSONResponse:
    """``exc`` as a response (also usable as a WebSocket handshake's denial response)."""
    if isinstance(exc, _ValidationApiError):
        body: ErrorBody = ValidationErrorBody(
            error=exc.error, message=exc.message, field=exc.field, detail=exc.detail
        )
    else:
        body = ErrorBody(error=exc.error, message=exc.message)
    return _json_error(exc.status, body, exc.headers)


async def _api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


#: Items (of a list or object) or characters (of a string) of a rejected value that a 422
#: body echoes; larger values are summarised, e.g. ``"<list of 5000000 items>"``. Encoding a
#: huge echo would hold the event loop (5 s for 5 million numbers) and bloat the response.
MAX_ECHO_ITEMS = 100
_MAX_ECHO_DEPTH = 3


def _bounded_echo(value: Any, depth: int = 0) -> Any:
    """``value`` if small, else a short summary of it (nested values likewise).

    A raw body (``bytes``: sent with a non-JSON content type) is echoed as text, its
    undecodable bytes replaced, so that any body, even one that is not UTF-8, gets its 422.
    """
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        if len(value) > MAX_ECHO_ITEMS * 10:
            return f"<string of {len(value)} characters>"
        return value
    if isinstance(value, (list, tuple, dict)):
        kind = "object" if isinstance(value, dict) else "list"
        if len(value) > MAX_ECHO_ITEMS or depth >= _MAX_ECHO_DEPTH:
            return f"<{kind} of {len(value)} items>"
        if isinstance(value, dict):
            return {key: _bounded_echo(item, depth + 1) for key, item in value.items()}
        return [_bounded_echo(item, depth + 1) for item in value]
    return value


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    issues = jsonable_encoder(
        [
            {**issue, "input": _bounded_echo(issue["input"])} if "input" in issue else issue
            for issue in raw
        ]
    )
    field, message = _field_message(issues[0]) if issues else (None, "invalid request")
    if len(issues) > 1:
        others = "; ".join(_field_message(issue)[1] for issue in issues[1:4])
        message = f"{message}; {others}"
    body = ValidationErrorBody(
        error="Invalid parameter", message=message, field=field, detail=issues
    )
    return _json_error(422, body)


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (Starlette's 405 names only the
    first matching route's, e.g. ``GET`` for ``/persons``, which also takes ``POST``)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches(dict(request.scope, method=method))[0] is Match.FULL for route in routes
        )
    ]


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {
        400: "Bad request",
        404: "Not found",
        405: "Method not allowed",
        413: "Content too large",
    }
    title = titles.get(exc.status_code, "HTTP error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        message = f"No route {request.url.path}; see GET /docs for the API"
    elif exc.status_code == 405:
        allowed = _allowed_methods(request) or headers.get("Allow", "").split(", ")
        headers["Allow"] = ", ".join(allowed)
        message = f"{request.method} is not allowed on {request.url.path}; use {headers['Allow']}"
    return _json_error(exc.status_code, ErrorBody(error=title, message=message), headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with an :class:`~heartsim.schema.ErrorBody`."""
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)


#: The 400 of the routes with a JSON body: FastAPI cannot decode it. Any other body that is not
#: JSON, or not the expected JSON, gets 422 (``json_invalid`` and the like).
UNDECODABLE_BODY = "The body is sent as JSON but is not valid UTF-8; other malformed bodies get 422"


def error_responses(
    *statuses: int, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for ``statuses``, with their body models.

    ``descriptions`` replaces the generic description of some statuses for one route.
    """
    described = {
        400: "The simulation is not running (trigger-stress)",
        401: "Missing or wrong token (send Authorization: Bearer TOKEN or ?token=TOKEN)",
        403: "Cross-origin request from an origin not allowed (see cors_origins)",
        404: "Unknown person, or no data yet",
        409: "Conflict with the current persons",
        413: "The request body exceeds the server's limit (max_body_bytes, 1 MiB by default)",
        422: "A parameter is out of range or malformed; the body names it and its range",
        429: "Too many control requests from this client; retry after Retry-After seconds",
        500: "Internal error; the body says what failed",
        503: "The server is busy; retry after Retry-After seconds",
        **(descriptions or {}),
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = ValidationErrorBody if status == 422 else ErrorBody
        entry: dict[str, Any] = {"model": model, "description": described[status]}
        if status in (429, 503):
            entry["headers"] = {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
            }
        out[status] = entry
    return out


__all__ = [
    "UNDECODABLE_BODY",
    "ApiError",
    "engine_value_error",
    "error_response",
    "error_responses",
    "install_error_handlers",
    "not_running",
    "unknown_person",
    "validation_error",
]
