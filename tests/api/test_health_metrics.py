"""/healthz, /readyz and /metrics on real servers (issue 6).

The servers here are our own, not the shared fixture's: the readiness tests take
a server's database or blob folder away, and the counter tests need a server
that no other test talks to, so that every counter moves by a known amount.
Metrics are read the way Prometheus reads them, by parsing the exposition.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from live_server import (
    ALICE_PASSWORD,
    API,
    BOB_PASSWORD,
    PROBLEM_JSON,
    LiveServer,
    Reply,
    files_url,
    run_server,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from pg_database import fresh_postgres_database, postgres_problem
from strongroom.api.health import READY_FRESH_SECONDS, ReadinessProbe
from strongroom.config import load_settings
from strongroom.errors import ConfigError

METRICS_TOKEN = "scrape-" + "7f3a9c" * 6  # noqa: S105 (test fixture)
USERS = (("alice", ALICE_PASSWORD, "user"), ("bob", BOB_PASSWORD, "admin"))
CONFIG = """\
data_dir = "{data_dir}"
metrics_token = "{metrics_token}"
{database}
[[spaces]]
name = "lab"
path = "lab"
mode = "rw"
users = ["alice", "bob"]
"""
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
# /readyz bounds each check at 2 s (READY_TIMEOUT_SECONDS); a generous margin
# for a loaded machine, still far below "hangs".
READY_ANSWER_SECONDS = 5.0
# The one route the router never sees, and the word for unmatched requests.
FIXED_ROUTES = {"fastlane_download", "other", "/metrics"}


@dataclass
class Scrape:
    """One /metrics answer, parsed: sample values by (name, labels)."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    body_bytes: int

    def delta(self, later: Scrape, name: str) -> dict[tuple[str, ...], float]:
        """Return how each series of sample `name` moved, without the unmoved."""
        moved: dict[tuple[str, ...], float] = {}
        for key in self.samples.keys() | later.samples.keys():
            if key[0] != name:
                continue
            change = later.samples.get(key, 0.0) - self.samples.get(key, 0.0)
            if change:
                moved[tuple(value for _, value in key[1])] = change
        return moved

    def label_values(self) -> set[str]:
        """Return every label value of every sample."""
        return {value for _, labels in self.samples for _, value in labels}


# Servers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of our own on SQLite, with a metrics token and alice and bob."""
    with started_server(tmp_path_factory.mktemp("health"), "") as live:
        yield live


@pytest.fixture
def spare_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server on SQLite for one test, which may break it."""
    # SQLite and a local blob folder in every run: these tests take them away.
    with started_server(tmp_path / "p", 'blob_store_url = ""') as live:
        yield live


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """The name of a PostgreSQL database of our own, dropped afterwards."""
    problem = postgres_problem()
    if problem:
        pytest.skip(f"PostgreSQL is unreachable: {problem}")
    with fresh_postgres_database("strongroom_health") as url:
        yield url.rsplit("/", 1)[1]


@contextmanager
def started_server(parent: Path, database: str) -> Iterator[LiveServer]:
    parent.mkdir(exist_ok=True)
    (parent / "lab").mkdir()
    config = CONFIG.format(
        data_dir=parent / "data", metrics_token=METRICS_TOKEN, database=database
    )
    with run_server(parent, config, "auto", USERS) as live:
        yield live


# Helpers


def scrape(server: LiveServer) -> Scrape:
    """Read /metrics with the metrics token and parse it."""
    reply = get(server, "/metrics", METRICS_TOKEN)
    assert reply.status == 200, reply.body[:300]
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return Scrape(samples, len(reply.body))


def get(server: LiveServer, path: str, bearer: str | None = None) -> Reply:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return server.request("GET", path, headers=headers, token=None)


def login(server: LiveServer, form: bytes) -> Reply:
    return server.request("POST", f"{API}/token", body=form, headers=FORM, token=None)


def make_key(server: LiveServer, scope: str) -> str:
    """Make an API key of bob's with `scope` and return it."""
    body = {"name": f"k-{scope}", "scope": scope, "password": BOB_PASSWORD}
    reply = server.request(
        "POST", f"{API}/account/keys", body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, token="bob",
    )
    assert reply.status == 201, reply.body
    key = reply.json()["key"]  # type: ignore[index]
    assert isinstance(key, str)
    return key


def problem(reply: Reply) -> dict[str, object]:
    assert reply.header("Content-Type") == PROBLEM_JSON
    body = reply.json()
    assert isinstance(body, dict)
    return body


def timed(call: Callable[[], Reply]) -> tuple[Reply, float]:
    started = time.monotonic()
    reply = call()
    return reply, time.monotonic() - started


# /healthz


def test_healthz_answers_ok_without_a_token(server: LiveServer) -> None:
    reply = get(server, "/healthz")

    assert reply.status == 200
    assert reply.json() == {"status": "ok"}
    assert reply.header("Cache-Control") == "no-store"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_head_as_load_balancers_send_it(
    server: LiveServer, path: str
) -> None:
    reply = server.request("HEAD", path, token=None)

    assert reply.status == 200 and reply.body == b""


# /readyz


def test_readyz_answers_ready_when_database_and_blobs_answer(
    server: LiveServer,
) -> None:
    reply = get(server, "/readyz")

    assert reply.status == 200
    assert reply.json() == {
        "status": "ready", "checks": {"database": "ok", "blobs": "ok"}
    }


def test_readyz_is_503_while_the_postgresql_database_is_dropped(
    tmp_path: Path, postgres_database: str
) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/{postgres_database}"
    with started_server(tmp_path / "p", f'database_url = "{url}"') as live:
        assert get(live, "/readyz").status == 200
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{postgres_database}" WITH (FORCE)')
        time.sleep(READY_FRESH_SECONDS)  # the last answer is reused that long

        reply, seconds = timed(lambda: get(live, "/readyz"))
        alive = get(live, "/healthz")

    body = problem(reply)
    assert reply.status == 503 and body["code"] == "not_ready"
    assert body["checks"] == {"database": "failed", "blobs": "ok"}
    assert seconds < READY_ANSWER_SECONDS
    for secret in (postgres_database, "postgres", "127.0.0.1", "5432"):
        assert secret not in reply.body.decode()
    assert alive.status == 200


def test_readyz_is_503_while_the_sqlite_file_is_away_and_200_once_back(
    spare_server: LiveServer,
) -> None:
    server = spare_server  # always on SQLite, whichever engines this run tests
    db_file = server.data_dir / "strongroom.db"
    away = db_file.with_name("moved-away.db")

    os.rename(db_file, away)
    try:
        reply, seconds = timed(lambda: get(server, "/readyz"))
        alive = get(server, "/healthz")
    finally:
        os.rename(away, db_file)
    time.sleep(READY_FRESH_SECONDS)  # the failed answer is reused that long
    back = get(server, "/readyz")

    assert reply.status == 503
    assert problem(reply)["checks"] == {"database": "failed", "blobs": "ok"}
    assert str(server.data_dir) not in reply.body.decode()
    assert seconds < READY_ANSWER_SECONDS
    assert alive.status == 200
    assert back.status == 200


def test_readyz_is_503_once_the_blob_folder_is_removed(
    spare_server: LiveServer,
) -> None:
    shutil.rmtree(spare_server.data_dir / "blobs")

    reply = get(spare_server, "/readyz")
    alive = get(spare_server, "/healthz")

    assert reply.status == 503
    assert problem(reply)["checks"] == {"database": "ok", "blobs": "failed"}
    assert str(spare_server.data_dir) not in reply.body.decode()
    assert alive.status == 200


def test_a_hung_check_answers_timeout_in_time_and_is_not_started_twice() -> None:
    release = threading.Event()
    calls: list[int] = []

    def hung() -> None:
        calls.append(1)
        release.wait(30)

    probe = ReadinessProbe({"database": hung, "blobs": lambda: None}, 0.2)

    async def probe_twice() -> list[dict[str, str]]:
        return [dict(await probe.run()), dict(await probe.run())]

    started = time.monotonic()
    try:
        answers = asyncio.run(probe_twice())
        seconds = time.monotonic() - started
    finally:
        release.set()

    assert answers == [{"database": "timeout", "blobs": "ok"}] * 2
    assert seconds < 2.0
    assert calls == [1]


# /metrics: who may read it


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("nobody", 401),
        ("not_a_token", 401),
        ("metrics_token_wrong", 401),
        ("user_token", 403),
        ("admin_key_without_admin_scope", 403),
        ("admin_token", 200),
        ("admin_key", 200),
        ("metrics_token", 200),
    ],
)
def test_metrics_needs_the_metrics_token_or_the_admin_scope(
    server: LiveServer, who: str, status: int
) -> None:
    bearer = {
        "nobody": lambda: None,
        "not_a_token": lambda: secrets.token_urlsafe(24),
        "metrics_token_wrong": lambda: METRICS_TOKEN[:-1] + "0",
        "user_token": lambda: server.tokens["alice"],
        "admin_key_without_admin_scope": lambda: make_key(server, "files:read"),
        "admin_token": lambda: server.tokens["bob"],
        "admin_key": lambda: make_key(server, "admin"),
        "metrics_token": lambda: METRICS_TOKEN,
    }[who]()

    reply = get(server, "/metrics", bearer)

    assert reply.status == status
    if status == 200:
        assert str(reply.header("Content-Type")).startswith("text/plain")
        assert b"strongroom_requests_total" in reply.body
    else:
        assert problem(reply)["code"] in ("unauthorized", "invalid_token",
                                          "insufficient_scope")


def test_the_metrics_token_opens_nothing_but_metrics(server: LiveServer) -> None:
    reply = get(server, f"{API}/spaces", METRICS_TOKEN)

    assert reply.status == 401


def test_metrics_stay_out_of_the_openapi_document_and_probes_are_in_it(
    server: LiveServer,
) -> None:
    paths = get(server, "/openapi.json").json()["paths"]  # type: ignore[index]

    assert "/metrics" not in paths
    assert paths["/healthz"]["get"]["summary"]
    assert paths["/readyz"]["get"]["summary"]


def test_a_scrape_is_logged_at_debug_and_a_refused_one_at_info(
    server: LiveServer,
) -> None:
    start = len(server.log_text())

    scrape(server)
    refused = get(server, "/metrics")
    get(server, "/healthz")
    # Lines are written after their answers: wait for the last one.
    wait_until(lambda: "route=/healthz" in server.log_text()[start:], "the last line")
    log = server.log_text()[start:]

    assert refused.status == 401
    metrics_lines = [line for line in log.splitlines() if "route=/metrics" in line]
    assert len(metrics_lines) == 1 and "status=401" in metrics_lines[0]


# /metrics: what it counts


@dataclass
class Sequence:
    """A known run of requests between two scrapes, and what it sent and got."""

    before: Scrape
    after: Scrape
    replies: dict[str, Reply]
    sent: dict[str, bytes]
    secrets: list[str]


@pytest.fixture(scope="module")
def sequence(server: LiveServer) -> Sequence:
    """Between two scrapes: a failed and a good login, an upload, a fast-lane
    download, a refused traversal, a path that is not UTF-8, a forged token and
    an unknown API key."""
    server.forget_failed_logins()
    file_name = f"secret-report-{secrets.token_hex(4)}.txt"
    wrong = f"wrong-{secrets.token_hex(8)}"
    unknown_key = "srk_" + "A" * 22 + "_" + "B" * 43
    sent = {
        "failed_login": f"username=alice&password={quote(wrong)}".encode(),
        "login": f"username=alice&password={quote(ALICE_PASSWORD)}".encode(),
        "upload": secrets.token_bytes(3000),
    }

    before = scrape(server)
    replies = {"failed_login": login(server, sent["failed_login"])}
    replies["login"] = login(server, sent["login"])
    token = replies["login"].json()["access_token"]  # type: ignore[index]
    auth = {"Authorization": f"Bearer {token}"}
    replies["upload"] = server.request(
        "PUT", files_url("home", f"docs/{file_name}"), body=sent["upload"],
        headers=auth, token=None,
    )
    replies["download"] = server.request(
        "GET", files_url("home", f"docs/{file_name}"), headers=auth, token=None
    )
    replies["traversal"] = server.request(
        "GET", files_url("lab", "../outside/passwd"), headers=auth, token=None
    )
    replies["not_utf8"] = server.request(
        "GET", files_url("home", "docs/%ff.txt"), headers=auth, token=None
    )
    replies["forged"] = get(server, f"{API}/spaces", token[:-4] + "AAAA")
    replies["unknown_key"] = get(server, f"{API}/spaces", unknown_key)
    after = scrape(server)

    statuses = {name: reply.status for name, reply in replies.items()}
    assert statuses == {
        "failed_login": 401, "login": 200, "upload": 201, "download": 200,
        "traversal": 403, "not_utf8": 400, "forged": 401, "unknown_key": 401,
    }, statuses
    assert replies["download"].body == sent["upload"]
    return Sequence(before, after, replies, sent,
                    [file_name, wrong, ALICE_PASSWORD, token, unknown_key])


UPLOAD_ROUTE = "/api/v1/spaces/{space}/files/{path}"


def test_requests_are_counted_by_method_route_template_and_status(
    sequence: Sequence,
) -> None:
    moved = sequence.before.delta(sequence.after, "strongroom_requests_total")

    assert moved == {
        ("GET", "/metrics", "200"): 1,  # the first scrape
        ("POST", "/api/v1/token", "401"): 1,
        ("POST", "/api/v1/token", "200"): 1,
        ("PUT", UPLOAD_ROUTE, "201"): 1,
        ("GET", "fastlane_download", "200"): 1,
        ("GET", "fastlane_download", "403"): 1,
        ("GET", "other", "400"): 1,  # refused before any route saw it
        ("GET", "/api/v1/spaces", "401"): 2,
    }


def test_durations_are_counted_once_per_request_by_route(
    sequence: Sequence,
) -> None:
    counts = sequence.before.delta(
        sequence.after, "strongroom_request_duration_seconds_count"
    )
    slowest = sequence.before.delta(sequence.after,
                                    "strongroom_request_duration_seconds_bucket")

    assert counts == {
        ("/metrics",): 1, ("/api/v1/token",): 2, (UPLOAD_ROUTE,): 1,
        ("fastlane_download",): 2, ("other",): 1, ("/api/v1/spaces",): 2,
    }
    assert {key: value for key, value in slowest.items() if key[0] == "+Inf"} == {
        ("+Inf", route): count for (route,), count in counts.items()
    }


def test_body_bytes_are_counted_exactly_in_both_directions(
    sequence: Sequence,
) -> None:
    got = {name: len(reply.body) for name, reply in sequence.replies.items()}
    sent = {name: len(body) for name, body in sequence.sent.items()}

    bytes_in = sequence.before.delta(sequence.after, "strongroom_request_bytes_total")
    bytes_out = sequence.before.delta(sequence.after,
                                      "strongroom_response_bytes_total")

    assert bytes_in == {
        ("/api/v1/token",): sent["failed_login"] + sent["login"],
        (UPLOAD_ROUTE,): sent["upload"],
    }
    assert bytes_out == {
        ("/metrics",): sequence.before.body_bytes,
        ("/api/v1/token",): got["failed_login"] + got["login"],
        (UPLOAD_ROUTE,): got["upload"],
        ("fastlane_download",): got["download"] + got["traversal"],
        ("other",): got["not_utf8"],
        ("/api/v1/spaces",): got["forged"] + got["unknown_key"],
    }


def test_every_problem_answer_is_counted_by_its_code(sequence: Sequence) -> None:
    moved = sequence.before.delta(sequence.after, "strongroom_refusals_total")

    assert problem(sequence.replies["traversal"])["code"] == "path_escape"
    assert problem(sequence.replies["not_utf8"])["code"] == "invalid_path"
    assert moved == {
        ("unauthorized",): 1, ("path_escape",): 1, ("invalid_path",): 1,
        ("invalid_token",): 2,
    }


def test_failed_logins_and_refused_tokens_are_counted_by_reason(
    sequence: Sequence,
) -> None:
    moved = sequence.before.delta(sequence.after, "strongroom_token_failures_total")

    assert moved == {
        ("bad_credentials",): 1, ("access_token_invalid",): 1,
        ("api_key_unknown",): 1,
    }


def test_no_label_holds_a_path_a_file_name_or_a_secret(
    server: LiveServer, sequence: Sequence
) -> None:
    templates = set(get(server, "/openapi.json").json()["paths"])  # type: ignore[arg-type]
    routes = {
        dict(labels)["route"] for _, labels in sequence.after.samples
        if "route" in dict(labels)
    }

    assert routes <= templates | FIXED_ROUTES, routes - templates - FIXED_ROUTES
    for value in sequence.after.label_values():
        for part in ("..", "docs/", "outside", "%ff", "\ufffd"):
            assert part not in value
        for secret in sequence.secrets:
            assert secret not in value


def test_an_unknown_method_is_counted_as_other(server: LiveServer) -> None:
    before = scrape(server)

    # uvicorn's parser knows PROPFIND (WebDAV); an unknown word never
    # reaches the app.
    reply = server.request("PROPFIND", f"/{secrets.token_hex(4)}", token=None)
    after = scrape(server)

    moved = before.delta(after, "strongroom_requests_total")
    assert moved == {
        ("GET", "/metrics", "200"): 1, ("other", "other", str(reply.status)): 1
    }


# The setting


def test_metrics_token_is_read_from_the_environment_and_kept_out_of_repr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STRONGROOM_METRICS_TOKEN", METRICS_TOKEN)

    settings = load_settings(None)

    assert settings.metrics_token == METRICS_TOKEN
    assert METRICS_TOKEN not in repr(settings)


@pytest.mark.parametrize("value", ["short-secret", "with space" + "x" * 20])
def test_a_weak_metrics_token_stops_start_up_without_being_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STRONGROOM_METRICS_TOKEN", value)

    with pytest.raises(ConfigError) as caught:
        load_settings(None)

    assert "metrics_token" in str(caught.value)
    assert value not in str(caught.value)


def test_readyz_runs_each_check_at_most_once_a_second() -> None:
    """Anonymous probes cannot make the server ask its database or store more."""
    calls: list[float] = []
    probe = ReadinessProbe({"blobs": lambda: calls.append(time.monotonic())}, 1.0,
                           fresh_seconds=0.5)

    async def many() -> list[dict[str, str]]:
        answers = [await probe.run() for _ in range(20)]
        await asyncio.sleep(0.6)
        answers.append(await probe.run())
        return answers

    answers = asyncio.run(many())

    assert answers == [{"blobs": "ok"}] * 21
    assert len(calls) == 2
