"""The confined root: file operations that cannot leave one directory.

Standard library only; nothing here imports the web layer or the rest of the
project, apart from the shared error hierarchy in `strongroom.errors`.
"""

from strongroom.confine._names import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    STAGING_PREFIX,
    parse_user_path,
)
from strongroom.confine._sys import openat2_available
from strongroom.confine.root import (
    AtomicWriter,
    Entry,
    EntryKind,
    ReadHandle,
    Root,
)

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "STAGING_PREFIX",
    "AtomicWriter",
    "Entry",
    "EntryKind",
    "ReadHandle",
    "Root",
    "openat2_available",
    "parse_user_path",
]
