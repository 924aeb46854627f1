"""Turn what the kernel (or the walk) said into one `PathError` per cause."""

from __future__ import annotations

import errno

from strongroom.errors import (
    AccessDeniedError,
    DirectoryNotEmptyError,
    InsufficientStorageError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    NotRegularFileError,
    PathError,
    PathEscapeError,
    PathExistsError,
    PathNotFoundError,
    ResolveRetryError,
    StorageError,
    SymlinkRefusedError,
)

__all__ = ["path_error"]

_SIMPLE: dict[int, tuple[type[PathError], str]] = {
    # EXDEV covers both a step above the root and a mount point: the kernel gives
    # the same errno for both, and neither says whether the outside target exists.
    errno.EXDEV: (
        PathEscapeError,
        "the path leads outside the space (or across a mount point)",
    ),
    errno.ENOENT: (PathNotFoundError, "no such file or folder"),
    errno.ENOTDIR: (NotADirectoryPathError, "a part of the path is not a folder"),
    errno.EISDIR: (IsADirectoryPathError, "it is a folder, not a file"),
    errno.EEXIST: (PathExistsError, "the name is already taken"),
    errno.ENOTEMPTY: (DirectoryNotEmptyError, "the folder is not empty"),
    errno.EAGAIN: (
        ResolveRetryError,
        "the path kept changing while it was resolved; try again",
    ),
    # Opening a socket, or a device with no driver, fails before we can fstat it.
    errno.ENXIO: (NotRegularFileError, "only regular files are served"),
    errno.ENODEV: (NotRegularFileError, "only regular files are served"),
    errno.ENAMETOOLONG: (InvalidPathError, "the path or a name in it is too long"),
    errno.EINVAL: (InvalidPathError, "the operation makes no sense for this path"),
}


def path_error(op: str, rel_path: str, exc: OSError, *, symlinks: str) -> PathError:
    """Return the `PathError` for an `OSError` raised while acting on `rel_path`.

    Errors with no user-facing meaning (EIO, EACCES on our own data) raise
    `StorageError` instead, chained to the original, because they are ours to fix;
    a full file system (ENOSPC, EDQUOT) raises `InsufficientStorageError`.
    """
    code = exc.errno or 0
    if code in (errno.ENOSPC, errno.EDQUOT):
        raise InsufficientStorageError(f"{op} failed: the disk is full") from exc
    if code == errno.ELOOP:
        if symlinks == "deny":
            reason = "the path goes through a symbolic link, which this space refuses"
        else:
            reason = "symbolic links loop, or a link here may not be followed"
        return SymlinkRefusedError(op, rel_path, reason)
    if code in _SIMPLE:
        cls, reason = _SIMPLE[code]
        return cls(op, rel_path, reason)
    if code in (errno.EACCES, errno.EPERM):
        reason = "the service is not permitted to access this on disk"
        return AccessDeniedError(op, rel_path, reason)
    raise StorageError(f"{op} failed: {exc.strerror}") from exc
