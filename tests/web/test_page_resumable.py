"""Large uploads from the page: resumable through tus when the server has it
(surviving a cut connection and a reload), one PUT when it has not."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_env import ADMIN, Watched
from cutting_proxy import CuttingProxy
from page_steps import upload_row, wait_for_files, wait_until_uploaded
from playwright.sync_api import Locator, Page, Request, Route, expect

from api.live_server import API, LiveServer

MiB = 1024 * 1024
# Above the page's 8 MiB threshold for tus, and three of its 4 MiB chunks.
LARGE_FILE_BYTES = 10 * MiB + 12_345
# The cut lands inside the second chunk: the first is complete on the server,
# the second is half sent.
CUT_AFTER_BYTES = 6 * MiB
# How fast the reload test lets bytes go, so the reload lands mid-upload.
RELOAD_THROTTLE_BYTES_PER_SECOND = 4 * MiB
WAITING_FOR_TUS = (
    "waiting for the tus server of issue 5: OPTIONS /api/v1/uploads is not "
    "answered with Tus-Version on this tree yet"
)


@pytest.fixture
def large_file(tmp_path: Path) -> Path:
    """A file of random bytes, big enough to go through tus."""
    path = tmp_path / "backup image.bin"
    path.write_bytes(os.urandom(LARGE_FILE_BYTES))
    return path


@pytest.fixture
def tus_server(clean_server: LiveServer) -> LiveServer:
    """The server, when it speaks tus; otherwise the test is skipped."""
    reply = clean_server.request("OPTIONS", f"{API}/uploads", token="ada")
    if reply.status >= 300 or not reply.header("Tus-Version"):
        pytest.skip(WAITING_FOR_TUS)
    return clean_server


@pytest.fixture
def proxy(web_server: LiveServer) -> Iterator[CuttingProxy]:
    """A relay in front of the server that the test can cut."""
    with CuttingProxy(web_server.port) as relay:
        yield relay


def test_cut_connection_resumes_and_keeps_every_byte(
    open_page: Callable[..., Watched], tus_server: LiveServer, proxy: CuttingProxy,
    large_file: Path,
) -> None:
    page = open_page(port=proxy.port, session=ADMIN[0]).page
    wait_for_files(page)
    patches = _record_patch_offsets(page)
    cut = proxy.cut_after(CUT_AFTER_BYTES)
    row = upload_row(page, large_file.name)

    page.locator("#upload-input").set_input_files(large_file)
    assert cut.wait(timeout=20), row.inner_text()
    expect(row.locator(".upload-status")).to_contain_text("Connection lost")
    proxy.restore()
    wait_until_uploaded(page, large_file.name)

    assert _stored_digest(tus_server, large_file.name) == _digest(large_file)
    # The chunk that was cut is sent again from where the server stood; the
    # upload never starts over.
    assert patches[0] == 0 and patches.count(0) == 1, patches
    assert len(patches) == len(set(patches)) + 1, patches


def test_reload_mid_upload_continues_where_it_stopped(
    open_page: Callable[..., Watched], tus_server: LiveServer, large_file: Path
) -> None:
    page, _ = _upload_slowly_until(open_page, large_file, 5 * MiB)

    page.reload()
    wait_for_files(page)
    page.locator("#upload-input").set_input_files(large_file)

    row = wait_until_uploaded(page, large_file.name)
    expect(row.locator(".upload-status")).to_contain_text("continued from")
    assert _stored_digest(tus_server, large_file.name) == _digest(large_file)


def test_a_name_taken_during_a_large_upload_is_kept_until_replace_is_pressed(
    open_page: Callable[..., Watched], tus_server: LiveServer, large_file: Path
) -> None:
    page, row = _upload_slowly_until(open_page, large_file, MiB)

    # Another client takes the name after the page started.
    theirs = tus_server.request(
        "PUT", f"{API}/spaces/home/files/{large_file.name.replace(' ', '%20')}",
        token="ada", body=b"THEIRS",
    )
    assert theirs.status == 201, theirs.body[:300]

    expect(row.locator(".upload-status")).to_have_text(
        "A file with this name is already here.", timeout=30_000
    )
    assert _stored_digest(tus_server, large_file.name) == hashlib.sha256(
        b"THEIRS").hexdigest()
    _throttle_uploads(page, 64 * MiB)
    row.get_by_role("button", name="Replace").click()
    wait_until_uploaded(page, large_file.name)
    assert _stored_digest(tus_server, large_file.name) == _digest(large_file)


def test_large_file_goes_by_put_when_the_server_has_no_tus(
    as_ada: Page, clean_server: LiveServer, large_file: Path
) -> None:
    page = as_ada
    asked: list[str] = []
    page.route(f"**{API}/uploads**",
               lambda route, request: _no_tus(route, request, asked))

    page.locator("#upload-input").set_input_files(large_file)
    wait_until_uploaded(page, large_file.name)

    assert asked == ["OPTIONS"]
    assert _stored_digest(clean_server, large_file.name) == _digest(large_file)


def _no_tus(route: Route, request: Request, asked: list[str]) -> None:
    asked.append(request.method)
    route.fulfill(status=404, content_type="application/problem+json",
                  body='{"status": 404, "code": "not_found", "detail": "Not Found"}')


def _record_patch_offsets(page: Page) -> list[int]:
    offsets: list[int] = []

    def note(request: Request) -> None:
        if request.method == "PATCH":
            offsets.append(int(request.headers.get("upload-offset", "-1")))

    page.on("request", note)
    return offsets


def _upload_slowly_until(
    open_page: Callable[..., Watched], large_file: Path, sent_bytes: int
) -> tuple[Page, Locator]:
    """Start a throttled upload of `large_file` as ada; return once `sent_bytes`
    have gone, with the page and the upload's row."""
    page = open_page(session=ADMIN[0]).page
    wait_for_files(page)
    _throttle_uploads(page, RELOAD_THROTTLE_BYTES_PER_SECOND)
    page.locator("#upload-input").set_input_files(large_file)
    row = upload_row(page, large_file.name)
    page.wait_for_function(
        "([bar, sent]) => bar.value >= sent",
        arg=[row.locator("progress").element_handle(), sent_bytes],
    )
    return page, row


def _throttle_uploads(page: Page, bytes_per_second: int) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": bytes_per_second,
    })


def _stored_digest(server: LiveServer, name: str) -> str:
    reply = server.request(
        "GET", f"{API}/spaces/home/files/{name.replace(' ', '%20')}", token="ada",
        timeout=30,
    )
    assert reply.status == 200, reply.body[:300]
    return hashlib.sha256(reply.body).hexdigest()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
