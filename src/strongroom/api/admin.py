"""Account administration over HTTP: the `admin` scope's routes.

The same operations as `strongroom user ...` and `strongroom token revoke`, for
admins who script against the API. A role change, a disable and an explicit
revoke each refuse every token the account held, in every process, from the
next request on (see `MetadataStore.revoke_tokens`).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from strongroom.api.deps import AdminUser, get_services
from strongroom.api.problem_docs import AUTHENTICATED, problem_responses
from strongroom.api.schemas import (
    PasswordSetIn,
    SpacePolicyOut,
    UserIn,
    UserOut,
    UserPatch,
)
from strongroom.api.services import Services
from strongroom.config import HOME_SPACE_NAME
from strongroom.errors import LastAdminError, UserNotFoundError
from strongroom.storage import User

__all__ = ["router"]

# A refused password (400), no such user (404), an existing one or the last
# admin (409), a malformed request (422).
router = APIRouter(prefix="/admin", tags=["admin"],
                   responses=problem_responses(*AUTHENTICATED, 400, 404, 409, 422))
log = logging.getLogger("strongroom.auth")

ServicesDep = Annotated[Services, Depends(get_services)]


@router.get("/users", response_model=list[UserOut])
def list_users(admin: AdminUser, services: ServicesDep) -> list[UserOut]:
    """List every account, sorted by name."""
    return [_user_out(user) for user in services.meta.list_users()]


@router.post("/users", response_model=UserOut, status_code=201)
def add_user(admin: AdminUser, body: UserIn, services: ServicesDep) -> UserOut:
    """Create an account (409 if the name is taken)."""
    password_hash = services.passwords.hash(body.password)
    user = services.meta.add_user(body.name, password_hash, role=body.role)
    log.info("user_added", extra={"user_id": user.id, "by": admin.id})
    return _user_out(user)


@router.patch("/users/{name}", response_model=UserOut)
def change_user(
    name: str, admin: AdminUser, body: UserPatch, services: ServicesDep
) -> UserOut:
    """Change an account's role or disable it; either revokes all its tokens.

    The last active admin cannot be demoted or disabled here (409): nobody
    could undo it from the API.
    """
    user = _find(services, name)
    loses_admin = body.role == "user" or body.active is False
    if user.is_admin and user.active and loses_admin:
        admins = [u for u in services.meta.list_users() if u.is_admin and u.active]
        if len(admins) <= 1:
            raise LastAdminError(f"{name!r} is the last active admin")
    if body.role is not None and body.role != user.role:
        services.meta.set_role(user.id, body.role)
        _log_revoked(user, admin, "role_change")
    if body.active is not None and body.active != user.active:
        services.meta.set_active(user.id, body.active)
        if not body.active:
            _log_revoked(user, admin, "disabled")
    return _user_out(_find(services, name))


@router.post("/users/{name}/password", status_code=204)
def set_password(
    name: str, admin: AdminUser, body: PasswordSetIn, services: ServicesDep
) -> Response:
    """Set an account's password (the admin's reset); revokes all its tokens."""
    user = _find(services, name)
    services.meta.set_password(user.id, services.passwords.hash(body.new_password))
    _log_revoked(user, admin, "password_reset")
    return Response(status_code=204)


@router.get("/spaces", response_model=list[SpacePolicyOut])
def list_spaces(admin: AdminUser, services: ServicesDep) -> list[SpacePolicyOut]:
    """List every space with its policies, as `strongroom.toml` sets them, by name.

    Host paths are left out: they are the server's business, not the API's.
    """
    home = SpacePolicyOut(
        name=HOME_SPACE_NAME, kind="home", mode="rw", symlinks=None,
        hardlinks=None, users=["*"],
    )
    return [home] + [
        SpacePolicyOut(
            name=space.name, kind="directory", mode=space.mode,
            symlinks=space.symlinks, hardlinks=space.hardlinks,
            users=list(space.users),
        )
        for space in sorted(services.settings.spaces, key=lambda s: s.name)
    ]


@router.post("/users/{name}/revoke", status_code=204)
def revoke_tokens(name: str, admin: AdminUser, services: ServicesDep) -> Response:
    """Refuse every access and refresh token the account holds now."""
    user = _find(services, name)
    services.meta.revoke_tokens(user.id)
    _log_revoked(user, admin, "admin")
    return Response(status_code=204)


def _find(services: Services, name: str) -> User:
    user = services.meta.get_user_by_name(name)
    if user is None:
        raise UserNotFoundError(f"no user is named {name!r}")
    return user


def _user_out(user: User) -> UserOut:
    return UserOut(
        name=user.name, role=user.role, active=user.active,
        created=user.created.isoformat(timespec="seconds").replace("+00:00", "Z"),
    )


def _log_revoked(user: User, admin: User, reason: str) -> None:
    log.warning(
        "tokens_revoked", extra={"user_id": user.id, "by": admin.id, "reason": reason}
    )
