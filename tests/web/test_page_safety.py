"""A file whose name and content are markup and script never runs in the page."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from browser_env import USER, Watched
from page_steps import drop_files, entry_row, wait_for_files, wait_until_uploaded
from playwright.sync_api import expect

from api.live_server import API, LiveServer

HOSTILE_NAME = "<img src=x onerror=alert(1)>.html"
HOSTILE_CONTENT = b"<script>alert(1)</script><img src=x onerror=alert(2)>"


@pytest.fixture
def watched(open_page: Callable[..., Watched], clean_server: LiveServer) -> Watched:
    """A fresh page signed in as ben, with its dialogs and errors recorded."""
    watch = open_page(session=USER[0])
    wait_for_files(watch.page)
    return watch


def test_hostile_name_and_content_never_execute(
    watched: Watched, web_server: LiveServer
) -> None:
    page = watched.page
    drop_files(page, {HOSTILE_NAME: HOSTILE_CONTENT})
    wait_until_uploaded(page, HOSTILE_NAME)
    row = entry_row(page, HOSTILE_NAME)

    with page.expect_download() as info:
        row.get_by_role("button", name="Download").click()
    row.get_by_role("button", name="Rename").click()
    page.keyboard.press("Escape")
    row.get_by_role("button", name="Delete").click()
    page.keyboard.press("Escape")

    assert info.value.path().read_bytes() == HOSTILE_CONTENT
    expect(row.locator(".entry-name")).to_have_text(HOSTILE_NAME)
    assert page.locator("#main img, #upload-list img, dialog img").count() == 0
    assert page.locator("script:not([src])").count() == 0
    assert watched.dialogs == [] and watched.errors == []


# Shown as it is stored, an override makes this name read "a" + "exe.png"
# reversed into "aexe.png": a program dressed as a picture.
SPOOFING_NAME = "a\u202egnp.exe"
SHOWN_AS = "a[U+202E]gnp.exe"


def test_a_name_with_a_direction_override_shows_what_it_is_made_of(
    watched: Watched,
) -> None:
    page = watched.page
    drop_files(page, {SPOOFING_NAME: b"MZ"})

    upload = page.locator("#upload-list .upload-name .name")
    expect(upload).to_have_text(SHOWN_AS)
    expect(entry_row(page, SHOWN_AS).locator(".entry-name")).to_have_text(SHOWN_AS)
    assert SPOOFING_NAME not in page.locator("#main").inner_text()
    # The name is only shown differently; the file keeps its real name.
    row = entry_row(page, SHOWN_AS)
    with page.expect_download() as info:
        row.get_by_role("button", name="Download").click()
    assert info.value.suggested_filename.endswith("gnp.exe")


def test_hostile_file_is_sent_as_an_attachment_never_as_a_page(
    web_server: LiveServer, watched: Watched
) -> None:
    page = watched.page
    drop_files(page, {HOSTILE_NAME: HOSTILE_CONTENT})
    wait_until_uploaded(page, HOSTILE_NAME)

    reply = web_server.request(
        "GET", f"{API}/spaces/home/files/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E.html",
        token="ben",
    )

    assert reply.body == HOSTILE_CONTENT
    assert (reply.header("Content-Disposition") or "").startswith("attachment")
    assert reply.header("X-Content-Type-Options") == "nosniff"


def test_page_loads_nothing_but_its_own_files(watched: Watched) -> None:
    requested: list[str] = []
    watched.page.on("request", lambda request: requested.append(request.url))

    watched.page.reload()
    expect(watched.page.locator("#view-files")).to_be_visible()

    assert requested
    assert all(url.startswith(watched.origin + "/") for url in requested), requested
