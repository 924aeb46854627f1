"""Sessions and the caller's account: log in (`POST /token`), refresh
(`POST /token/refresh`), log out, see the account and change its password.

The refresh route takes a form, like the password flow: `refresh_token=R`
(and optionally `grant_type=refresh_token`, as RFC 6749 section 6 spells it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Form, Request, Response

from strongroom.api.deps import CurrentSession, get_services
from strongroom.api.problem_docs import problem_responses
from strongroom.api.schemas import (
    AccountOut,
    ApiKeyIn,
    ApiKeyOut,
    PasswordChangeIn,
    TokenOut,
)
from strongroom.api.services import IssuedTokens, Services
from strongroom.auth.passwords import MAX_CONCURRENT_HASHES
from strongroom.errors import (
    ApiKeyNotFoundError,
    InvalidRequestError,
    InvalidScopeError,
)
from strongroom.storage.api_keys import ApiKey

__all__ = ["router"]

# A refused form or password (400), token (401) or right (403), an unknown API
# key (404), too many keys (409), a malformed request (422), the login throttle
# (429).
router = APIRouter(
    tags=["auth"], responses=problem_responses(400, 401, 403, 404, 409, 422, 429)
)

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
    responses=problem_responses(descriptions={401: "Wrong user name or password"}),
)
async def issue_token(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    username: Annotated[str, Form(max_length=MAX_USERNAME_CHARS)],
    password: Annotated[str, Form(max_length=MAX_PASSWORD_CHARS)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
    scope: Annotated[str | None, Form()] = None,
) -> TokenOut:
    """Exchange a user name and password for a short-lived bearer token.

    `scope` asks for some of the scopes the account holds (`files:read`,
    `files:write`, `shares`, `admin`), space-separated; without it the token
    gets all of them. The answer names the scopes granted. A wrong name or
    password gets the same answer, in the same time, whether the user exists or
    not.
    """
    request.state.op = "login"
    await _check_form(request, ("username", "password", "scope", "grant_type"))
    client = request.client.host if request.client else "unknown"
    # Waiting for a hashing slot happens here, in the event loop, so a burst of
    # logins never holds the worker threads that every other route needs.
    async with _hashing_slots:
        issued = await anyio.to_thread.run_sync(
            services.login, username, password, client, scope
        )
    return _token_out(issued)


@router.post(
    "/token/refresh",
    response_model=TokenOut,
    responses=problem_responses(
        descriptions={400: "Refresh token refused (invalid_grant)"}
    ),
)
async def refresh_token(
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
    await _check_form(request, ("refresh_token", "grant_type"))
    issued = await anyio.to_thread.run_sync(services.refresh, refresh_token)
    return _token_out(issued)


@router.post("/logout", status_code=204,
             responses=problem_responses(descriptions={401: "No session"}))
def logout(
    request: Request,
    session: CurrentSession,
    services: Annotated[Services, Depends(get_services)],
) -> Response:
    """Revoke the session of the bearer token: its refresh and access tokens."""
    request.state.op = "logout"
    services.logout(*session)
    return Response(status_code=204)


@router.get("/account", response_model=AccountOut)
def account(
    session: CurrentSession,
    services: Annotated[Services, Depends(get_services)],
) -> AccountOut:
    """Describe the caller: name, role, the scopes of this token, and storage.

    `used_bytes` adds up the files of the caller's home space; `quota_bytes` is
    what it may hold (null: no bound).
    """
    user, claims = session
    return AccountOut(
        name=user.name, role=user.role, scopes=sorted(claims.scopes),
        used_bytes=services.meta.used_bytes(user.id),
        quota_bytes=services.settings.home_quota_bytes,
    )


@router.post(
    "/account/password",
    status_code=204,
    responses=problem_responses(descriptions={403: "The current password is wrong"}),
)
async def change_password(
    request: Request,
    body: PasswordChangeIn,
    session: CurrentSession,
    services: Annotated[Services, Depends(get_services)],
) -> Response:
    """Change the caller's password; every session of the account ends.

    Any valid token of the account may ask, but only with the current password.
    All its access and refresh tokens, this one included, are refused from the
    next request on, in every server process: log in again with the new one.
    """
    request.state.op = "password_change"
    user = session[0]
    client = request.client.host if request.client else "unknown"
    async with _hashing_slots:
        await anyio.to_thread.run_sync(
            services.change_password,
            user,
            body.current_password,
            body.new_password,
            client,
        )
    return Response(status_code=204)


@router.post(
    "/account/keys",
    response_model=ApiKeyOut,
    status_code=201,
    responses=problem_responses(descriptions={403: "The password is wrong"}),
)
async def create_api_key(
    request: Request,
    body: ApiKeyIn,
    session: CurrentSession,
    services: Annotated[Services, Depends(get_services)],
) -> ApiKeyOut:
    """Make an API key for scripts; the answer is the only time `key` is shown.

    Send it as `Authorization: Bearer srk_...`. Its scopes are at most this
    login's, and the account password must come along: a stolen access token
    alone cannot turn into a lasting key. It works until revoked, until
    `expires_in_days` (default 90), or until the account's tokens are revoked
    (password change, role change, disable, `strongroom token revoke`).
    Managing keys needs a login's token, not a key.
    """
    user, claims = session
    expires_at = datetime.now(UTC) + timedelta(days=body.expires_in_days)
    client = request.client.host if request.client else "unknown"
    async with _hashing_slots:
        key, row = await anyio.to_thread.run_sync(
            lambda: services.create_api_key(
                user, claims, body, expires_at=expires_at, client=client
            )
        )
    return _key_out(row, key)


@router.get("/account/keys", response_model=list[ApiKeyOut])
def list_api_keys(
    session: CurrentSession, services: Annotated[Services, Depends(get_services)]
) -> list[ApiKeyOut]:
    """List this account's live API keys (never their secrets), newest first."""
    return [_key_out(row) for row in services.meta.api_keys.list_for(session[0].id)]


@router.delete("/account/keys/{key_id}", status_code=204)
def revoke_api_key(
    key_id: str,
    session: CurrentSession,
    services: Annotated[Services, Depends(get_services)],
) -> Response:
    """Revoke one of this account's API keys at once, in every server process."""
    if not services.meta.api_keys.revoke(session[0].id, key_id):
        raise ApiKeyNotFoundError("this account has no live API key with that id")
    return Response(status_code=204)


async def _check_form(request: Request, names: tuple[str, ...]) -> None:
    # RFC 6749, section 3.1: no parameter twice (which copy would count?), and
    # an empty `scope` is not "no scope": it is refused, not widened to all.
    form = await request.form()
    for name in names:
        values = form.getlist(name)
        if len(values) > 1:
            raise InvalidRequestError(f"the parameter {name!r} is sent twice")
        if name == "scope" and values == [""]:
            raise InvalidScopeError(
                "scope is empty; leave it out to get every scope the account holds"
            )


def _key_out(row: ApiKey, key: str | None = None) -> ApiKeyOut:
    return ApiKeyOut(
        id=row.id,
        name=row.name,
        scope=row.scope,
        created=_iso(row.created),
        expires_at=_iso(row.expires_at) if row.expires_at else "",
        key=key,
    )


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _token_out(issued: IssuedTokens) -> TokenOut:
    return TokenOut(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        scope=issued.scope,
    )
