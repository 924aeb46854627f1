"""The browser tests' environment: Chromium's launch flags, the server's
accounts and spaces, and what a watched page must never do."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (the tests run as root), and nothing of Chromium's own that would
# reach out: no background networking, updates, sync, first-run pages or QUIC.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Every wait in these tests is bounded by this; a loaded CI machine is slow.
WAIT_MS = 20_000
ADMIN = ("ada", "ada-password-1")
USER = ("ben", "ben-password-22")
# Larger than the tus threshold of the page (8 MiB) with room for a resumed
# upload, and far below what the machine's disk can hold.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
CONFIG = """\
data_dir = "{data_dir}"
max_upload_bytes = {max_upload_bytes}

[[spaces]]
name = "team"
path = "team"
mode = "rw"
users = ["*"]

[[spaces]]
name = "manuals"
path = "manuals"
mode = "ro"
users = ["*"]
"""
# The README links the screenshots in docs/screenshots/. A test run refreshes
# them only when asked (`STRONGROOM_UPDATE_SCREENSHOTS=1 make test`), so that a
# plain `make test` leaves the tree as it found it; otherwise they go to a
# scratch folder, still taken (the views must render) but not kept.
DOC_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SCREENSHOTS = (
    DOC_SCREENSHOTS
    if os.environ.get("STRONGROOM_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / f"strongroom-screenshots-{os.getuid()}"
)


@dataclass
class Watched:
    """A page and what it did that no test should ever see."""

    page: Page
    origin: str
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    policy_violations: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        """Fail if the page opened a dialog, threw, broke its own CSP or asked
        another host."""
        assert self.dialogs == [], f"the page opened dialogs: {self.dialogs}"
        assert self.errors == [], f"the page threw: {self.errors}"
        assert self.policy_violations == [], (
            f"the page broke its Content-Security-Policy: {self.policy_violations}"
        )
        assert self.foreign_requests == [], (
            f"the page reached beyond the server: {self.foreign_requests}"
        )


def save_screenshot(page: Page, name: str) -> None:
    """Save the viewport as NAME.png in SCREENSHOTS (see there)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), animations="disabled",
                    caret="hide")
