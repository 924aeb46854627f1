"""Load: 64 clients run a realistic mix against one real server (issue 7).

Design note. The question is whether the server stays correct and flat under a
steady crowd of ordinary users, not how fast it can go (bench/ measures that).
The obvious load test, many clients hammering one URL, cannot tell a right answer
from a wrong one. Here each client is a thread with one keep-alive connection
(http.client), its own login (so its own chain of refresh tokens) and its own
folder `load/cNN` in its user's home and in the `lab` directory space. Nobody
else touches those folders, so the client keeps an exact model of what they hold
and knows the one right status of every request it sends: 201 for a new name,
200 for a replacement, 204 for a delete, 404 only for a name it never wrote.
Shared reads go to a read-only set (`shared/` in lab and in `docs-ro`,
`shared-{user}/` in each home) written before the run and never changed, so
their bytes are known too. A wrong status, any 5xx, a broken connection or a
byte that differs is a fault; the client that meets one stops (its model can no
longer be trusted) and the fault is reported with what was sent.

Threads rather than asyncio: http.client spends well under a millisecond of CPU
on a request where the server spends several, so 64 threads stay ahead of one
server process on two cores. The run measures both processes' CPU to show it.

Memory: the server's resident set is read from /proc after a warm-up that runs
the same mix (so the worker threads, their malloc arenas and the connection
pool have grown; bounded caches go on filling for minutes, see
`WARMUP_SECONDS`) and again at the end; see `RSS_GROWTH_BOUND_MIB` for the
bound.

The run is bounded twice, by time (`pick(short=10, long=60)` seconds) and by a
request count, and happens once per module; the tests below judge its record.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from live_server import (
    ALICE_PASSWORD,
    API,
    BOB_PASSWORD,
    CONFIG,
    MAX_UPLOAD_BYTES,
    PROBLEM_JSON,
    SPACE_DIRS,
    LiveServer,
    Reply,
    run_server,
)

from proof_figures import pick, record

CLIENTS = 64
USERS = (("alice", ALICE_PASSWORD, "user"), ("bob", BOB_PASSWORD, "admin"))
# The warm-up runs the same mix before the memory baseline is taken. The
# server's RSS rises quickly at first and then levels off: bounded caches fill
# (each pooled SQLite connection's page cache as the database grows, the
# 4096-entry name cache of confine). Measured over 240 s on this machine: +8 MiB
# in the first 10 s, +6 MiB from 30 s to 90 s, +3 MiB from 60 s to 240 s.
WARMUP_SECONDS = pick(short=10.0, long=30.0)
RUN_SECONDS = pick(short=10.0, long=60.0)
# The count bound: far above what one server process answers in the time (a few
# hundred a second), so the clock ends the run, yet the loop is capped.
MAX_REQUESTS = pick(short=40_000, long=240_000)
# Growth of the server's RSS allowed from the end of the warm-up to the end of
# the run. Honest growth after the warm-up measured 3 to 7 MiB in short runs
# and 3.5 to 10 MiB in long ones on this machine (caches still filling, see
# above), so the bound leaves room of about two. A leak grows in step with the
# requests instead: at 350 to 480 requests a second, the long run (over 20,000
# requests) fails on a leak of 1 KiB a request (an injected 2 KiB leak gave
# +53 MiB), the short one (about 4,000) on 4 KiB.
RSS_GROWTH_BOUND_MIB = pick(short=16.0, long=20.0)
# Files a client keeps in each of its folders: enough that moves, deletes and
# replacements have targets, few enough that a listing stays one page.
MAX_OWNED_FILES = 8
SMALL_BYTES = (1, 16 * 1024)
MEDIUM_BYTES = (128 * 1024, 384 * 1024)
# Longest byte range asked for: ranges are for seeking, not whole files.
MAX_RANGE_BYTES = 64 * 1024
# A request slower than this is a fault, not a sample (the server stalled).
REQUEST_TIMEOUT_SECONDS = 30.0
# How long the clients may take to log in and set up, or to finish their last
# request after the clock has run out, before the run is declared hung.
PHASE_TIMEOUT_SECONDS = 120.0
RSS_SAMPLE_SECONDS = 0.1
# The shared read-only set: (name, size). Sizes cover one byte, a page, and a
# file near the upload limit.
SHARED_FILES = (
    ("one.bin", 1), ("page.txt", 4096), ("mid.bin", 65_537),
    ("big.bin", 900_000), ("odd.dat", 12_345),
)
# The mix, by weight: reads dominate, as they do for a file service.
MIX = (
    ("list", 14), ("download", 24), ("range", 14), ("upload_small", 10),
    ("upload_medium", 3), ("move", 7), ("delete", 7), ("share", 5),
    ("refresh", 3), ("missing", 2),
)
# What the mix sends, as timed: a share is created, then fetched through /s/.
OPERATIONS = (
    "list", "download", "range", "upload", "move", "delete", "share_create",
    "share_fetch", "refresh", "missing",
)
# The clients share one Python process and so one interpreter lock: near 100%
# of a core they, not the server, would set the pace. Measured: 16 to 21%.
CLIENT_CPU_BOUND_PERCENT = 60.0


@dataclass(frozen=True)
class Content:
    """A file's bytes, kept as the seed that makes them so memory stays small."""

    seed: int
    size: int

    def data(self) -> bytes:
        """Return the bytes (the same every time)."""
        return random.Random(self.seed).randbytes(self.size)


@dataclass(frozen=True)
class Readable:
    """A file a client may read, and what it must hold."""

    space: str
    rel_path: str
    content: Content


@dataclass
class Area:
    """One folder a client owns, and the model of what it holds."""

    space: str
    folder: str
    files: dict[str, Content] = field(default_factory=dict)

    def rel_path(self, name: str) -> str:
        """Return the space-relative path of `name` in this folder."""
        return f"{self.folder}/{name}"


@dataclass
class Tally:
    """What one client saw in one phase."""

    latencies: dict[str, list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )
    reconnects: int = 0

    @property
    def requests(self) -> int:
        """Return the number of answered requests."""
        return sum(len(times) for times in self.latencies.values())


@dataclass
class Fault:
    """A request whose answer was not the one expected."""

    kind: str
    detail: str


@dataclass
class LoadRun:
    """Everything the run measured, for the tests to judge."""

    seconds: float
    tally: Tally
    faults: list[Fault]
    rss_start_mib: float
    rss_end_mib: float
    rss_peak_mib: float
    rss_samples: list[tuple[float, float]]
    server_cpu_percent: float
    client_cpu_percent: float
    server_log: str

    def faults_of(self, kind: str) -> list[str]:
        """Return the details of the faults of one kind."""
        return [f.detail for f in self.faults if f.kind == kind]


@pytest.fixture(scope="module")
def load_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadRun]:
    """Start a server, run the mix once, record its figures, print a table."""
    parent = tmp_path_factory.mktemp("load")
    for name in (*SPACE_DIRS, "outside", "lab-backup"):
        (parent / name).mkdir()
    readable = _write_docs(parent / "docs-ro")
    config_text = CONFIG.format(data_dir=parent / "data")
    with run_server(parent, config_text, "openat2", USERS) as server:
        readable.update(_upload_shared(server))
        run = _run_clients(server, readable)
    _record_and_print(run)
    yield run


def test_every_answer_has_the_status_its_request_expects(load_run: LoadRun) -> None:
    assert load_run.faults_of("status") == []


def test_no_answer_is_a_server_error(load_run: LoadRun) -> None:
    assert load_run.faults_of("server") == []


def test_no_connection_breaks_or_stalls(load_run: LoadRun) -> None:
    assert load_run.faults_of("connection") == []


def test_every_download_returns_the_bytes_written(load_run: LoadRun) -> None:
    assert load_run.faults_of("bytes") == []


def test_each_folder_ends_holding_what_its_client_wrote(load_run: LoadRun) -> None:
    assert load_run.faults_of("final") == []


def test_no_client_crashed(load_run: LoadRun) -> None:
    """A client that crashed stopped checking; its faults would go unseen."""
    assert load_run.faults_of("harness") == []


def test_every_operation_of_the_mix_ran(load_run: LoadRun) -> None:
    """A mix that silently skipped an operation would prove nothing about it."""
    ran = {op for op, times in load_run.tally.latencies.items() if times}

    assert ran >= set(OPERATIONS)


def test_the_clients_are_not_the_bottleneck(load_run: LoadRun) -> None:
    assert load_run.client_cpu_percent < CLIENT_CPU_BOUND_PERCENT


def test_server_memory_stays_flat(load_run: LoadRun) -> None:
    growth = load_run.rss_end_mib - load_run.rss_start_mib

    assert growth <= RSS_GROWTH_BOUND_MIB, (
        f"RSS grew {growth:.1f} MiB ({load_run.rss_start_mib:.1f} -> "
        f"{load_run.rss_end_mib:.1f}) over {load_run.tally.requests} requests"
    )


def test_server_logs_no_error(load_run: LoadRun) -> None:
    bad = [line for line in load_run.server_log.splitlines()
           if " ERROR " in line or "Traceback" in line]

    assert bad == []


def test_percentile_takes_the_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]

    assert (_percentile(samples, 50), _percentile(samples, 99)) == (50.0, 99.0)


class _Stop(Exception):
    """Raised inside a client when it met a fault and must stop."""


class LoadClient:
    """One user session on one keep-alive connection, with the model of its folders.

    Not thread-safe: each client belongs to one thread.
    """

    def __init__(self, number: int, port: int, readable: list[Readable]) -> None:
        """Set up client `number`; nothing is sent until `set_up`."""
        self.number = number
        self.user, self.password, _ = USERS[number % len(USERS)]
        self.rng = random.Random(number)
        self.conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS
        )
        folder = f"load/c{number:02d}"
        self.areas = (Area("home", folder), Area("lab", folder))
        self.shared = [r for r in readable if _may_read(self.user, r)]
        self.access_token = ""
        self.refresh_token = ""
        self.tally = Tally()
        self.faults: list[Fault] = []
        self.sent = 0
        self.serial = 0
        self.stopped = False
        self._steps: dict[str, Callable[[], None]] = {
            "list": self._list, "download": self._download, "range": self._range,
            "upload_small": lambda: self._upload(SMALL_BYTES),
            "upload_medium": lambda: self._upload(MEDIUM_BYTES),
            "move": self._move, "delete": self._delete, "share": self._share,
            "refresh": self._refresh, "missing": self._missing,
        }

    def set_up(self) -> None:
        """Log in, make both folders and put two files in each."""
        self._guarded(self._set_up)

    def run(self, deadline: float, max_requests: int) -> None:
        """Send the mix until `deadline` or `max_requests`, or until a fault.

        Each phase starts on a fresh connection: while the client waited for the
        others, the server may have closed the idle one (uvicorn's keep-alive
        timeout is 5 s), and a request sent as it closes is lost by the client,
        as with any HTTP/1.1 client that does not retry.
        """
        self.conn.close()
        self.sent = 0
        names = [name for name, _ in MIX]
        weights = [weight for _, weight in MIX]
        limit = self.tally.requests + max_requests
        while (not self.stopped and time.monotonic() < deadline
               and self.tally.requests < limit):
            step = self.rng.choices(names, weights)[0]
            self._guarded(self._steps[step])

    def check_final(self) -> None:
        """List both folders and compare them with the model."""
        self._guarded(self._check_final)

    def _guarded(self, action: Callable[[], None]) -> None:
        if self.stopped:
            return
        try:
            action()
        except _Stop:
            self.stopped = True
            self.conn.close()
        except (KeyError, TypeError, ValueError) as exc:
            # An answer of the right status whose body is not what the route
            # documents (no JSON, a missing field).
            self.faults.append(Fault("status", f"client {self.number}: {exc!r}"))
            self.stopped = True
            self.conn.close()
        except Exception as exc:  # a fault of this harness, reported, never lost
            self.faults.append(Fault("harness", f"client {self.number}: {exc!r}"))
            self.stopped = True
            self.conn.close()

    def _set_up(self) -> None:
        form = f"username={self.user}&password={quote(self.password)}"
        reply = self._form("login", f"{API}/token", form)
        self._take_tokens(reply)
        for area in self.areas:
            reply = self._call("mkdir", "POST",
                               f"{API}/spaces/{area.space}/dirs/{area.folder}")
            self._expect(reply, 201, "mkdir", area.folder)
            for _ in range(2):
                self._upload_to(area, self._new_name(), SMALL_BYTES)

    def _list(self) -> None:
        if self.rng.random() < 0.25:
            space, folder = self.rng.choice(
                [(r.space, r.rel_path.rsplit("/", 1)[0]) for r in self.shared]
            )
            want = {r.rel_path.rsplit("/", 1)[1]: r.content.size for r in self.shared
                    if r.space == space and r.rel_path.startswith(folder + "/")}
        else:
            area = self._area()
            space, folder = area.space, area.folder
            want = {name: c.size for name, c in area.files.items()}
        reply = self._call("list", "GET", f"{API}/spaces/{space}/list/{folder}")
        self._expect(reply, 200, "list", folder)
        listed = {e["name"]: e["size"] for e in _json(reply)["entries"]}
        if listed != want:
            self._fault("status", f"list {space}:{folder} gave {listed}, want {want}")

    def _download(self) -> None:
        target = self._readable()
        reply = self._call("download", "GET", _files_url(target))
        self._expect(reply, 200, "download", target.rel_path)
        self._expect_bytes(reply.body, target.content.data(), target)

    def _range(self) -> None:
        target = self._readable()
        size = target.content.size
        first = self.rng.randrange(size)
        last = min(size - 1, first + self.rng.randrange(MAX_RANGE_BYTES))
        reply = self._call("range", "GET", _files_url(target),
                           headers={"Range": f"bytes={first}-{last}"})
        self._expect(reply, 206, "range", target.rel_path)
        if reply.header("content-range") != f"bytes {first}-{last}/{size}":
            self._fault("status", f"range {first}-{last} of {target.rel_path}: "
                                  f"Content-Range {reply.header('content-range')}")
        self._expect_bytes(reply.body, target.content.data()[first:last + 1], target)

    def _upload(self, sizes: tuple[int, int]) -> None:
        area = self._area()
        fresh = not area.files or self.rng.random() < 0.7
        if fresh and len(area.files) < MAX_OWNED_FILES:
            name = self._new_name()
        else:
            name = self.rng.choice(sorted(area.files))
        self._upload_to(area, name, sizes)

    def _upload_to(self, area: Area, name: str, sizes: tuple[int, int]) -> None:
        content = Content(self.rng.getrandbits(64), self.rng.randint(*sizes))
        expected = 200 if name in area.files else 201
        url = f"{API}/spaces/{area.space}/files/{area.rel_path(name)}"
        reply = self._call("upload", "PUT", url, body=content.data())
        self._expect(reply, expected, "upload", area.rel_path(name))
        if _json(reply)["size"] != content.size:
            self._fault("status", f"upload {name}: size {_json(reply)['size']}")
        area.files[name] = content

    def _move(self) -> None:
        area, name = self._owned()
        new_name = self._new_name()
        body = {"from": area.rel_path(name), "to": area.rel_path(new_name)}
        reply = self._call("move", "POST", f"{API}/spaces/{area.space}/move",
                           body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
        self._expect(reply, 200, "move", area.rel_path(name))
        area.files[new_name] = area.files.pop(name)

    def _delete(self) -> None:
        area, name = self._owned()
        url = f"{API}/spaces/{area.space}/files/{area.rel_path(name)}"
        reply = self._call("delete", "DELETE", url)
        self._expect(reply, 204, "delete", area.rel_path(name))
        del area.files[name]

    def _share(self) -> None:
        target = self._readable()
        body = json.dumps({"path": target.rel_path}).encode()
        reply = self._call("share_create", "POST",
                           f"{API}/spaces/{target.space}/shares", body=body,
                           headers={"Content-Type": "application/json"})
        self._expect(reply, 201, "share_create", target.rel_path)
        link = self._call("share_fetch", "GET", _json(reply)["url"], auth=False)
        self._expect(link, 200, "share_fetch", target.rel_path)
        self._expect_bytes(link.body, target.content.data(), target)

    def _refresh(self) -> None:
        form = f"grant_type=refresh_token&refresh_token={quote(self.refresh_token)}"
        self._take_tokens(self._form("refresh", f"{API}/token/refresh", form))

    def _missing(self) -> None:
        """Ask for a name this client never wrote: 404 is the one right answer."""
        area = self._area()
        url = f"{API}/spaces/{area.space}/files/{area.folder}/never-{self.serial}"
        self.serial += 1
        reply = self._call("missing", "GET", url)
        self._expect(reply, 404, "missing", url)
        if reply.header("content-type") != PROBLEM_JSON:
            kind = reply.header("content-type")
            self._fault("status", f"missing: content type {kind}")

    def _check_final(self) -> None:
        for area in self.areas:
            reply = self._call("final", "GET",
                               f"{API}/spaces/{area.space}/list/{area.folder}")
            self._expect(reply, 200, "final list", area.folder)
            listed = {e["name"]: e["size"] for e in _json(reply)["entries"]}
            want = {name: c.size for name, c in area.files.items()}
            if listed != want:
                self._fault("final", f"{area.space}:{area.folder} holds {listed}, "
                                     f"want {want}")

    def _form(self, op: str, url: str, form: str) -> Reply:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        reply = self._call(op, "POST", url, body=form.encode(), auth=False,
                           headers=headers)
        self._expect(reply, 200, op, url)
        return reply

    def _take_tokens(self, reply: Reply) -> None:
        tokens = _json(reply)
        self.access_token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]

    def _call(
        self, op: str, method: str, url: str, *, body: bytes | None = None,
        headers: dict[str, str] | None = None, auth: bool = True,
    ) -> Reply:
        """Send one request on the client's connection; time it, tally it."""
        pairs = dict(headers or {})
        if auth:
            pairs["Authorization"] = f"Bearer {self.access_token}"
        if self.conn.sock is None and self.sent:
            self.tally.reconnects += 1
        self.sent += 1
        started = time.perf_counter()
        try:
            self.conn.request(method, url, body=body, headers=pairs)
            answer = self.conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            self._fault("connection", f"{op} {method} {_shown(url)}: {exc!r}")
        elapsed = time.perf_counter() - started
        self.tally.latencies[op].append(elapsed)
        reply = Reply(answer.status, answer.headers, data, elapsed)
        if reply.status >= 500:
            self._fault("server", f"{op} {method} {_shown(url)}: {reply.status} "
                                  f"{data[:300]!r}")
        return reply

    def _expect(self, reply: Reply, status: int, op: str, what: str) -> None:
        if reply.status != status:
            self._fault("status", f"{op} {what}: {reply.status}, want {status}: "
                                  f"{reply.body[:300]!r}")

    def _expect_bytes(self, got: bytes, want: bytes, target: Readable) -> None:
        if got != want:
            self._fault("bytes", f"{target.space}:{target.rel_path}: {len(got)} "
                                 f"bytes differ from the {len(want)} written")

    def _fault(self, kind: str, detail: str) -> None:
        self.faults.append(Fault(kind, f"client {self.number}: {detail}"))
        raise _Stop

    def _area(self) -> Area:
        return self.rng.choice(self.areas)

    def _owned(self) -> tuple[Area, str]:
        """Pick a file this client owns, first writing one if it owns none."""
        area = self._area()
        if not area.files:
            self._upload_to(area, self._new_name(), SMALL_BYTES)
        return area, self.rng.choice(sorted(area.files))

    def _readable(self) -> Readable:
        if self.rng.random() < 0.5:
            return self.rng.choice(self.shared)
        area, name = self._owned()
        return Readable(area.space, area.rel_path(name), area.files[name])

    def _new_name(self) -> str:
        self.serial += 1
        return f"n{self.serial}.bin"


def _may_read(user: str, target: Readable) -> bool:
    # A home's shared set belongs to its owner; lab and docs-ro are everyone's.
    return target.space != "home" or target.rel_path.startswith(f"shared-{user}/")


def _shown(url: str) -> str:
    # A share link is a secret even in a test report: name the route only.
    return "/s/{token}" if url.startswith("/s/") else url


def _files_url(target: Readable) -> str:
    return f"{API}/spaces/{target.space}/files/{target.rel_path}"


def _json(reply: Reply) -> dict:
    body = reply.json()
    assert isinstance(body, dict)
    return body


def _write_docs(folder: Path) -> dict[tuple[str, str], Readable]:
    """Write the shared set into the read-only space's folder, on disk."""
    found = {}
    for index, (name, size) in enumerate(SHARED_FILES):
        content = Content(1_000 + index, size)
        (folder / "shared").mkdir(exist_ok=True)
        (folder / "shared" / name).write_bytes(content.data())
        found["docs-ro", f"shared/{name}"] = Readable(
            "docs-ro", f"shared/{name}", content
        )
    return found


def _upload_shared(server: LiveServer) -> dict[tuple[str, str], Readable]:
    """Upload the shared set to lab and to each user's home, through the API.

    A home's set lives in `shared-{user}/`, so that listing it names whose it is.
    """
    found = {}
    places = [("lab", "shared", "alice")] + [
        ("home", f"shared-{user}", user) for user, _, _ in USERS
    ]
    for place, (space, folder, user) in enumerate(places, start=1):
        for index, (name, size) in enumerate(SHARED_FILES):
            assert size <= MAX_UPLOAD_BYTES
            content = Content(1_000 * place + index, size)
            reply = server.put(space, f"{folder}/{name}", content.data(), token=user)
            assert reply.status == 201, reply.body
            found[space, f"{folder}/{name}"] = Readable(
                space, f"{folder}/{name}", content
            )
    return found


def _run_clients(server: LiveServer, readable: dict[tuple[str, str], Readable]
                 ) -> LoadRun:
    """Set up every client, warm up, then run the measured phase once.

    One function for the whole run because its steps share the barriers: every
    client logs in and sets up, all warm up together, the baseline RSS is read
    while they wait, and the measured phase starts for all at once.
    """
    assert server.pid is not None
    clients = [LoadClient(n, server.port, list(readable.values()))
               for n in range(CLIENTS)]
    deadlines = {"warmup": 0.0, "run": 0.0}
    # Each barrier action runs once all clients have arrived, before any goes on.
    warmed = threading.Barrier(CLIENTS + 1, timeout=PHASE_TIMEOUT_SECONDS)
    ready = threading.Barrier(
        CLIENTS, timeout=PHASE_TIMEOUT_SECONDS,
        action=lambda: deadlines.update(warmup=time.monotonic() + WARMUP_SECONDS),
    )
    go = threading.Barrier(
        CLIENTS + 1, timeout=PHASE_TIMEOUT_SECONDS,
        action=lambda: deadlines.update(run=time.monotonic() + RUN_SECONDS),
    )
    per_client = MAX_REQUESTS // CLIENTS

    def drive(client: LoadClient) -> None:
        client.set_up()
        ready.wait()
        client.run(deadlines["warmup"], per_client)
        warmed.wait()
        go.wait()
        client.tally = Tally()
        client.run(deadlines["run"], per_client)
        measured, client.tally = client.tally, Tally()
        client.check_final()
        client.tally = measured

    threads = [threading.Thread(target=drive, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    warmed.wait()
    rss_start = _rss_mib(server.pid)
    cpu_start = (_cpu_seconds(server.pid), time.process_time(), time.monotonic())
    go.wait()
    samples: list[tuple[float, float]] = []
    _watch_rss(server.pid, lambda: time.monotonic() >= deadlines["run"], samples)
    cpu_end = (_cpu_seconds(server.pid), time.process_time(), time.monotonic())
    _watch_rss(server.pid, lambda: not any(t.is_alive() for t in threads), samples)
    rss_end = _rss_mib(server.pid)
    wall = cpu_end[2] - cpu_start[2]
    return LoadRun(
        seconds=wall,
        tally=_merge([c.tally for c in clients]),
        faults=[fault for c in clients for fault in c.faults],
        rss_start_mib=rss_start,
        rss_end_mib=rss_end,
        rss_peak_mib=max([rss_end, *(rss for _, rss in samples)]),
        rss_samples=samples,
        server_cpu_percent=100 * (cpu_end[0] - cpu_start[0]) / wall,
        client_cpu_percent=100 * (cpu_end[1] - cpu_start[1]) / wall,
        server_log=server.log_text(),
    )


def _watch_rss(
    pid: int, done: Callable[[], bool], samples: list[tuple[float, float]]
) -> None:
    """Append (monotonic time, RSS in MiB) of the server to `samples` until `done()`."""
    deadline = time.monotonic() + RUN_SECONDS + PHASE_TIMEOUT_SECONDS
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("the clients did not finish: the run hung")
        samples.append((time.monotonic(), _rss_mib(pid)))
        time.sleep(RSS_SAMPLE_SECONDS)


def _merge(tallies: list[Tally]) -> Tally:
    merged = Tally()
    for tally in tallies:
        merged.reconnects += tally.reconnects
        for op, times in tally.latencies.items():
            merged.latencies[op].extend(times)
    return merged


def _rss_mib(pid: int) -> float:
    """Return the process's resident set (VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _cpu_seconds(pid: int) -> float:
    """Return the user and system CPU time the process has used so far."""
    # The command name (field 2) may hold spaces; the counters follow its ')'.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(samples: list[float], percent: float) -> float:
    """Return the nearest-rank percentile of sorted `samples`."""
    rank = max(1, -(-len(samples) * percent // 100))
    return samples[int(rank) - 1]


def _latency_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    return {
        "p50_ms": round(_percentile(ordered, 50) * 1e3, 1),
        "p99_ms": round(_percentile(ordered, 99) * 1e3, 1),
        "max_ms": round(ordered[-1] * 1e3, 1),
    }


def _record_and_print(run: LoadRun) -> None:
    everything = [t for times in run.tally.latencies.values() for t in times]
    overall = _latency_ms(everything)
    per_op = {op: {"count": len(times), **_latency_ms(times)}
              for op, times in sorted(run.tally.latencies.items())}
    record(
        "load", clients=CLIENTS, seconds=round(run.seconds, 1),
        requests=len(everything), errors=len(run.faults),
        server_errors=len(run.faults_of("server")),
        connection_errors=len(run.faults_of("connection")),
        requests_per_second=round(len(everything) / run.seconds, 1), **overall,
        rss_start_mib=round(run.rss_start_mib, 1),
        rss_end_mib=round(run.rss_end_mib, 1),
        rss_peak_mib=round(run.rss_peak_mib, 1),
        rss_bound_mib=RSS_GROWTH_BOUND_MIB,
        server_cpu_percent=round(run.server_cpu_percent),
        client_cpu_percent=round(run.client_cpu_percent),
        reconnects=run.tally.reconnects, operations=per_op,
    )
    print(f"\nload: {CLIENTS} clients, {run.seconds:.1f} s, {len(everything)} requests"
          f" ({len(everything) / run.seconds:.0f}/s), {len(run.faults)} faults")
    print(f"{'operation':<14}{'count':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for op, row in [*per_op.items(), ("all", {"count": len(everything), **overall})]:
        print(f"{op:<14}{row['count']:>8}{row['p50_ms']:>9}{row['p99_ms']:>9}"
              f"{row['max_ms']:>9}")
    print(f"server RSS {run.rss_start_mib:.1f} -> {run.rss_end_mib:.1f} MiB (peak "
          f"{run.rss_peak_mib:.1f}); CPU server {run.server_cpu_percent:.0f}%, "
          f"clients {run.client_cpu_percent:.0f}% of one core; "
          f"{run.tally.reconnects} reconnects")
    for fault in run.faults[:20]:
        print(f"fault {fault.kind}: {fault.detail}")
