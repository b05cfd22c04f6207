"""The API application: `create_app(settings)` builds it, `metergate api serve` runs it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import billing, manual, meters, operations
from api.admin import admin_router
from api.auth import ScopedRoute
from api.db import Database
from api.metrics import ApiMetrics, MetricsMiddleware
from api.models import Health
from api.settings import Settings

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
DESCRIPTION = """\
Monthly billing readings with their provenance, meter data for engineers and dashboards,
manual readings with plausibility checks, and the meter registry.

Every route under /v1 needs `Authorization: Bearer mg_...`, a token made with
`metergate api token create --scope ...`, holding the scope the route names
(`x-required-scope`). Values are exact decimal strings; instants are ISO 8601 with their UTC
offset.
"""


def static_dir() -> Path:
    return Path(str(resources.files("api").joinpath("static")))


def create_app(settings: Settings) -> FastAPI:
    db = Database(settings)
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.open()
        try:
            yield
        finally:
            await db.close()

    app = FastAPI(
        title="metergate API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.metrics = metrics

    app.state.token_lookup = db.find_token

    for router in api_routers(settings):
        app.include_router(router)
    _add_plain_routes(app, db, metrics)
    app.mount("/dashboard", StaticFiles(directory=static_dir(), html=True), name="dashboard")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_exception_handler(psycopg.OperationalError, _database_unavailable)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    return app


def app_from_env() -> FastAPI:
    """The app of the environment's settings, for `uvicorn --factory api.app:app_from_env`."""
    return create_app(Settings.from_env())


def api_routers(settings: Settings) -> list[APIRouter]:
    """The routers of /v1; every route in them is a ScopedRoute that names its scope."""
    routers = [
        billing.router,
        admin_router(settings.max_import_bytes),
        meters.router,
        operations.router,
        manual.router,
    ]
    for router in routers:
        for route in router.routes:
            path = getattr(route, "path", "")
            if not isinstance(route, ScopedRoute) or not path.startswith(API_PREFIX + "/"):
                raise RuntimeError(f"{path} is not a scoped route under {API_PREFIX}")
    return routers


def _add_plain_routes(app: FastAPI, db: Database, metrics: ApiMetrics) -> None:
    @app.get("/healthz", tags=["service"], response_model=Health)
    async def healthz() -> Any:
        """Whether the API can reach its database (503 when it cannot)."""
        try:
            row = await db.ping()
        except psycopg.OperationalError as exc:
            log.warning("health check: database unavailable: %s", type(exc).__name__)
            return JSONResponse(
                {"status": "unavailable", "database": "unreachable"}, status_code=503
            )
        return Health(status="ok", database="ok", database_time=row["now"])

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The message of a connection error names host and port, not parameters; keep it in the log.
    log.warning("database unavailable: %s", exc)
    return JSONResponse(
        {"detail": "the database cannot be reached; try again shortly"}, status_code=503
    )


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 with where and what, never the input itself: it may be a key or other secret."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)
