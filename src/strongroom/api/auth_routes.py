"""Sessions: log in (`POST /token`), refresh (`POST /token/refresh`), log out.

The refresh route takes a form, like the password flow: `refresh_token=R`
(and optionally `grant_type=refresh_token`, as RFC 6749 section 6 spells it).
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Form, Request, Response

from strongroom.api.deps import bearer_token, get_services
from strongroom.api.schemas import TokenOut
from strongroom.api.services import IssuedTokens, Services
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
        issued = await anyio.to_thread.run_sync(
            services.login, username, password, client
        )
    return _token_out(issued)


@router.post(
    "/token/refresh",
    response_model=TokenOut,
    responses={400: {"description": "Refresh token refused (invalid_grant)"}},
)
def refresh_token(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    refresh_token: Annotated[str, Form()],
    grant_type: Annotated[str | None, Form(pattern="^refresh_token$")] = None,
) -> TokenOut:
    """Spend a refresh token for a new access token and a new refresh token.

    Each refresh token works once. Sending one a second time revokes its whole
    session: every refresh and access token of that login.
    """
    request.state.op = "refresh"
    return _token_out(services.refresh(refresh_token))


@router.post("/logout", status_code=204, responses={401: {"description": "No session"}})
def logout(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Response:
    """Revoke the session of the bearer token: its refresh and access tokens."""
    request.state.op = "logout"
    services.logout(bearer_token(request.headers.getlist("authorization")))
    return Response(status_code=204)


def _token_out(issued: IssuedTokens) -> TokenOut:
    return TokenOut(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
    )
