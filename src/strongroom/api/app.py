"""Build the FastAPI application from settings."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from strongroom import __version__
from strongroom.api import (
    admin,
    archive,
    auth_routes,
    files,
    health,
    imports,
    shares,
    uploads,
)
from strongroom.api._shares import ShareService
from strongroom.api.fastlane import DownloadFastLane
from strongroom.api.metrics import Metrics, MetricsMiddleware
from strongroom.api.middleware import AccessLogMiddleware, RawPathMiddleware
from strongroom.api.offload import Offloader
from strongroom.api.problems import install_problem_handlers
from strongroom.api.services import Services
from strongroom.api.web import build_router as build_web_router
from strongroom.config import Settings, load_settings
from strongroom.logging import configure_logging
from strongroom.storage.blob_stores import local_blob_dir

__all__ = ["create_app", "create_app_from_environment"]

API_PREFIX = "/api/v1"


def create_app(settings: Settings) -> FastAPI:
    """Open every service the app needs and return the app.

    Start-up problems (a missing space directory, a weak signing secret, an
    unreachable database) raise `ConfigError` here, before any request is served.
    The `resolver` setting ("walk") forces the component-walk fallback everywhere.
    """
    services = Services.open(settings)
    if settings.offload != "none" or settings.s3_redirect_seconds:
        blob_dir = local_blob_dir(settings)
        services.offloader = Offloader.from_settings(settings, blob_dir)
    share_service = ShareService.open(services)
    upload_service = uploads.UploadService.open(services)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.finish_interrupted_imports()
        threading.Thread(target=services.remove_staging_leftovers,
                         name="staging-sweep", daemon=True).start()
        try:
            yield
        finally:
            services.close()

    app = FastAPI(
        title="Strongroom",
        version=__version__,
        summary="A file service that keeps every request inside its space.",
        lifespan=lifespan,
        # A path missing its final '/' is a 404 problem, not a redirect: the
        # redirect's Location was built from the client's own Host header, and
        # it answered before any token was checked.
        redirect_slashes=False,
    )
    app.state.services = services
    app.state.shares = share_service
    app.state.uploads = upload_service
    install_problem_handlers(app)
    app.add_middleware(DownloadFastLane, services=services)
    app.add_middleware(RawPathMiddleware)
    app.add_middleware(shares.ShareHeaders)
    app.add_middleware(uploads.TusHeaders, path=API_PREFIX + uploads.UPLOADS_ROUTE)
    app.add_middleware(AccessLogMiddleware)
    # Outermost, so it counts what the fast lane and the path check answer too.
    metrics = Metrics()
    services.on_auth_failure = metrics.count_token_failure
    app.add_middleware(MetricsMiddleware, metrics=metrics, api_prefix=API_PREFIX)
    app.include_router(auth_routes.router, prefix=API_PREFIX)
    app.include_router(files.router, prefix=API_PREFIX)
    app.include_router(archive.router, prefix=API_PREFIX)
    app.include_router(imports.router, prefix=API_PREFIX)
    app.include_router(admin.router, prefix=API_PREFIX)
    app.include_router(shares.router, prefix=API_PREFIX)
    app.include_router(shares.link_router)
    app.include_router(uploads.router, prefix=API_PREFIX)
    # The page at / and /assets/; API routes all live under /api/v1.
    app.include_router(build_web_router())
    # /healthz, /readyz and /metrics.
    app.include_router(health.build_router(services, metrics))

    @app.get("/.well-known/jwks.json", tags=["auth"])
    def jwks() -> dict[str, list[dict[str, str]]]:
        """Publish the public token keys (RFC 7517); empty with HS256 secrets."""
        return services.tokens.public_jwks()

    return app


def create_app_from_environment() -> FastAPI:
    """Build the app from `STRONGROOM_CONFIG` and `STRONGROOM_*` variables.

    An ASGI factory for servers started by hand, e.g.
    `uvicorn --factory strongroom.api.app:create_app_from_environment`; being an
    entry point, it configures logging.
    """
    settings = load_settings(None)
    configure_logging(settings.log_format)
    return create_app(settings)
