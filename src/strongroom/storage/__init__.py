"""Storage: metadata in SQLite or PostgreSQL, and blobs through a confined root.

No HTTP types here. Values that leave this package are the frozen dataclasses of
`strongroom.storage.records`.
"""

from strongroom.storage.blobs import (
    BLOBS_DIR_NAME,
    BlobInfo,
    BlobReader,
    BlobStore,
    BlobWriter,
    LocalBlobStore,
)
from strongroom.storage.metadata import (
    MAX_KEY_BYTES,
    MetadataStore,
    open_metadata_store,
)
from strongroom.storage.records import (
    ChildPage,
    DirEntry,
    FileRow,
    PutResult,
    Role,
    User,
)

__all__ = [
    "BLOBS_DIR_NAME",
    "MAX_KEY_BYTES",
    "BlobInfo",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "LocalBlobStore",
    "ChildPage",
    "DirEntry",
    "FileRow",
    "MetadataStore",
    "PutResult",
    "Role",
    "User",
    "open_metadata_store",
]
