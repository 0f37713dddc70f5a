"""The interactive API documentation, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank without internet.
These load them from the ``fastapi-offline`` package (Swagger UI 5 and ReDoc 2 as shipped
files, served under ``/docs/assets/``), with the favicon of the dashboard, no web fonts and no
online validator. A Content-Security-Policy keeps each page on its own origin: the browser
refuses to contact any other host (ReDoc 2 always asks ``cdn.redoc.ly`` for the logo of its
"API docs by Redocly" footer; refused, it shows the text alone).

Every URL in the pages is relative to the page, so they also work under a path prefix that a
proxy strips (JupyterHub's jupyter-server-proxy serves the app under ``/user/NAME/proxy/PORT/``):
``openapi.json`` from ``…/docs`` is ``…/openapi.json``. ``/docs/`` and ``/redoc/`` redirect
(relatively) to the canonical pages, where those relative URLs resolve as intended.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

#: Where the Swagger UI and ReDoc files are served (from ``fastapi_offline/static``).
ASSETS_PATH = "/docs/assets"
#: The files' URL relative to a page at the root level (``/docs``, ``/redoc``).
_ASSETS = ASSETS_PATH.lstrip("/")
_FAVICON = "static/favicon.svg"
#: This origin only: the policy fences hosts, it is no script hardening. Inline scripts and
#: styles, ``eval``, ``data:`` and ``blob:`` stay allowed because the UIs use them (FastAPI's
#: page starts Swagger UI inline; ReDoc's bundled ajv compiles schemas with ``new Function``).
CONTENT_SECURITY_POLICY = "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:"

router = APIRouter(include_in_schema=False)


def _openapi_url(request: Request) -> str:
    """The OpenAPI document's URL relative to a page at the root level."""
    return str(request.app.openapi_url).lstrip("/")


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI: every operation, with "Try it out"."""
    page = get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} · API (Swagger UI)",
        swagger_js_url=f"{_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{_ASSETS}/swagger-ui.css",
        swagger_favicon_url=_FAVICON,
        # No badge fetched from the online validator (validator.swagger.io).
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc: the same document as one readable page."""
    page = get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} · API (ReDoc)",
        redoc_js_url=f"{_ASSETS}/redoc.standalone.js",
        redoc_favicon_url=_FAVICON,
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


@router.get("/docs/")
@router.get("/redoc/")
async def without_slash(request: Request) -> RedirectResponse:
    """``/docs/`` → ``/docs``: a relative redirect, so it keeps any proxy prefix."""
    page = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    return RedirectResponse(f"../{page}", status_code=308)


def install(app: FastAPI) -> None:
    """Add the documentation pages and their assets to ``app`` (built with ``docs_url=None``,
    ``redoc_url=None``)."""
    app.include_router(router)
    app.mount(
        ASSETS_PATH, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets"
    )
