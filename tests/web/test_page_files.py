"""The folder view in a real browser: sign in, upload, download, folders, rename,
delete, sorting, paging and sign-out, against a live server on loopback."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest
from browser_env import USER, Watched
from page_steps import (
    drop_files,
    entry_row,
    listed_names,
    open_space,
    sign_in,
    upload_row,
    wait_for_files,
    wait_until_uploaded,
)
from playwright.sync_api import Page, Route, expect

from api.live_server import API, LiveServer

THREE_FILES = {
    "notes.txt": b"first line\nsecond line\n",
    "photo.bin": os.urandom(300_000),
    "report 2025 (final).pdf": os.urandom(50_000),
}


@pytest.fixture
def ben(as_ben: Page) -> Page:
    """The page, signed in as ben (role user), showing his home."""
    return as_ben


def test_sign_in_shows_home_and_the_spaces(page: Page) -> None:
    sign_in(page, *USER)
    ben = page

    spaces = ben.locator("#space-list a").all_inner_texts()

    assert spaces == ["home", "manuals (read-only)", "team"]
    expect(ben.locator("#folder-title")).to_have_text("home")
    expect(ben.locator("#account-name")).to_have_text("ben (user)")
    expect(ben.locator("#nav-admin")).to_be_hidden()


def test_wrong_password_says_so_and_stays_on_sign_in(page: Page) -> None:
    form = page.locator("#sign-in-form")
    form.get_by_label("User name").fill(USER[0])
    form.get_by_label("Password").fill("not the password")

    form.get_by_role("button", name="Sign in").click()

    expect(page.locator("#sign-in-error")).to_have_text(
        "That user name and password do not match."
    )
    expect(page.locator("#view-files")).to_be_hidden()


def test_three_dropped_files_each_reach_full_progress(ben: Page) -> None:
    drop_files(ben, THREE_FILES)

    for name, content in THREE_FILES.items():
        row = wait_until_uploaded(ben, name)
        bar = row.locator("progress")
        expect(bar).to_have_js_property("value", float(len(content)))
        expect(bar).to_have_js_property("max", float(len(content)))
        expect(entry_row(ben, name)).to_be_visible()


def test_download_saves_the_exact_bytes(ben: Page) -> None:
    drop_files(ben, THREE_FILES)
    wait_until_uploaded(ben, "photo.bin")

    with ben.expect_download() as info:
        entry_row(ben, "photo.bin").get_by_role("button", name="Download").click()

    download = info.value
    assert download.suggested_filename == "photo.bin"
    assert _sha256(download.path().read_bytes()) == _sha256(THREE_FILES["photo.bin"])


def test_new_folder_appears_and_opens_with_breadcrumbs(ben: Page) -> None:
    ben.get_by_role("button", name="New folder").click()
    ben.get_by_label("Folder name").fill("projects")
    ben.get_by_role("button", name="Create").click()

    entry_row(ben, "projects").get_by_role("link").click()

    expect(ben.locator("#folder-title")).to_have_text("projects")
    crumbs = ben.locator("#crumbs li").all_inner_texts()
    assert [c.strip("/ \n") for c in crumbs] == ["home", "projects"]
    expect(ben.locator("#list-status")).to_have_text("This folder is empty.")


def test_rename_moves_the_file_to_its_new_name(ben: Page, web_server: LiveServer
                                               ) -> None:
    drop_files(ben, {"draft.txt": b"words"})
    wait_until_uploaded(ben, "draft.txt")

    entry_row(ben, "draft.txt").get_by_role("button", name="Rename").click()
    ben.get_by_label("New path in this space").fill("final.txt")
    ben.locator("#dlg-prompt").get_by_role("button", name="Rename").click()

    expect(entry_row(ben, "final.txt")).to_be_visible()
    assert "draft.txt" not in listed_names(ben)
    reply = web_server.request("GET", f"{API}/spaces/home/files/final.txt", token="ben")
    assert reply.body == b"words"


def test_rename_refused_keeps_the_dialog_open_with_the_reason(ben: Page) -> None:
    drop_files(ben, {"a.txt": b"a", "b.txt": b"b"})
    wait_until_uploaded(ben, "a.txt")
    wait_until_uploaded(ben, "b.txt")

    entry_row(ben, "a.txt").get_by_role("button", name="Rename").click()
    ben.get_by_label("New path in this space").fill("b.txt")
    ben.locator("#dlg-prompt").get_by_role("button", name="Rename").click()

    expect(ben.locator("#dlg-prompt .dialog-error")).to_contain_text("b.txt")
    expect(ben.locator("#dlg-prompt")).to_be_visible()


def test_delete_asks_first_and_cancel_keeps_the_file(ben: Page) -> None:
    drop_files(ben, {"keep.txt": b"keep"})
    wait_until_uploaded(ben, "keep.txt")

    entry_row(ben, "keep.txt").get_by_role("button", name="Delete").click()
    expect(ben.locator("#dlg-confirm")).to_be_visible()
    ben.keyboard.press("Escape")

    expect(ben.locator("#dlg-confirm")).to_be_hidden()
    expect(entry_row(ben, "keep.txt")).to_be_visible()


def test_delete_confirmed_with_the_keyboard_removes_the_file(
    ben: Page, web_server: LiveServer
) -> None:
    drop_files(ben, {"gone.txt": b"bye"})
    wait_until_uploaded(ben, "gone.txt")

    entry_row(ben, "gone.txt").get_by_role("button", name="Delete").focus()
    ben.keyboard.press("Enter")
    expect(ben.locator("#dlg-confirm-cancel")).to_be_focused()
    ben.keyboard.press("Tab")
    ben.keyboard.press("Enter")

    expect(entry_row(ben, "gone.txt")).to_have_count(0)
    reply = web_server.request("GET", f"{API}/spaces/home/meta/gone.txt", token="ben")
    assert reply.status == 404


def test_refused_upload_shows_the_servers_detail(ben: Page) -> None:
    too_long = "n" * 300 + ".txt"

    drop_files(ben, {too_long: b"x"})

    row = upload_row(ben, too_long)
    expect(row).to_have_attribute("data-state", "failed")
    expect(row.locator(".upload-status")).to_contain_text("Failed: ")
    expect(row.locator(".upload-status")).to_contain_text("255")


def test_existing_name_is_kept_until_replace_is_pressed(
    ben: Page, web_server: LiveServer
) -> None:
    drop_files(ben, {"same.txt": b"old"})
    wait_until_uploaded(ben, "same.txt")
    ben.get_by_role("button", name="Clear finished").click()

    drop_files(ben, {"same.txt": b"new"})
    row = upload_row(ben, "same.txt")
    expect(row.locator(".upload-status")).to_have_text(
        "A file with this name is already here."
    )
    kept = web_server.request("GET", f"{API}/spaces/home/files/same.txt", token="ben")
    row.get_by_role("button", name="Replace").click()

    expect(row).to_have_attribute("data-state", "done")
    replaced = web_server.request("GET", f"{API}/spaces/home/files/same.txt",
                                  token="ben")
    assert (kept.body, replaced.body) == (b"old", b"new")


def test_read_only_space_offers_no_upload(ben: Page) -> None:
    open_space(ben, "manuals")

    expect(ben.get_by_role("button", name="Upload files")).to_be_hidden()
    guide = entry_row(ben, "guide.txt")
    expect(guide.get_by_role("button", name="Delete")).to_have_count(0)
    expect(guide.get_by_role("button", name="Download")).to_be_visible()


def test_folder_actions_stay_hidden_until_the_space_is_known(
    open_page: Callable[..., Watched], clean_server: LiveServer
) -> None:
    page = open_page(session="ben").page
    wait_for_files(page)
    held: list[Route] = []
    page.route(f"**{API}/spaces", lambda route: held.append(route))

    page.reload()
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the page never asked for its spaces"
    for name in ("Upload files", "New folder", "Import archive"):
        expect(page.get_by_role("button", name=name)).to_be_hidden()
    # Even a file handed to the hidden input goes nowhere: there is no space
    # to send it to yet.
    page.locator("#upload-input").set_input_files(
        files=[{"name": "early.txt", "mimeType": "text/plain", "buffer": b"early"}])
    expect(page.locator("#upload-list li")).to_have_count(0)

    held[0].continue_()
    wait_for_files(page)
    expect(page.get_by_role("button", name="Upload files")).to_be_visible()
    assert "early.txt" not in listed_names(page)


def test_sorting_by_size_orders_files_both_ways(ben: Page) -> None:
    drop_files(ben, {"b-big.bin": b"x" * 3000, "a-small.bin": b"x",
                     "c-mid.bin": b"x" * 20})
    wait_until_uploaded(ben, "b-big.bin")
    expect(ben.locator("#entry-rows tr")).to_have_count(3)

    ben.get_by_role("button", name="Size").click()
    ascending = listed_names(ben)
    ben.get_by_role("button", name="Size").click()
    descending = listed_names(ben)

    assert ascending == ["a-small.bin", "c-mid.bin", "b-big.bin"]
    assert descending == ["b-big.bin", "c-mid.bin", "a-small.bin"]
    size_header = ben.locator("th[data-sort=size]")
    expect(size_header).to_have_attribute("aria-sort", "descending")


def test_a_large_folder_loads_page_by_page(ben: Page, web_server: LiveServer) -> None:
    bulk = web_server.parent / "team" / "bulk"
    bulk.mkdir()
    for number in range(230):
        (bulk / f"file-{number:03}.txt").write_bytes(b"x")

    ben.goto("/#files/team/bulk")
    expect(ben.locator("#entry-rows tr")).to_have_count(200)
    ben.get_by_role("button", name="Load more").click()

    expect(ben.locator("#entry-rows tr")).to_have_count(230)
    expect(ben.get_by_role("button", name="Load more")).to_be_hidden()


def test_sign_out_returns_to_sign_in_and_ends_the_session(
    page: Page, web_server: LiveServer
) -> None:
    sign_in(page, *USER)
    ben = page
    token = ben.evaluate(
        "JSON.parse(sessionStorage.getItem('strongroom.session')).access"
    )

    ben.get_by_role("button", name="Sign out").click()

    expect(ben.locator("#view-sign-in")).to_be_visible()
    assert ben.evaluate("sessionStorage.getItem('strongroom.session')") is None
    reply = web_server.request(
        "GET", f"{API}/account", headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status == 401


def test_reload_keeps_the_session_and_the_folder(ben: Page) -> None:
    ben.goto("/#files/team/")
    expect(ben.locator("#folder-title")).to_have_text("team")

    ben.reload()

    expect(ben.locator("#folder-title")).to_have_text("team")
    expect(ben.locator("#view-sign-in")).to_be_hidden()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
