"""Run one archive import into a directory space and die abruptly partway.

Usage: python kill_mid_import.py SPACE_DIR ARCHIVE IMPORT_DIR OVERWRITE RESOLVER WHEN
WHEN is "step:K" (die just before the K-th rename or mkdir of publishing, counting
from 0) or "unpack" (die while the first member is being unpacked). It dies by
`os._exit`, which runs no cleanup at all, like SIGKILL: no `finally`, no undo, no
removal of the staging folder. The kernel still drops the process's locks. Exit
status 137 means it died where asked; 0 means the import finished first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from strongroom.confine import Root
from strongroom.storage.imports import ImportProgress, import_archive
from strongroom.storage.spaces import DirectorySpace

KILLED = 137


def main() -> None:
    space_dir, archive, import_dir, overwrite, resolver, when = sys.argv[1:]
    steps_left = int(when.split(":")[1]) if when.startswith("step:") else -1
    publishing = False
    real_adopt, real_mkdir, real_write = Root.adopt, Root.mkdir, Root.write_bytes

    def step() -> None:
        nonlocal steps_left
        if steps_left == 0:
            os._exit(KILLED)
        steps_left -= 1

    def adopt(self: Root, other: Root, src: str, dst: str) -> None:
        step()
        real_adopt(self, other, src, dst)

    def mkdir(self: Root, rel_path: str, **options: bool) -> None:
        if publishing:  # folders of the import path itself
            step()
        real_mkdir(self, rel_path, **options)

    def write_bytes(self: Root, rel_path: str, data: bytes, **options: bool) -> object:
        nonlocal publishing
        publishing = publishing or rel_path == "plan.json"
        return real_write(self, rel_path, data, **options)

    def on_progress(progress: ImportProgress) -> None:
        if when == "unpack" and progress.unpacked_bytes > 0:
            os._exit(KILLED)

    Root.adopt = adopt  # type: ignore[method-assign]
    Root.mkdir = mkdir  # type: ignore[method-assign]
    Root.write_bytes = write_bytes  # type: ignore[method-assign]
    with Root(space_dir, resolver=resolver) as root, open(archive, "rb") as body:
        space = DirectorySpace("lab", root, writable=True)
        size = Path(archive).stat().st_size
        import_archive(space, body, size, import_dir, overwrite=overwrite == "1",
                       on_progress=on_progress)


if __name__ == "__main__":
    main()
