"""The OAuth2 password flow: `POST /api/v1/token`."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Form, Request

from strongroom.api.deps import get_services
from strongroom.api.schemas import TokenOut
from strongroom.api.services import Services
from strongroom.auth.passwords import MAX_CONCURRENT_HASHES

__all__ = ["router"]

router = APIRouter(tags=["auth"])

# The form fields are bounded before any hashing: a password over this many
# characters is refused by the hasher anyway, and a huge name is never a user.
MAX_USERNAME_CHARS = 256
MAX_PASSWORD_CHARS = 1024
# Logins hashing at once in this process; the same bound as the hasher's own
# (MAX_CONCURRENT_HASHES), applied before a worker thread is taken.
_hashing_slots = anyio.Semaphore(MAX_CONCURRENT_HASHES)


@router.post(
    "/token",
    response_model=TokenOut,
    responses={401: {"description": "Wrong user name or password"}},
)
async def issue_token(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    username: Annotated[str, Form(max_length=MAX_USERNAME_CHARS)],
    password: Annotated[str, Form(max_length=MAX_PASSWORD_CHARS)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> TokenOut:
    """Exchange a user name and password for a short-lived bearer token.

    The answer and its timing are the same whether the user exists or not.
    """
    request.state.op = "login"
    client = request.client.host if request.client else "unknown"
    # Waiting for a hashing slot happens here, in the event loop, so a burst of
    # logins never holds the worker threads that every other route needs.
    async with _hashing_slots:
        token, expires_in = await anyio.to_thread.run_sync(
            services.login, username, password, client
        )
    return TokenOut(access_token=token, expires_in=expires_in)
