"""Request dependencies: the shared services and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from strongroom.api.services import Services
from strongroom.errors import AuthError
from strongroom.storage import User

__all__ = [
    "CurrentUser",
    "Services",
    "authenticate_header",
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

    A token in the query string or a form is never looked at. Raises `AuthError`
    (401 with `WWW-Authenticate: Bearer`) for a missing, repeated or bad header.
    """
    if not values:
        raise AuthError("no bearer token: send 'Authorization: Bearer <token>'")
    if len(values) > 1:
        raise AuthError("more than one Authorization header")
    scheme, _, token = values[0].partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    return services.authenticate(token)


CurrentUser = Annotated[User, Depends(current_user)]
