"""Downloads handed to nginx (X-Accel-Redirect), through a real nginx on loopback.

The app authorises, resolves and opens the file; nginx sends it. These tests run
the configuration `strongroom nginx-config` prints in front of a real server and
check that the bytes, the safety headers, Range, share counters and containment
are what the app alone gives, and that nginx refuses a symlink swapped in after
the app's check instead of following it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from live_server import (
    ALICE_PASSWORD,
    BOB_PASSWORD,
    CONFIG,
    SPACE_DIRS,
    LiveServer,
    files_url,
    run_server,
)

from backends import on_s3
from nginx_server import NGINX, nginx_problem, run_nginx

pytestmark = pytest.mark.skipif(
    nginx_problem() is not None and not os.environ.get("CI"),
    reason=str(nginx_problem()),
)

OFFLOAD_CONFIG = 'offload = "nginx"\ntrusted_proxies = ["127.0.0.1"]\n' + CONFIG
USERS = (("alice", ALICE_PASSWORD, "user"), ("bob", BOB_PASSWORD, "admin"))
SECRET = b"OUTSIDE-SECRET-NGINX"
RACE_ATTEMPTS = 300
RACE_SECONDS = 20.0
HOLD_SECONDS = 0.001


@dataclasses.dataclass
class Fronted:
    app: LiveServer  # the app itself, on its own port
    front: LiveServer  # the same server and tokens, reached through nginx


@pytest.fixture(scope="module")
def fronted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fronted]:
    parent = tmp_path_factory.mktemp("p-nginx")
    for name in (*SPACE_DIRS, "outside", "lab-backup"):
        (parent / name).mkdir()
    config_text = OFFLOAD_CONFIG.format(data_dir=parent / "data")
    with run_server(parent, config_text, "auto", USERS) as app:
        runtime = parent.with_name(parent.name + ".nginx")
        with run_nginx(app.config_path, [app.port], runtime) as port:
            yield Fronted(app, dataclasses.replace(app, port=port))


@pytest.fixture
def env(fronted: Fronted) -> Fronted:
    fronted.app.reset_tree()
    fronted.app.reset_home("alice")
    fronted.app.forget_failed_logins()
    return fronted


@pytest.mark.parametrize("space", ["lab", "home"])
def test_a_download_through_nginx_is_sent_by_nginx_with_the_apps_headers(
    env: Fronted, space: str
) -> None:
    body = os.urandom(300_000)
    assert env.front.put(space, "d/data.bin", body).status in (200, 201)

    got = env.front.request("GET", files_url(space, "d/data.bin"))
    direct = env.app.request("GET", files_url(space, "d/data.bin"))

    assert got.status == 200 and got.body == body
    assert got.header("x-accel-redirect") is None
    assert got.header("x-content-type-options") == "nosniff"
    assert got.header("content-security-policy") == "sandbox; default-src 'none'"
    assert (got.header("content-disposition") or "").startswith("inline;")
    if space == "home" and on_s3():
        # nginx cannot reach a blob in S3: the app streams it itself.
        assert direct.status == 200 and direct.body == body
        assert direct.header("x-accel-redirect") is None
        return
    # The app itself answered with the hand-over and no bytes: nginx sent them.
    assert direct.status == 200 and direct.body == b""
    redirect = direct.header("x-accel-redirect") or ""
    kind = "blobs" if space == "home" else "spaces/lab"
    assert redirect.startswith(f"/_strongroom/{kind}/")


@pytest.mark.parametrize("space", ["lab", "home"])
def test_range_and_head_are_answered_by_nginx(env: Fronted, space: str) -> None:
    body = bytes(range(256)) * 1000
    env.front.put(space, "r.bin", body)

    part = env.front.request(
        "GET", files_url(space, "r.bin"), headers={"Range": "bytes=1000-1999"}
    )
    head = env.front.request("HEAD", files_url(space, "r.bin"))

    assert part.status == 206 and part.body == body[1000:2000]
    assert part.header("content-range") == f"bytes 1000-1999/{len(body)}"
    assert head.status == 200 and head.body == b""
    assert head.header("content-length") == str(len(body))


def test_active_content_stays_an_attachment_through_nginx(env: Fronted) -> None:
    env.front.request(
        "PUT", files_url("lab", "page.html"), body=b"<script>alert(1)</script>",
        headers={"Content-Type": "text/html"},
    )

    got = env.front.request("GET", files_url("lab", "page.html"))

    assert got.status == 200
    assert (got.header("content-disposition") or "").startswith("attachment;")
    assert got.header("x-content-type-options") == "nosniff"


def test_names_that_need_escaping_reach_the_right_file(env: Fronted) -> None:
    names = ["a b.txt", "100%.txt", "q?x.txt", "hash#1.txt", "été.txt", "%2e%2e.txt"]
    for n, name in enumerate(names):
        (env.app.parent / "lab" / name).write_bytes(b"file %d" % n)

    for n, name in enumerate(names):
        got = env.front.request("GET", files_url("lab", quote(name)))
        assert (got.status, got.body) == (200, b"file %d" % n), name


@pytest.mark.parametrize(
    "path",
    ["/_strongroom/spaces/lab/x.txt", "/_strongroom/blobs/",
     "/_strongroom/spaces/lab/", "/_strongroom/spaces/lab/%78.txt"],
)
def test_the_internal_locations_cannot_be_asked_for(env: Fronted, path: str) -> None:
    (env.app.parent / "lab" / "x.txt").write_bytes(b"public")

    got = env.front.request("GET", path, token=None)

    assert got.status == 404
    assert b"public" not in got.body


def test_a_planted_symlink_is_refused_by_the_app_before_nginx_sees_it(
    env: Fronted,
) -> None:
    (env.app.parent / "outside" / "secret.txt").write_bytes(SECRET)
    (env.app.parent / "lab" / "link.txt").symlink_to("../outside/secret.txt")

    got = env.front.request("GET", files_url("lab", "link.txt"))

    assert got.status in (403, 404)
    assert SECRET not in got.body


@pytest.mark.race
def test_a_folder_swapped_for_a_symlink_after_the_check_is_refused_by_nginx(
    env: Fronted,
) -> None:
    """The app checked lab/d/f.txt; then d becomes a link to outside/d."""
    lab, outside = env.app.parent / "lab", env.app.parent / "outside"
    (lab / "d").mkdir()
    (lab / "d" / "f.txt").write_bytes(b"PUBLIC")
    (outside / "d").mkdir()
    (outside / "d" / "f.txt").write_bytes(SECRET)
    stop = threading.Event()
    swaps = 0

    def attack() -> None:
        # Each phase is held a little: the app must see the real folder and
        # nginx, a moment later, the link.
        nonlocal swaps
        while not stop.is_set():
            time.sleep(HOLD_SECONDS)
            os.rename(lab / "d", lab / "d-real")
            os.symlink("../outside/d", lab / "d")
            time.sleep(HOLD_SECONDS)
            os.unlink(lab / "d")
            os.rename(lab / "d-real", lab / "d")
            swaps += 1

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + RACE_SECONDS
    try:
        for _ in range(RACE_ATTEMPTS):
            if time.monotonic() > deadline:
                break
            got = env.front.request("GET", files_url("lab", "d/f.txt"))
            assert SECRET not in got.body, "nginx followed the swapped-in link"
            if got.status != 200:
                assert got.header("content-type") == "application/problem+json"
            statuses[got.status] = statuses.get(got.status, 0) + 1
    finally:
        stop.set()
        attacker.join()
    print(f"statuses {statuses}, {swaps} swaps")
    assert statuses.get(200, 0) > 0, f"never served the public file: {statuses}"
    assert swaps > 0
    assert set(statuses) <= {200, 403, 404, 409, 500}
    assert statuses.get(500, 0) == 0


def test_share_downloads_through_nginx_keep_their_limit(env: Fronted) -> None:
    env.front.put("lab", "shared.txt", b"shared bytes")
    made = env.front.request(
        "POST", "/api/v1/spaces/lab/shares",
        body=json.dumps({"path": "shared.txt", "max_downloads": 2}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert made.status == 201, made.body
    url = made.json()["url"]  # type: ignore[index]

    answers = [env.front.request("GET", url, token=None) for _ in range(3)]

    assert [a.status for a in answers] == [200, 200, 410]
    assert answers[0].body == b"shared bytes"
    assert answers[0].header("content-security-policy") == "sandbox; default-src 'none'"


def test_uploads_stream_through_nginx_and_keep_the_apps_limit(env: Fronted) -> None:
    too_big = env.front.put("lab", "big.bin", b"x" * (1024 * 1024 + 1))
    fits = env.front.put("lab", "ok.bin", b"y" * 1024 * 1024)

    assert too_big.status == 413
    assert too_big.header("content-type") == "application/problem+json"
    assert fits.status in (200, 201)
    assert not (env.app.parent / "lab" / "big.bin").exists()


def test_the_generated_config_passes_nginx_own_check(fronted: Fronted) -> None:
    runtime = fronted.app.parent.with_name(fronted.app.parent.name + ".nginx")
    conf = runtime / "nginx.conf"
    text = conf.read_text()

    checked = subprocess.run(
        [str(NGINX), "-t", "-e", str(runtime / "early.log"), "-c", str(conf)],
        capture_output=True, text=True,
    )

    assert checked.returncode == 0, checked.stderr
    trees = len(SPACE_DIRS) + (0 if on_s3() else 1)  # and the local blob folder
    assert text.count("disable_symlinks on;") == trees
    assert text.count("internal;") == trees


def test_a_deep_non_ascii_path_is_served_and_takes_no_instance_out(
    env: Fronted,
) -> None:
    """Found by an attack session: a long X-Accel-Redirect overflowed nginx's
    4 KiB header buffer, a 502 that marked the instance down for everyone."""
    name = "/".join(["\u3042" * 80] * 6) + "/deep.txt"  # 1,440 bytes, 4 KiB encoded
    (env.app.parent / "lab" / name).parent.mkdir(parents=True)
    (env.app.parent / "lab" / name).write_bytes(b"deep")

    got = [env.front.request("GET", files_url("lab", quote(name))) for _ in range(3)]
    ready = [env.front.request("GET", "/readyz", token=None) for _ in range(5)]

    assert [(g.status, g.body) for g in got] == [(200, b"deep")] * 3
    assert [r.status for r in ready] == [200] * 5


def test_validators_are_the_apps_and_judged_before_handing_over(
    env: Fronted,
) -> None:
    body = bytes(range(256)) * 40
    env.front.put("lab", "v.bin", body)
    first = env.front.request("GET", files_url("lab", "v.bin"))
    etag = first.header("etag") or ""

    cached = env.front.request("GET", files_url("lab", "v.bin"),
                               headers={"If-None-Match": etag})
    beyond = env.front.request("GET", files_url("lab", "v.bin"),
                               headers={"Range": "bytes=999999-"})
    several = env.front.request("GET", files_url("lab", "v.bin"),
                                headers={"Range": "bytes=0-1,5-6"})

    assert etag.startswith('"') and etag == env.app.request(
        "GET", files_url("lab", "v.bin")).header("etag")
    assert cached.status == 304 and cached.body == b""
    assert beyond.status == 416
    assert beyond.header("content-type") == "application/problem+json"
    assert several.status == 200 and several.body == body  # one range at most


def test_a_share_link_counts_only_what_is_sent(env: Fronted) -> None:
    """304 and 416 are the app's answers and use up no download of a link."""
    env.front.put("lab", "once.txt", b"only once")
    made = env.front.request(
        "POST", "/api/v1/spaces/lab/shares",
        body=json.dumps({"path": "once.txt", "max_downloads": 1}).encode(),
        headers={"Content-Type": "application/json"},
    )
    url = made.json()["url"]  # type: ignore[index]

    cached = env.front.request("GET", url, token=None, headers={"If-None-Match": "*"})
    beyond = env.front.request("GET", url, token=None,
                               headers={"Range": "bytes=1000-"})
    sent = env.front.request("GET", url, token=None)
    again = env.front.request("GET", url, token=None)

    assert (cached.status, beyond.status) == (304, 416)
    assert (sent.status, sent.body) == (200, b"only once")
    assert again.status == 410
