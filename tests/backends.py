"""The engines a test server runs on: the embedded default, or PostgreSQL and S3.

`make test` runs the HTTP suite twice (issue 6): once on the default (SQLite and
a local blob folder), and once with `SR_TEST_BACKEND=postgresql-s3`, where every
server that `live_server.run_server` starts gets a fresh PostgreSQL database of
its own and a fresh bucket on one SeaweedFS shared by the test process. Nothing
else about the tests changes: that is the point.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from pathlib import Path

from pg_database import fresh_postgres_database
from s3_server import S3Server, run_s3_server

__all__ = ["BACKEND", "BACKEND_ENV", "backend_config", "on_s3"]

BACKEND_ENV = "SR_TEST_BACKEND"
BACKENDS = ("sqlite-local", "postgresql-s3")
BACKEND = os.environ.get(BACKEND_ENV) or "sqlite-local"
if BACKEND not in BACKENDS:
    raise RuntimeError(f"{BACKEND_ENV}={BACKEND!r}: use one of {', '.join(BACKENDS)}")

_shared: list[S3Server] = []
_by_config: dict[str, str] = {}
# Closed when the test process exits: SeaweedFS stops, the databases are dropped.
_stack = contextlib.ExitStack()
atexit.register(_stack.close)


def on_s3() -> bool:
    """Tell whether home blobs live in S3 in this run (not in data_dir/blobs)."""
    return BACKEND == "postgresql-s3"


def backend_config(config_text: str) -> str:
    """Return the TOML lines (before any table) that select this run's engines.

    Servers started with the same configuration text share one database and one
    bucket, as a restarted server or a second process of one deployment must;
    they are dropped when the test process ends.
    """
    if BACKEND == "sqlite-local":
        return ""
    if config_text not in _by_config:
        url = _stack.enter_context(fresh_postgres_database("strongroom_http"))
        s3 = _s3_server()
        bucket = s3.create_bucket()
        _by_config[config_text] = (
            f'database_url = "{url}"\n' + s3.toml(f"s3://{bucket}/blobs")
        )
    return _by_config[config_text]


def _s3_server() -> S3Server:
    # One SeaweedFS for the whole test process, stopped when it exits.
    if not _shared:
        top = _stack.enter_context(tempfile.TemporaryDirectory(prefix="sr-s3-"))
        _shared.append(_stack.enter_context(run_s3_server(Path(top))))
    return _shared[0]
