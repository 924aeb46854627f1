"""Archives from the page: import with the per-member report, folder as zip."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from page_steps import entry_row, listed_names
from playwright.sync_api import Page, expect

from api.live_server import LiveServer


@pytest.fixture
def ben(as_ben: Page) -> Page:
    """The page, signed in as ben, showing his home."""
    return as_ben


def test_import_reports_each_member_and_lists_the_files(ben: Page) -> None:
    archive = _zip({"letters/a.txt": b"a", "letters/b.txt": b"bb", "top.txt": b"t"})

    ben.locator("#import-input").set_input_files(
        {"name": "bundle.zip", "mimeType": "application/zip", "buffer": archive}
    )

    report = ben.locator("#dlg-report")
    expect(report.locator("#dlg-report-rows tr")).to_have_count(3)
    expect(report.locator("#dlg-report-summary")).to_contain_text("3 imported")
    report.get_by_role("button", name="Close").click()
    expect(entry_row(ben, "letters")).to_be_visible()
    assert listed_names(ben) == ["letters", "top.txt"]


def test_refused_import_names_the_member_and_changes_nothing(
    ben: Page, web_server: LiveServer
) -> None:
    archive = _tar_with_symlink()

    ben.locator("#import-input").set_input_files(
        {"name": "bad.tar", "mimeType": "application/x-tar", "buffer": archive}
    )

    report = ben.locator("#dlg-report")
    refused = report.locator("#dlg-report-rows tr[data-status=refused]")
    expect(refused).to_contain_text("escape")
    summary = report.locator("#dlg-report-summary")
    expect(summary).to_contain_text("Nothing was imported")
    assert web_server.list_all("home", "", token="ben") == []


def test_folder_downloads_as_a_zip_of_its_files(
    ben: Page, web_server: LiveServer
) -> None:
    web_server.put("home", "album/one.txt", b"1", token="ben")
    web_server.put("home", "album/two.txt", b"22", token="ben")
    ben.reload()

    with ben.expect_download() as info:
        entry_row(ben, "album").get_by_role("button", name="Zip").click()

    assert info.value.suggested_filename == "album.zip"
    with zipfile.ZipFile(info.value.path()) as archive:
        names = sorted(archive.namelist())
        assert archive.read("two.txt") == b"22"
    assert names == ["one.txt", "strongroom-manifest.json", "two.txt"]


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar_with_symlink() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        fine = tarfile.TarInfo("fine.txt")
        fine.size = 4
        archive.addfile(fine, io.BytesIO(b"fine"))
        link = tarfile.TarInfo("escape")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    return buffer.getvalue()
