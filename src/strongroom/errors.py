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
    │   ├── InvalidTokenError      a bearer token was sent and refused (401)
    │   └── SharePasswordError     a share link's password is missing or wrong (401)
    ├── PermissionDeniedError      authenticated, but not allowed (403)
    ├── StorageError               the metadata or blob store failed (500)
    │   ├── StoreUnavailableError  the blob store cannot be reached now (503)
    │   └── InsufficientStorageError the disk holding the data is full (507)
    ├── UserError                  a user account operation was refused
    │   ├── UserExistsError        the user name is taken (409)
    │   ├── UserNotFoundError      no user by that name or id (404)
    │   └── PasswordPolicyError    a new password breaks the length rules (400)
    ├── IncompleteUploadError      the client left before the body ended (400)
    ├── InvalidCursorError         a listing cursor we did not make (400)
    ├── PreconditionFailedError    a conditional request's condition is false (412)
    ├── LimitExceededError         a size limit was crossed (413)
    │   ├── ArchiveLimitError      an archive crossed an unpacking limit (413)
    │   ├── UploadQuotaError       a user's unfinished uploads are at their bound (413)
    │   └── StorageQuotaError      a home space would pass its storage quota (507)
    ├── UnreadableArchiveError     not a tar or zip we read, or corrupt (422)
    ├── TooManyRequestsError       too many failed logins; wait (429)
    ├── ShareError                 a share link or a request about one was refused
    │   ├── ShareNotFoundError     no such share link: malformed or forged (404)
    │   ├── ShareGoneError         the link ended: expired, revoked, used up, or
    │   │                          its target is gone or replaced (410)
    │   └── InvalidShareError      a new share asks for what is not allowed (422)
    ├── UploadError                a resumable (tus) upload request was refused
    │   ├── InvalidUploadError     a tus header is missing or malformed (400)
    │   ├── UploadNotFoundError    no such upload for this user (404)
    │   ├── UploadOffsetError      Upload-Offset is not where the upload stands (409)
    │   ├── UploadGoneError        the upload expired or lost its staged bytes (410)
    │   ├── TusVersionError        Tus-Resumable is missing or not 1.0.0 (412)
    │   ├── UnsupportedMediaError  a PATCH body that is not offset+octet-stream (415)
    │   ├── UploadLockedError      another request is writing the upload (423)
    │   └── ChecksumMismatchError  a chunk or the whole file failed its checksum (460)
    └── ConfigError                a setting is wrong; start-up stops
"""

from __future__ import annotations

__all__ = [
    "ApiKeyNotFoundError",
    "DamagedContentError",
    "AccessDeniedError",
    "ArchiveLimitError",
    "ChecksumMismatchError",
    "AuthError",
    "ConfigError",
    "CrossDeviceError",
    "DirectoryNotEmptyError",
    "HardlinkRefusedError",
    "IncompleteUploadError",
    "InvalidCursorError",
    "InvalidGrantError",
    "InsufficientScopeError",
    "InsufficientStorageError",
    "InvalidPathError",
    "LastAdminError",
    "InvalidRequestError",
    "InvalidScopeError",
    "InvalidTokenError",
    "InvalidUploadError",
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
    "ShareError",
    "ShareGoneError",
    "ShareNotFoundError",
    "SharePasswordError",
    "InvalidShareError",
    "SpaceNotFoundError",
    "StorageError",
    "StrongroomError",
    "SymlinkRefusedError",
    "TooManyApiKeysError",
    "TooManyRequestsError",
    "TusVersionError",
    "UnreadableArchiveError",
    "UnsupportedMediaError",
    "UploadError",
    "UploadGoneError",
    "UploadLockedError",
    "UploadNotFoundError",
    "UploadOffsetError",
    "StorageQuotaError",
    "StoreUnavailableError",
    "UploadQuotaError",
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


class InvalidRequestError(AuthError):
    """A token request is malformed: a parameter repeated or empty.

    The API answers 400 `invalid_request` (RFC 6749, sections 3.1 and 5.2).
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


class LastAdminError(UserError):
    """The change would leave no active admin; only the CLI could undo it."""


class PasswordPolicyError(UserError):
    """A new password is empty, too short or longer than the hashing cap."""


class IncompleteUploadError(StrongroomError):
    """The client closed the connection before sending the whole body."""


class InvalidCursorError(StrongroomError):
    """A listing's `cursor` is not one that a listing answered with."""


class PreconditionFailedError(StrongroomError):
    """A conditional request (such as `If-None-Match: *`) found its condition false."""


class StoreUnavailableError(StorageError):
    """The blob store could not be reached (refused, timed out, cut off): a 503.

    The request may succeed later; nothing was half-written.
    """


class InsufficientStorageError(StorageError):
    """The file system holding a space or the data ran out of room (ENOSPC, EDQUOT).

    Nothing of the write that hit it is kept. The API answers 507; the request
    may succeed once an operator frees space, so it is logged as our failure.
    The storage layer may also raise a plain `StorageError` chained to such an
    `OSError`; the API's error table recognises both.
    """


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


class SharePasswordError(AuthError):
    """A password-protected share link came without its password, or a wrong one.

    The API answers 401 with `WWW-Authenticate: Basic realm="share"`, so that a
    browser asks for the password (RFC 7617); it never travels in the URL.
    """


class ShareError(StrongroomError):
    """A share link, or a request to create or manage one, was refused."""


class ShareNotFoundError(ShareError):
    """No share link by that token or id: malformed, forged, or another user's.

    Its message is the same whatever the cause, so it tells nothing about why.
    """


class ShareGoneError(ShareError):
    """A real share link that has ended.

    Expired, revoked, used up, or its target deleted or replaced: one message
    for every cause, so the answer tells a link holder nothing more.
    """


class InvalidShareError(ShareError):
    """A new share asks for a lifetime or a download limit that is not allowed."""


class UploadQuotaError(LimitExceededError):
    """A new upload would pass the user's bound on unfinished uploads.

    The bound is on their number and on the bytes they reserve (their declared
    lengths added up); finishing or terminating one frees its share.
    """


class StorageQuotaError(LimitExceededError):
    """A write would take a home space past its storage quota.

    Checked when the file is stored, inside the transaction that stores it and
    under the owner's lock, so that concurrent uploads on several instances
    cannot pass it together. A write that does not grow the space (a smaller
    replacement, a delete) is never refused.
    """


class UploadError(StrongroomError):
    """A resumable (tus 1.0) upload request was refused."""


class InvalidUploadError(UploadError):
    """A tus header is missing or malformed (Upload-Length, Upload-Metadata...)."""


class UploadNotFoundError(UploadError):
    """No upload has that id for this user; another user's upload looks the same."""


class UploadOffsetError(UploadError):
    """A PATCH names an Upload-Offset other than the bytes the upload holds."""


class UploadGoneError(UploadError):
    """The upload expired, or its staged bytes are gone; the client starts again."""


class TusVersionError(UploadError):
    """The request's Tus-Resumable header is missing or names another version."""


class UnsupportedMediaError(UploadError):
    """A body whose Content-Type is not `application/offset+octet-stream`."""


class UploadLockedError(UploadError):
    """Another request is writing this upload at the moment; try again later."""


class ChecksumMismatchError(UploadError):
    """A chunk's Upload-Checksum, or the whole file's SHA-256, did not match.

    The chunk is discarded (the upload stays where it was); a whole file that
    fails its checksum is discarded with its upload.
    """
