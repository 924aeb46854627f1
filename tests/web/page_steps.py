"""What a person does on the page, as steps the browser tests share."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from playwright.sync_api import Locator, Page, expect

# Builds File objects from base64 payloads and drops them on the folder view the
# way a browser does: dragenter, dragover, drop, all with one DataTransfer.
_DROP_FILES = """([names, payloads]) => {
  const transfer = new DataTransfer();
  names.forEach((name, index) => {
    const bytes = Uint8Array.from(atob(payloads[index]), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name, { type: "application/octet-stream" }));
  });
  const zone = document.getElementById("drop-zone");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {
      dataTransfer: transfer, bubbles: true, cancelable: true,
    }));
  }
}"""


def sign_in(page: Page, name: str, password: str) -> None:
    """Fill and send the sign-in form; wait for the folder view."""
    form = page.locator("#sign-in-form")
    form.get_by_label("User name").fill(name)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Sign in").click()
    wait_for_files(page)


def wait_for_files(page: Page) -> None:
    """Wait until the folder view shows a loaded listing."""
    expect(page.locator("#view-files")).to_be_visible()
    expect(page.locator("#list-status")).not_to_have_text("Loading…")
    expect(page.locator("#list-status")).not_to_be_empty()


def drop_files(page: Page, files: Mapping[str, bytes]) -> None:
    """Drop `files` (name to content) on the folder view."""
    names = list(files)
    payloads = [base64.b64encode(files[name]).decode("ascii") for name in names]
    page.evaluate(_DROP_FILES, [names, payloads])


def upload_row(page: Page, name: str) -> Locator:
    """The upload list's row for the file called `name`."""
    return page.locator("#upload-list li").filter(
        has=page.locator(".name", has_text=name)
    )


def wait_until_uploaded(page: Page, name: str) -> Locator:
    """Wait until the upload of `name` is done and return its row."""
    row = upload_row(page, name)
    expect(row).to_have_attribute("data-state", "done")
    return row


def entry_row(page: Page, name: str) -> Locator:
    """The folder listing's row for the entry called exactly `name`."""
    return page.locator("#entry-rows tr").filter(
        has=page.locator(".entry-name", has_text=name)
    )


def open_space(page: Page, space: str) -> None:
    """Open the top folder of `space` from the spaces list."""
    page.locator("#space-list").get_by_role("link", name=space).click()
    expect(page.locator("#folder-title")).to_have_text(space)
    expect(page.locator("#list-status")).not_to_have_text("Loading…")


def listed_names(page: Page) -> list[str]:
    """The names in the folder listing, in the order shown."""
    return page.locator("#entry-rows .entry-name").all_inner_texts()
