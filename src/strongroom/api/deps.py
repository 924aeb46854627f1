"""Request dependencies: the shared services and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from strongroom.api.services import Services
from strongroom.errors import AuthError, InvalidTokenError
from strongroom.storage import User

__all__ = [
    "CurrentUser",
    "Services",
    "authenticate_header",
    "bearer_token",
    "current_user",
    "get_services",
]

# Only documents the password flow for the OpenAPI page; the header is parsed below,
# strictly, by our own code.
_oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/token", auto_error=False)


async def get_services(request: Request) -> Services:
    """Return the services built at start-up."""
    services: Services = request.app.state.services
    return services


async def current_user(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    _documented: Annotated[str | None, Depends(_oauth2_scheme)] = None,
) -> User:
    """Authenticate the request from exactly one `Authorization: Bearer` header.

    Runs in the event loop: an HS256 check and one indexed lookup cost less than
    the hop to a worker thread that a plain `def` dependency would take.
    """
    user = authenticate_header(services, request.headers.getlist("authorization"))
    request.state.user_id = user.id
    return user


def authenticate_header(services: Services, values: list[str]) -> User:
    """Return the user named by the values of the request's Authorization headers.

    Raises as `bearer_token` and `Services.authenticate`.
    """
    return services.authenticate(bearer_token(values))


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


CurrentUser = Annotated[User, Depends(current_user)]
