"""`s3_redirect_seconds`: home downloads answered with a redirect to a signed S3 URL.

The app still checks the token, the scope and the path, and picks the type and
disposition; the store then sends the bytes. The signed URL works for its
lifetime only, names one blob, and a share link counts the redirect as a download.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from live_server import ALICE_PASSWORD, API, LiveServer, files_url, run_server

from s3_server import S3Server

REDIRECT_SECONDS = 2
CONFIG = """\
data_dir = "{data_dir}"
s3_redirect_seconds = {seconds}
{s3}
[[spaces]]
name = "lab"
path = "lab"
mode = "rw"
users = ["alice"]
"""


@pytest.fixture(scope="module")
def redirecting(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[LiveServer]:
    parent = tmp_path_factory.mktemp("s3-redirect")
    (parent / "lab").mkdir()
    config = CONFIG.format(
        data_dir=parent / "data", seconds=REDIRECT_SECONDS,
        s3=s3_server.toml(f"s3://{s3_server.create_bucket()}/homes"),
    )
    with run_server(parent, config, "auto", (("alice", ALICE_PASSWORD, "user"),)) as s:
        yield s


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
    assert urlsplit(url).hostname == "127.0.0.1", url  # loopback only
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_a_home_download_redirects_to_a_signed_url_that_serves_it(
    redirecting: LiveServer,
) -> None:
    body = b"<html>stored xss attempt</html>" * 100
    redirecting.request("PUT", files_url("home", "page.html"), body=body,
                        headers={"Content-Type": "text/html"})

    reply = redirecting.request("GET", files_url("home", "page.html"))
    location = reply.header("location") or ""
    status, got, headers = fetch(location)
    _, part, _ = fetch(location, {"Range": "bytes=10-19"})

    assert reply.status == 307 and reply.body == b""
    assert reply.header("cache-control") == "private, no-store"
    assert status == 200 and got == body and part == body[10:20]
    assert headers["Content-Disposition"].startswith("attachment;")
    assert headers["Content-Type"] == "text/html"


def test_the_signed_url_stops_working_after_its_lifetime(
    redirecting: LiveServer,
) -> None:
    redirecting.request("PUT", files_url("home", "short.txt"), body=b"short-lived")
    location = redirecting.request("GET", files_url("home", "short.txt")).header(
        "location") or ""

    time.sleep(REDIRECT_SECONDS + 1.5)
    status, got, _ = fetch(location)

    assert status == 403 and b"short-lived" not in got


def test_refusals_and_directory_spaces_are_never_redirected(
    redirecting: LiveServer,
) -> None:
    redirecting.request("PUT", files_url("lab", "local.txt"), body=b"local")

    local = redirecting.request("GET", files_url("lab", "local.txt"))
    missing = redirecting.request("GET", files_url("home", "nothing.txt"))
    anonymous = redirecting.request("GET", files_url("home", "short.txt"), token=None)

    assert (local.status, local.body) == (200, b"local")
    assert missing.status == 404 and missing.header("location") is None
    assert anonymous.status == 401 and anonymous.header("location") is None


def test_a_share_link_counts_each_redirect_as_a_download(
    redirecting: LiveServer,
) -> None:
    redirecting.request("PUT", files_url("home", "s.txt"), body=b"shared")
    made = redirecting.request(
        "POST", f"{API}/spaces/home/shares",
        body=json.dumps({"path": "s.txt", "max_downloads": 2}).encode(),
        headers={"Content-Type": "application/json"},
    )
    url = made.json()["url"]  # type: ignore[index]

    answers = [redirecting.request("GET", url, token=None) for _ in range(3)]

    assert [a.status for a in answers] == [307, 307, 410]
    assert fetch(answers[0].header("location") or "")[1] == b"shared"
