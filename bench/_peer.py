"""The Python peer: Starlette's `StaticFiles`, no auth, under the same uvicorn set-up.

Run as `python -m bench._peer --directory DIR --port P`. The uvicorn call mirrors
the one `strongroom serve` makes (one process, loop and HTTP parser left on "auto",
no uvicorn access log, no uvicorn logging config), so the two servers differ only
in the application they run. Files are served under `/static/`.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from bench._servers import LOOPBACK

__all__ = ["STATIC_PREFIX", "build_app", "main"]

STATIC_PREFIX = "/static"


def build_app(directory: str) -> Starlette:
    """Return a Starlette app serving `directory` under `STATIC_PREFIX`."""
    files = StaticFiles(directory=directory)
    return Starlette(routes=[Mount(STATIC_PREFIX, app=files, name="static")])


def main() -> None:
    """Parse the command line and serve until stopped."""
    parser = argparse.ArgumentParser(prog="python -m bench._peer")
    parser.add_argument("--directory", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    uvicorn.run(
        build_app(args.directory),
        host=LOOPBACK,
        port=args.port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
