"""How the page looks and reads: screenshots of the main views at desktop and
phone widths (saved to docs/screenshots/), no sideways scrolling on narrow
screens or at 400% zoom, the dark theme, visible focus, and uploads in flight."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest
from browser_env import ADMIN, DESKTOP, PHONE, Watched, save_screenshot
from page_steps import (
    drop_files,
    entry_row,
    sign_in,
    upload_row,
    wait_for_files,
    wait_until_uploaded,
)
from playwright.sync_api import Page, expect

from api.live_server import API, LiveServer

SAMPLE_FILES = {
    "Budget 2025.ods": 48_213,
    "Meeting notes.md": 2_311,
    "Strongroom handbook.pdf": 1_204_551,
    "photos/harbour.jpg": 3_481_022,
}
# Slow enough that a 2 MiB upload is still going when looked at, fast enough
# that the test never waits for it (it cancels).
THROTTLED_UPLOAD_BYTES_PER_SECOND = 256 * 1024


@pytest.fixture
def sample_home(clean_server: LiveServer) -> LiveServer:
    """Ada's home with a few files and a folder, uploaded through the API."""
    for rel_path, size in SAMPLE_FILES.items():
        reply = clean_server.put("home", rel_path.replace(" ", "%20"), b"x" * size,
                                 token="ada")
        assert reply.status == 201, reply.body
    return clean_server


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_screenshots_of_the_main_views(
    open_page: Callable[..., Watched], sample_home: LiveServer,
    viewport: dict[str, int],
) -> None:
    """Not a check of pixels: the README shows these, so they are remade each run."""
    width = "desktop" if viewport == DESKTOP else "phone"
    page = open_page(viewport).page

    save_screenshot(page, f"sign-in-{width}")
    sign_in(page, *ADMIN)
    drop_files(page, {"Quarterly report.pdf": os.urandom(90_000)})
    wait_until_uploaded(page, "Quarterly report.pdf")
    save_screenshot(page, f"files-{width}")
    entry_row(page, "Meeting notes.md").get_by_role("button", name="Share").click()
    page.get_by_role("button", name="Create link").click()
    expect(page.locator("#share-url")).to_have_value(re.compile("/s/"))
    save_screenshot(page, f"share-{width}")
    page.get_by_role("button", name="Done").click()
    page.get_by_role("link", name="Admin").click()
    expect(page.locator("#admin-space-rows tr")).to_have_count(3)
    save_screenshot(page, f"admin-{width}")

    assert sorted(path.name for path in _shots(width)) == [
        f"{view}-{width}.png" for view in ("admin", "files", "share", "sign-in")
    ]


def test_dark_theme_follows_the_system_setting(
    open_page: Callable[..., Watched], sample_home: LiveServer
) -> None:
    page = open_page(DESKTOP, color_scheme="dark", session=ADMIN[0]).page
    wait_for_files(page)

    background = page.evaluate("getComputedStyle(document.body).backgroundColor")

    assert _brightness(background) < 60
    save_screenshot(page, "files-dark-desktop")


@pytest.mark.parametrize(
    "width", [360, 320], ids=["phone-360px", "desktop-at-400-percent-zoom"]
)
def test_narrow_screens_need_no_sideways_scrolling(
    open_page: Callable[..., Watched], sample_home: LiveServer, width: int
) -> None:
    """At 400% zoom a 1280-pixel window is 320 CSS pixels wide (WCAG 1.4.10)."""
    page = open_page({"width": width, "height": 700}).page
    overflow = {"sign-in": _overflow(page)}

    sign_in(page, *ADMIN)
    overflow["files"] = _overflow(page)
    page.get_by_role("link", name="Admin").click()
    expect(page.locator("#user-rows tr")).not_to_have_count(0)
    overflow["admin"] = _overflow(page)

    assert overflow == {"sign-in": 0, "files": 0, "admin": 0}


def test_keyboard_focus_is_always_visible(page: Page) -> None:
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")

    focused = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [document.activeElement.id, s.outlineStyle, s.outlineWidth]; })()"
    )

    assert focused[1] != "none" and focused[2] != "0px", focused


def test_upload_in_flight_shows_speed_and_time_left_and_can_be_cancelled(
    as_ada: Page, web_server: LiveServer
) -> None:
    page = as_ada
    _throttle_uploads(page, THROTTLED_UPLOAD_BYTES_PER_SECOND)

    drop_files(page, {"big video.mp4": os.urandom(2 * 1024 * 1024)})
    row = upload_row(page, "big video.mp4")
    speed_and_time = re.compile(r"KiB/s · \d+ s left")
    expect(row.locator(".upload-status")).to_contain_text(speed_and_time)
    save_screenshot(page, "upload-in-flight-desktop")
    row.get_by_role("button", name="Cancel").click()

    expect(row).to_have_attribute("data-state", "cancelled")
    reply = web_server.request("GET", f"{API}/spaces/home/meta/big%20video.mp4",
                               token="ada")
    assert reply.status == 404


def _throttle_uploads(page: Page, bytes_per_second: int) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": bytes_per_second,
    })


def _overflow(page: Page) -> int:
    return int(page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    ))


def _brightness(css_color: str) -> float:
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_color)[:3])
    return 0.299 * red + 0.587 * green + 0.114 * blue


def _shots(width: str) -> list[os.PathLike[str]]:
    from browser_env import SCREENSHOTS

    return [
        path for path in SCREENSHOTS.glob(f"*-{width}.png")
        if not path.name.startswith(("upload-in-flight", "files-dark"))
    ]
