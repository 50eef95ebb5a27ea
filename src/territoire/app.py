"""The Territoire application, assembled explicitly from its settings (no global state)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from territoire import __version__
from territoire.accounts import authorize
from territoire.config import Settings
from territoire.context import api as context_api
from territoire.context.api_contexts import build_contexts_router
from territoire.context.errors import (
    BadRequestData,
    InternalError,
    InvalidRequest,
    NgsiLdError,
    OperationNotSupported,
    ResourceNotFound,
)
from territoire.context.jsonld import ContextResolver
from territoire.context.store import Store, open_store
from territoire.context.validation import SchemaValidator

NGSI_LD_PREFIX = "/ngsi-ld/v1"
log = logging.getLogger("territoire")


def problem_response(error: NgsiLdError) -> Response:
    """ProblemDetails (RFC 9457) with the NGSI-LD error type (clause 5.5.2)."""
    return Response(
        orjson.dumps(error.to_problem()),
        status_code=error.status,
        media_type="application/json",
    )


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "Invalid request parameters"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NgsiLdError)
    async def ngsi_error(request: Request, exc: NgsiLdError) -> Response:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return problem_response(BadRequestData(_validation_detail(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        error: NgsiLdError
        if exc.status_code == 404:
            error = ResourceNotFound(f"No resource at {request.url.path}")
        elif exc.status_code == 405:
            error = OperationNotSupported(f"{request.method} is not supported on {request.url.path}")
            error.status = 405
        else:
            error = InvalidRequest(str(exc.detail))
            error.status = exc.status_code
        return problem_response(error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("Unexpected error on %s %s", request.method, request.url.path)
        return problem_response(InternalError("An unexpected error occurred; it has been logged"))


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """Build the application. ``store`` may be given (tests, embedding); else opened from settings."""
    settings = settings or Settings()
    owns_store = store is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Background work registered by the domains (delivery workers, scheduled jobs) runs for
        # the life of the application and is cancelled, then awaited, at shutdown.
        tasks = [asyncio.create_task(start(), name=name) for name, start in app.state.background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for close in reversed(app.state.on_close):
                close()
            if owns_store:
                app.state.store.close()

    app = FastAPI(
        title="Territoire",
        version=__version__,
        description="Territorial data platform: NGSI-LD context broker (ETSI GS CIM 009 v1.8) and services.",
        dependencies=[Depends(authorize)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = (
        store
        if store is not None
        else open_store(
            settings.database_url,
            busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            pool_size=settings.postgres_pool_size,
        )
    )
    app.state.resolver = ContextResolver(
        settings.context_dir, settings.context_fetch_timeout, persistence=app.state.store
    )
    app.state.validator = SchemaValidator()
    #: (name, coroutine function) pairs run as tasks while the application runs.
    app.state.background = []
    #: Callables run at shutdown, in reverse order of registration.
    app.state.on_close = []
    install_error_handlers(app)
    app.include_router(context_api.router, prefix=NGSI_LD_PREFIX, tags=["NGSI-LD"])
    app.include_router(
        build_contexts_router(context_api.resolver_dependency), prefix=NGSI_LD_PREFIX, tags=["NGSI-LD @context"]
    )
    # Each domain installs its routes, write hooks and background work here, in dependency order.
    from territoire.context.temporal import install_temporal

    install_temporal(app)
    from territoire.context.subscriptions import install_subscriptions

    install_subscriptions(app)

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, Any]:
        store_: Store = app.state.store
        return {"status": "ok", "version": __version__, "backend": store_.backend, "schema": store_.schema_version()}

    return app
