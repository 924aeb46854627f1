"""Request dependencies: the shared services and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes

from strongroom.api.services import Services
from strongroom.auth import AccessClaims
from strongroom.auth.api_keys import is_api_key
from strongroom.auth.scopes import (
    ADMIN,
    FILES_READ,
    FILES_WRITE,
    SCOPE_DESCRIPTIONS,
    SHARES,
)
from strongroom.errors import AuthError, InvalidTokenError, PermissionDeniedError
from strongroom.storage import User

__all__ = [
    "AdminUser",
    "CurrentSession",
    "FilesReader",
    "FilesWriter",
    "Services",
    "SharesUser",
    "authorize_header",
    "bearer_token",
    "current_session",
    "current_user",
    "get_services",
]

# Only documents the password flow and its scopes for the OpenAPI page, where a
# person ticks the scopes to ask for; the header is parsed below, strictly, by
# our own code.
_oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/token", scopes=SCOPE_DESCRIPTIONS, auto_error=False
)


async def get_services(request: Request) -> Services:
    """Return the services built at start-up."""
    services: Services = request.app.state.services
    return services


async def current_user(
    request: Request,
    security_scopes: SecurityScopes,
    services: Annotated[Services, Depends(get_services)],
    _documented: Annotated[str | None, Depends(_oauth2_scheme)] = None,
) -> User:
    """Authenticate the request from exactly one `Authorization: Bearer` header.

    The route names the scope it needs through `Security(current_user, scopes=…)`
    (one scope per route; see the aliases below).

    Runs in the event loop: an HS256 check and one indexed lookup cost less than
    the hop to a worker thread that a plain `def` dependency would take.
    """
    (scope,) = security_scopes.scopes
    user = authorize_header(
        services, request.headers.getlist("authorization"), scope
    )
    request.state.user_id = user.id
    return user


async def current_session(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    _documented: Annotated[str | None, Depends(_oauth2_scheme)] = None,
) -> tuple[User, AccessClaims]:
    """Authenticate the request's bearer token, whatever its scopes.

    For the routes about the session and the account itself (logout, the
    account, its password), which any valid token of the account may use.
    """
    token = bearer_token(request.headers.getlist("authorization"))
    if is_api_key(token):
        # The key is checked first: one that is not valid is a 401 like any bad
        # credential; a valid one is a 403, as it is fine but not allowed here.
        services.authenticate_api_key(token)
        raise PermissionDeniedError("an API key cannot do this; use a login's token")
    user, claims = services.authenticate_claims(token)
    request.state.user_id = user.id
    return user, claims


def authorize_header(services: Services, values: list[str], scope: str) -> User:
    """Return the user named by the request's Authorization headers, if in `scope`.

    Raises as `bearer_token` and `Services.authorize`.
    """
    return services.authorize(bearer_token(values), scope)


def bearer_token(values: list[str]) -> str:
    """Return the one bearer token in the values of the Authorization headers.

    A token in the query string, a form or a cookie is never looked at; the
    scheme is case-insensitive (RFC 9110, section 11.1).

    Raises:
        AuthError: no header, or one with another scheme: no bearer token was
            offered (401, `WWW-Authenticate: Bearer`).
        InvalidTokenError: headers repeated, or the bearer token is empty, has
            more than one value or fails verification (401, `WWW-Authenticate:
            Bearer error="invalid_token"`).
    """
    if not values:
        raise AuthError("no bearer token: send 'Authorization: Bearer <token>'")
    if len(values) > 1:
        raise InvalidTokenError("more than one Authorization header")
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    token = token.strip(" ")
    # One token68 value (RFC 6750, section 2.1): a comma or space means two.
    if not token or " " in token or "," in token:
        raise InvalidTokenError("the Authorization header must be 'Bearer <token>'")
    return token


FilesReader = Annotated[User, Security(current_user, scopes=[FILES_READ])]
FilesWriter = Annotated[User, Security(current_user, scopes=[FILES_WRITE])]
SharesUser = Annotated[User, Security(current_user, scopes=[SHARES])]
AdminUser = Annotated[User, Security(current_user, scopes=[ADMIN])]
CurrentSession = Annotated[tuple[User, AccessClaims], Depends(current_session)]
