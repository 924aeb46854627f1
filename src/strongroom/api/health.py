"""The routes an operator's tools call: /healthz, /readyz and /metrics.

- `GET /healthz` (liveness) answers while the process runs and touches nothing
  else: a liveness probe that failed whenever the database did would get healthy
  processes restarted for someone else's outage.
- `GET /readyz` (readiness) checks that the database answers a query and that the
  blob store is there, each in a thread of its own bounded by
  `READY_TIMEOUT_SECONDS`, so a hung database makes it answer 503, never hang.
- `GET /metrics` exposes this process's counters (`api.metrics`) in Prometheus'
  text format, to the configured `metrics_token` or to a token or API key with
  the `admin` scope; each process counts only its own requests.

None of them lives under /api/v1, and none needs a token except /metrics. The
access log writes a successful scrape's line at DEBUG: Prometheus polls every few
seconds, and those lines would drown the ones that matter. Probes stay at INFO,
where the tests and operators use /healthz as a marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable, Mapping
from functools import partial
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from sqlalchemy import Engine

from strongroom.api.deps import bearer_token
from strongroom.api.metrics import METRICS_CONTENT_TYPE, Metrics
from strongroom.api.problem_docs import problem_responses
from strongroom.api.problems import problem_response
from strongroom.api.services import Services
from strongroom.auth.scopes import ADMIN

__all__ = [
    "READY_TIMEOUT_SECONDS",
    "ReadinessProbe",
    "build_router",
    "check_database",
]

# A readiness probe must answer within its own timeout: Kubernetes' default is
# one second, and we advise three; a healthy SELECT 1 takes milliseconds.
READY_TIMEOUT_SECONDS = 2.0
# A check that finished less than this long ago is not run again for /readyz.
READY_FRESH_SECONDS = 1.0

CheckResult = Literal["ok", "failed", "timeout"]

log = logging.getLogger("strongroom.api")

# Probe answers describe this moment; no cache may keep one.
_NO_STORE = {"Cache-Control": "no-store"}


class HealthOut(BaseModel):
    """The liveness answer."""

    status: Literal["ok"]


class ReadyOut(BaseModel):
    """The readiness answer: every check passed."""

    status: Literal["ready"]
    checks: dict[str, CheckResult]


def build_router(services: Services, metrics: Metrics) -> APIRouter:
    """Return the router of /healthz, /readyz and /metrics for one app."""
    router = APIRouter(tags=["health"])
    probe = ReadinessProbe(
        {
            "database": partial(check_database, services.meta.engine),
            "blobs": services.blobs.check,
        },
        READY_TIMEOUT_SECONDS,
    )
    scrape = _ScrapeGate(services, services.settings.metrics_token)

    @router.get("/healthz", summary="Liveness: the process is up",
                response_model=HealthOut)
    async def healthz(response: Response) -> HealthOut:
        """Answer 200 while the process runs; looks at no database or disk."""
        response.headers.update(_NO_STORE)
        return HealthOut(status="ok")

    @router.get(
        "/readyz", summary="Readiness: the database and the blob store answer",
        response_model=ReadyOut,
        responses=problem_responses(descriptions={503: "A check failed or timed out"}),
    )
    async def readyz(response: Response) -> ReadyOut | Response:
        """Check the database and the blob store; 503 names the one that failed.

        Answers within about READY_TIMEOUT_SECONDS whatever the checks do.
        """
        checks = await probe.run()
        failed = [name for name, result in checks.items() if result != "ok"]
        if failed:
            detail = "not ready: " + ", ".join(f"{n} {checks[n]}" for n in failed)
            return problem_response(503, "not_ready", detail, _NO_STORE, checks=checks)
        response.headers.update(_NO_STORE)
        return ReadyOut(status="ready", checks=checks)

    # HEAD too, as many load balancers probe; one operation each in OpenAPI.
    for path, endpoint in (("/healthz", healthz), ("/readyz", readyz)):
        router.add_api_route(path, endpoint, methods=["HEAD"], response_model=None,
                             include_in_schema=False)

    @router.get("/metrics", include_in_schema=False)
    async def metrics_text(request: Request) -> Response:
        """Expose the counters to the metrics token or an admin token or key."""
        scrape.authorize(request)
        # Logged at DEBUG once it succeeds (see AccessLogMiddleware).
        request.state.log_quietly = True
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE,
                        headers=_NO_STORE)

    return router


def check_database(engine: Engine) -> None:
    """Run `SELECT 1` through `engine`; on SQLite, also stat the database file.

    A pooled SQLite connection keeps the file it opened, so its `SELECT 1` still
    works after the file was removed or its folder made unreachable, while every
    new connection would fail (or make an empty database); the stat sees that.

    Raises whatever the driver or `os.stat` raises.
    """
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    path = engine.url.database
    if engine.dialect.name == "sqlite" and path and path != ":memory:":
        os.stat(path)


class ReadinessProbe:
    """Run named blocking checks, each in a daemon thread bounded by a timeout.

    A check that has not finished in time is reported "timeout" and left to
    finish on its own: Python cannot stop a thread blocked in a driver. Until
    it ends, later probes wait on that same run rather than start another, so a
    hung database holds one thread per check, not one per probe. The threads
    are daemons, so a hung check never delays the process's exit.
    """

    def __init__(
        self,
        checks: Mapping[str, Callable[[], None]],
        timeout_seconds: float,
        fresh_seconds: float = READY_FRESH_SECONDS,
    ) -> None:
        self._checks = dict(checks)
        self._timeout = timeout_seconds
        self._fresh = fresh_seconds
        self._running: dict[str, asyncio.Future[Exception | None]] = {}
        self._started: dict[str, float] = {}

    async def run(self) -> dict[str, CheckResult]:
        """Run every check at once; map each name to ok, failed or timeout."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run_one(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def _run_one(self, name: str) -> CheckResult:
        loop = asyncio.get_running_loop()
        running = self._running.get(name)
        # A finished run younger than `fresh_seconds` answers again: anonymous
        # probes cannot make us ask the database or the store more often.
        stale = running is not None and running.done() and (
            loop.time() - self._started.get(name, 0.0) >= self._fresh
        )
        if running is None or stale or running.get_loop() is not loop:
            running = self._running[name] = self._start(name, loop)
            self._started[name] = loop.time()

        try:
            outcome = await asyncio.wait_for(asyncio.shield(running), self._timeout)
        except TimeoutError:
            log.warning("not_ready", extra={"check": name, "error": "timeout"})
            return "timeout"
        if outcome is not None:
            # The type only: driver messages may name hosts and databases.
            error = type(outcome).__name__
            log.warning("not_ready", extra={"check": name, "error": error})
            return "failed"
        return "ok"

    def _start(
        self, name: str, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Exception | None]:
        future: asyncio.Future[Exception | None] = loop.create_future()
        check = self._checks[name]

        def work() -> None:
            outcome: Exception | None = None
            try:
                check()
            except Exception as exc:  # any failure means "not ready"
                outcome = exc
            # The loop may have closed while a hung check ran (shutdown).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, outcome)

        threading.Thread(target=work, name=f"readyz-{name}", daemon=True).start()
        return future


class _ScrapeGate:
    """Who may read /metrics: the metrics token, or an admin's token or key."""

    def __init__(self, services: Services, metrics_token: str | None) -> None:
        self._services = services
        # Compared as digests: equal lengths, so the time taken tells nothing.
        self._digest = _digest(metrics_token) if metrics_token else None

    def authorize(self, request: Request) -> None:
        """Return if the request may scrape; raise otherwise.

        Raises:
            AuthError, InvalidTokenError: no bearer token, or a refused one (401).
            InsufficientScopeError: a valid token or key without `admin` (403).
        """
        token = bearer_token(request.headers.getlist("authorization"))
        if self._digest is not None and hmac.compare_digest(
            _digest(token), self._digest
        ):
            return
        user = self._services.authorize(token, ADMIN)
        request.state.user_id = user.id


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def _settle(
    future: asyncio.Future[Exception | None], outcome: Exception | None
) -> None:
    if not future.done():
        future.set_result(outcome)
