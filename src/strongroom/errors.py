"""The one exception hierarchy of Strongroom.

Every error the product raises on purpose descends from `StrongroomError`, with one
branch per layer and one subclass per cause that a caller may treat differently.
The API turns them into HTTP answers in a single table (`strongroom.api.problems`);
nothing else maps errors to status codes.

    StrongroomError
    ├── PathError                  a user path was refused or could not be served
    │   ├── InvalidPathError       the name breaks the path rules (400)
    │   ├── PathEscapeError        resolution would leave the root (403)
    │   ├── SymlinkRefusedError    a symlink that the policy forbids (403)
    │   ├── HardlinkRefusedError   a file with more than one link (403)
    │   ├── NotRegularFileError    a FIFO, socket or device (403)
    │   ├── CrossDeviceError       a mount point beneath the root (403)
    │   ├── AccessDeniedError      the service's own permissions forbid it (403)
    │   ├── PathNotFoundError      nothing by that name (404)
    │   ├── PathExistsError        the name is taken (409 or 412)
    │   ├── IsADirectoryPathError  a directory where a file was expected (409)
    │   ├── NotADirectoryPathError a file where a directory was expected (409)
    │   ├── DirectoryNotEmptyError remove of a non-empty directory (409)
    │   └── ResolveRetryError      the kernel kept reporting a race (403)
    ├── SpaceNotFoundError         no such space for this user (404)
    ├── AuthError                  missing, bad or expired credentials (401)
    │   └── InvalidTokenError      a bearer token was sent and refused (401)
    ├── PermissionDeniedError      authenticated, but not allowed (403)
    ├── StorageError               the metadata or blob store failed (500)
    ├── UserError                  a user account operation was refused
    │   ├── UserExistsError        the user name is taken (409)
    │   ├── UserNotFoundError      no user by that name or id (404)
    │   └── PasswordPolicyError    a new password breaks the length rules (400)
    ├── IncompleteUploadError      the client left before the body ended (400)
    ├── PreconditionFailedError    a conditional request's condition is false (412)
    ├── LimitExceededError         a size limit was crossed (413)
    │   └── ArchiveLimitError      an archive crossed an unpacking limit (413)
    ├── UnreadableArchiveError     not a tar or zip we read, or corrupt (422)
    ├── TooManyRequestsError       too many failed logins; wait (429)
    └── ConfigError                a setting is wrong; start-up stops
"""

from __future__ import annotations

__all__ = [
    "ApiKeyNotFoundError",
    "DamagedContentError",
    "AccessDeniedError",
    "ArchiveLimitError",
    "AuthError",
    "ConfigError",
    "CrossDeviceError",
    "DirectoryNotEmptyError",
    "HardlinkRefusedError",
    "IncompleteUploadError",
    "InvalidGrantError",
    "InsufficientScopeError",
    "InvalidPathError",
    "InvalidScopeError",
    "InvalidTokenError",
    "IsADirectoryPathError",
    "LimitExceededError",
    "NotADirectoryPathError",
    "NotRegularFileError",
    "PasswordPolicyError",
    "PathError",
    "PathEscapeError",
    "PathExistsError",
    "PathNotFoundError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "ResolveRetryError",
    "SpaceNotFoundError",
    "StorageError",
    "StrongroomError",
    "SymlinkRefusedError",
    "TooManyApiKeysError",
    "TooManyRequestsError",
    "UnreadableArchiveError",
    "UserError",
    "UserExistsError",
    "UserNotFoundError",
]


class StrongroomError(Exception):
    """Base of every error that Strongroom raises on purpose."""


class PathError(StrongroomError):
    """A root-relative path was refused or could not be acted on.

    Carries the operation (`op`), the root-relative path as the user sent it
    (`rel_path`) and a reason that is safe to show to that user: it never holds a
    host path. The underlying `OSError`, if any, is chained as `__cause__`.
    """

    def __init__(self, op: str, rel_path: str, reason: str) -> None:
        self.op = op
        self.rel_path = rel_path
        self.reason = reason
        super().__init__(f"{op} {rel_path!r} refused: {reason}")


class InvalidPathError(PathError):
    """The path breaks the name rules (absolute, `..` above the root, NUL...)."""


class PathEscapeError(PathError):
    """Resolving the path would leave the root, even briefly."""


class SymlinkRefusedError(PathError):
    """The path goes through a symlink that the root's policy forbids."""


class HardlinkRefusedError(PathError):
    """The file has more than one hard link and the space does not allow that."""


class NotRegularFileError(PathError):
    """The object is a FIFO, socket or device, which are never served."""


class CrossDeviceError(PathError):
    """The path crosses a mount point beneath the root."""


class AccessDeniedError(PathError):
    """The service's own file permissions do not allow the operation."""


class PathNotFoundError(PathError):
    """Nothing exists at the path (or a parent directory is missing)."""


class PathExistsError(PathError):
    """The name is already taken and the operation must not replace it."""


class IsADirectoryPathError(PathError):
    """A directory was found where a file was expected."""


class NotADirectoryPathError(PathError):
    """A non-directory was found where a directory was expected."""


class DirectoryNotEmptyError(PathError):
    """A directory to be removed still has entries."""


class ResolveRetryError(PathError):
    """The kernel reported a concurrent rename on every bounded retry."""


class DamagedContentError(PathError):
    """The stored bytes of a home file are missing or differ from its record.

    `strongroom check --repair` marked the file; it is refused rather than served
    wrong. Uploading the file again replaces the damaged content.
    """


class SpaceNotFoundError(StrongroomError):
    """No space by that name exists for this user (existence is not revealed)."""


class AuthError(StrongroomError):
    """Credentials are missing, malformed, expired or do not match."""


class InvalidTokenError(AuthError):
    """A bearer token was sent and refused: malformed, forged, expired or revoked.

    The API answers it with `WWW-Authenticate: Bearer error="invalid_token"`
    (RFC 6750, section 3.1); a request with no token gets a bare challenge.
    """


class InvalidGrantError(AuthError):
    """A refresh token was refused: unknown, used, expired, or its session revoked.

    The API answers 400 `invalid_grant` (RFC 6749, section 5.2).
    """


class InvalidScopeError(AuthError):
    """A login asked for a scope that is unknown, malformed or not the user's.

    The API answers 400 `invalid_scope` (RFC 6749, section 5.2).
    """


class PermissionDeniedError(StrongroomError):
    """The caller is authenticated but may not do this."""


class InsufficientScopeError(PermissionDeniedError):
    """The token is valid but lacks the scope this route demands.

    The API answers 403 with `WWW-Authenticate: Bearer error="insufficient_scope"`
    and the scope that was missing (RFC 6750, section 3.1).
    """

    def __init__(self, scope: str) -> None:
        super().__init__(f"this needs a token with the {scope!r} scope")
        self.scope = scope


class StorageError(StrongroomError):
    """The metadata database or the blob store failed."""


class UserError(StrongroomError):
    """A user account operation was refused (the accounts themselves are fine)."""


class UserExistsError(UserError):
    """A user with that name already exists."""


class UserNotFoundError(UserError):
    """No user has that name or id."""


class ApiKeyNotFoundError(UserError):
    """No live API key of this account has that id."""


class TooManyApiKeysError(UserError):
    """The account already holds the most API keys allowed; revoke one first."""


class PasswordPolicyError(UserError):
    """A new password is empty, too short or longer than the hashing cap."""


class IncompleteUploadError(StrongroomError):
    """The client closed the connection before sending the whole body."""


class PreconditionFailedError(StrongroomError):
    """A conditional request (such as `If-None-Match: *`) found its condition false."""


class LimitExceededError(StrongroomError):
    """A configured size limit was crossed."""


class TooManyRequestsError(StrongroomError):
    """Too many recent failures; `retry_after` says how many seconds to wait."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(StrongroomError):
    """A setting has a bad value; the message names the key, value and range."""


class ArchiveLimitError(LimitExceededError):
    """An archive crossed an unpacking limit (members, bytes or compression ratio)."""


class UnreadableArchiveError(StrongroomError):
    """An upload is not a tar or zip archive this service reads, or is corrupt."""
