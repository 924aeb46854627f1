"""The page's session: refreshed before the access token expires, and never
shared by a copied tab (a refresh token used twice ends the whole session)."""

from __future__ import annotations

from browser_env import USER
from page_steps import open_space, sign_in, wait_for_files
from playwright.sync_api import Page, expect

from api.live_server import LiveServer

SESSION_KEY = "strongroom.session"
READ_SESSION = f"JSON.parse(sessionStorage.getItem('{SESSION_KEY}'))"


def test_access_token_is_refreshed_before_it_expires(
    page: Page, clean_server: LiveServer
) -> None:
    page.clock.install()
    page.reload()
    sign_in(page, *USER)
    first = page.evaluate(READ_SESSION)

    # The server's tokens last 15 minutes; the page refreshes a minute early.
    page.clock.run_for("14:05")
    page.wait_for_function(
        f"(old) => {READ_SESSION}.access !== old", arg=first["access"]
    )
    second = page.evaluate(READ_SESSION)
    open_space(page, "team")

    assert second["refresh"] != first["refresh"]
    assert second["sid"] == first["sid"]
    assert page.locator("#view-sign-in").is_hidden()


def test_copied_tab_asks_for_its_own_sign_in(page: Page, clean_server: LiveServer
                                              ) -> None:
    sign_in(page, *USER)
    saved = page.evaluate(f"sessionStorage.getItem('{SESSION_KEY}')")
    copy = page.context.new_page()
    copy.goto("/assets/icon.svg")
    copy.evaluate(f"(saved) => sessionStorage.setItem('{SESSION_KEY}', saved)", saved)

    copy.goto("/")

    expect(copy.locator("#view-sign-in")).to_be_visible()
    expect(copy.locator("#sign-in-error")).to_contain_text("copy of another open tab")
    page.reload()
    wait_for_files(page)
