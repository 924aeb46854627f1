"""The admin view: people added, disabled and signed out from the page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser_env import ADMIN, USER
from page_steps import sign_in
from playwright.sync_api import Page, expect

from api.live_server import LiveServer

NEW_PASSWORD = "a-long-passphrase-9"  # noqa: S105 (test fixture)


@pytest.fixture
def ada(as_ada: Page) -> Page:
    """A page signed in as ada (admin), showing the admin view."""
    return _open_admin(as_ada)


@pytest.fixture
def ada_by_form(page: Page) -> Page:
    """Ada signed in through the form, in a session of this test's own (the
    test signs her out, which must not end the session other tests share)."""
    sign_in(page, *ADMIN)
    return _open_admin(page)


@pytest.fixture
def newcomer(web_server: LiveServer) -> Iterator[str]:
    """A name for an account the test creates; removed again afterwards."""
    yield "cleo"
    web_server.remove_user("cleo")


def test_admin_adds_a_person_who_then_signs_in(ada_by_form: Page, newcomer: str
                                               ) -> None:
    ada = ada_by_form
    form = ada.locator("#add-user-form")
    form.get_by_label("User name").fill(newcomer)
    form.get_by_label("Password").fill(NEW_PASSWORD)
    form.get_by_role("button", name="Add").click()
    added = ada.locator(f"#user-rows tr[data-user={newcomer}]")
    expect(added).to_contain_text("Active")

    ada.get_by_role("button", name="Sign out").click()
    sign_in(ada, newcomer, NEW_PASSWORD)

    expect(ada.locator("#account-name")).to_have_text(f"{newcomer} (user)")
    expect(ada.locator("#folder-title")).to_have_text("home")


def test_a_refused_new_account_shows_the_reason(ada: Page) -> None:
    form = ada.locator("#add-user-form")
    form.get_by_label("User name").fill(USER[0])
    form.get_by_label("Password").fill(NEW_PASSWORD)

    form.get_by_role("button", name="Add").click()

    expect(ada.locator("#add-user-error")).to_contain_text(USER[0])


def test_disabled_person_can_no_longer_sign_in(
    ada_by_form: Page, web_server: LiveServer, newcomer: str
) -> None:
    ada = ada_by_form
    web_server.add_logged_in_user(newcomer, NEW_PASSWORD)
    ada.reload()
    row = ada.locator(f"#user-rows tr[data-user={newcomer}]")

    row.get_by_role("button", name=f"Disable {newcomer}").click()
    ada.locator("#dlg-confirm").get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("Disabled")
    ada.get_by_role("button", name="Sign out").click()
    form = ada.locator("#sign-in-form")
    form.get_by_label("User name").fill(newcomer)
    form.get_by_label("Password").fill(NEW_PASSWORD)
    form.get_by_role("button", name="Sign in").click()

    expect(ada.locator("#sign-in-error")).not_to_be_empty()
    expect(ada.locator("#view-files")).to_be_hidden()


def test_sign_out_everywhere_revokes_the_persons_tokens(
    ada: Page, web_server: LiveServer, newcomer: str
) -> None:
    web_server.add_logged_in_user(newcomer, NEW_PASSWORD)
    ada.reload()
    row = ada.locator(f"#user-rows tr[data-user={newcomer}]")

    row.get_by_role("button", name=f"Sign {newcomer} out everywhere").click()
    confirm = ada.locator("#dlg-confirm")
    confirm.get_by_role("button", name="Sign out everywhere").click()

    expect(ada.locator("#notice")).to_contain_text(f"{newcomer} is signed out")
    assert web_server.request("GET", "/api/v1/account", token=newcomer).status == 401


def test_admin_view_shows_every_space_with_its_policies(ada: Page) -> None:
    spaces = ada.locator("#admin-space-rows tr").all_inner_texts()

    assert [line.split()[0] for line in spaces] == ["home", "manuals", "team"]
    expect(ada.locator("#admin-space-rows")).to_contain_text("read-only")
    expect(ada.locator("#admin-space-rows")).to_contain_text("deny")


def test_an_admin_sets_a_password_and_the_person_signs_in_with_it(
    ada: Page, web_server: LiveServer, newcomer: str
) -> None:
    web_server.add_logged_in_user(newcomer, NEW_PASSWORD)
    ada.reload()
    row = ada.locator(f"#user-rows tr[data-user={newcomer}]")

    row.get_by_role("button", name=f"Set a new password for {newcomer}").click()
    dialog = ada.locator("#dlg-prompt")
    expect(dialog.locator("#dlg-prompt-input")).to_have_attribute("type", "password")
    dialog.locator("#dlg-prompt-input").fill("a brand new passphrase 7")
    dialog.get_by_role("button", name="Set password").click()

    expect(ada.locator("#notice")).to_contain_text(f"{newcomer} has a new password")
    assert web_server.request("GET", "/api/v1/account", token=newcomer).status == 401
    assert web_server.login(newcomer, "a%20brand%20new%20passphrase%207").status == 200


def test_people_without_the_admin_scope_get_no_admin_view(as_ben: Page) -> None:
    page = as_ben

    page.goto("/#admin")

    expect(page.locator("#view-admin")).to_be_hidden()
    expect(page.locator("#view-files")).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_be_hidden()


def _open_admin(page: Page) -> Page:
    page.get_by_role("link", name="Admin").click()
    expect(page.locator("#user-rows tr")).not_to_have_count(0)
    return page
