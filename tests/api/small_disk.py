"""A small file system to fill: a tmpfs mounted for one test module, and a filler.

The tests run as root in CI and here, so `mount -t tmpfs -o size=...` gives a
real file system whose writes fail with ENOSPC once it is full: the product's
own error paths run, nothing is mocked. Where mounting is impossible (no root,
no mount namespace) the caller is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# Unmounting may find the server's last descriptors still closing; a lazy
# unmount detaches the file system now and frees it when they are gone.
_UMOUNT = ("umount", "--lazy")
FILLER_NAME = "filler.bin"


@contextlib.contextmanager
def small_filesystem(mount_point: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` at `mount_point`; unmount when the block ends.

    Skips the calling test when the mount is refused, naming why.
    """
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs",
         str(mount_point)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (issue 7 needs root): "
                    f"{done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run([*_UMOUNT, str(mount_point)], check=False)


def free_bytes(folder: Path) -> int:
    """Return the bytes an unprivileged writer may still use under `folder`."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def fill(folder: Path, leave_bytes: int) -> Path:
    """Write a filler file into `folder` until only about `leave_bytes` are free.

    Returns the filler's path; delete it to give the space back.
    """
    filler = folder / FILLER_NAME
    want = max(free_bytes(folder) - leave_bytes, 0)
    with filler.open("ab") as out:
        block = b"\0" * (1 << 16)
        while want > 0:
            piece = block[:min(want, len(block))]
            out.write(piece)
            want -= len(piece)
    return filler
