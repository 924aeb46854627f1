"""Build the FastAPI application from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from strongroom import __version__
from strongroom.api import auth_routes, files
from strongroom.api.middleware import AccessLogMiddleware, RawPathMiddleware
from strongroom.api.problems import install_problem_handlers
from strongroom.api.services import Services
from strongroom.config import Settings

__all__ = ["create_app"]

API_PREFIX = "/api/v1"


def create_app(settings: Settings, *, resolver: str = "auto") -> FastAPI:
    """Open every service the app needs and return the app.

    Start-up problems (a missing space directory, a weak signing secret, an
    unreachable database) raise `ConfigError` here, before any request is served.
    `resolver="walk"` forces the component-walk fallback for every space.
    """
    services = Services.open(settings, resolver=resolver)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            services.close()

    app = FastAPI(
        title="Strongroom",
        version=__version__,
        summary="A file service that keeps every request inside its space.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_problem_handlers(app)
    app.add_middleware(RawPathMiddleware)
    app.add_middleware(AccessLogMiddleware)
    app.include_router(auth_routes.router, prefix=API_PREFIX)
    app.include_router(files.router, prefix=API_PREFIX)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Answer while the process is up; needs no token."""
        return {"status": "ok"}

    return app
