"""Part 5: archive import against Python's `tarfile` extracting the same archive.

Two plain tars are generated once per run (issue 4): "many", N small members
(10,000 in the full profile) in folders of 100, 1-4 KiB each; and "large", one
member of SIZE bytes (1 GiB in the full profile). Each is then unpacked by:

- `tarfile`: `tarfile.open(path).extractall(dest, filter="data")`, the peer;
- `tarfile, then sync`: the same followed by `sync(2)`, the durable figure:
  Strongroom fsyncs every file it stores before it answers, tarfile does not;
- `storage, directory` and `storage, home`: `import_archive` called directly on a
  directory space and on a home (SQLite and local blobs), which separates the
  unpacking from the HTTP upload;
- `HTTP, directory` and `HTTP, home`: `POST /api/v1/spaces/{space}/import` to a
  real `strongroom serve` on 127.0.0.1, as a user would: curl uploads the file,
  the server spools it, unpacks it and publishes it before answering.

Every run of every case is a fresh process with fresh storage: the peer and the
storage-layer cases run in a worker subprocess (`python -m bench.imports worker`)
that times only the unpacking and reports its own peak resident set (VmHWM); each
HTTP run starts its own server, logs in, rewinds the server's VmHWM to its
current resident set (/proc/PID/clear_refs) and reads it again after the answer,
so the peak covers exactly one import; the peak of start-up and login (argon2id
takes 64 MiB) is recorded beside it. A worker's peak covers its start-up and
one import. `sync(2)` runs before every case
so that no case pays for another's writeback; the archive itself is in the page
cache for all of them alike. A round runs every case once, starting one further
along each time; figures are medians over rounds, and "vs tarfile" is computed per
round against that round's tarfile time. MB are decimal (10^6 bytes).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench._report import Target, format_bytes, format_table, median
from bench._servers import LOOPBACK, ServerProcess, free_port
from bench._stage import fetch_token

__all__ = ["ImportsPlan", "run_imports"]

# Issue 4: the import at least as fast as tarfile with the data filter, and its
# peak memory under 150 MB (decimal megabytes, the stricter reading).
MIN_SPEED_VS_TARFILE = 1.0
MAX_PEAK_MEMORY_BYTES = 150 * 1000**2
MEMBERS_PER_FOLDER = 100
MEMBER_SIZES_BYTES = (1024, 2048, 3072, 4096)
# One unpacking slower than this (2 MB/s, or 200 members/s) means something is
# wrong; stop waiting for it.
SLOWEST_BYTES_PER_SECOND = 2 * 1000**2
SLOWEST_MEMBERS_PER_SECOND = 200
MIN_TIMEOUT_SECONDS = 120.0
BENCH_USER = "bench"
# An archive's unpacked trees are kept until its last round while all of them
# together stay under this (see `_Trash`): the 10,000-member tar, not the 1 GiB one.
KEEP_TREES_BYTES = 2 * 1024**3
_PATTERN_BYTES = 1 << 20

# The cases in table order; the first is the peer every ratio is taken against.
PEER = "tarfile"
WORKER_CASES = {
    "tarfile": "tarfile",
    "tarfile, then sync": "tarfile-sync",
    "storage, directory": "directory",
    "storage, home": "home",
}
HTTP_CASES = {"HTTP, directory": "drop", "HTTP, home": "home"}


@dataclass(frozen=True)
class ImportsPlan:
    """How many members the many-member tar has, how big the large one is, rounds."""

    members: int
    large_size_bytes: int
    rounds: int
    # Where archives are made and unpacked; None: a temporary folder.
    work_dir: Path | None = None


def run_imports(plan: ImportsPlan) -> dict[str, object]:
    """Generate both archives, run every case, print the tables and the targets."""
    with tempfile.TemporaryDirectory(prefix="sr-bench-import-",
                                     dir=plan.work_dir) as tmp:
        work = Path(tmp)
        (work / "logs").mkdir()
        archives = [_make_many(work, plan.members),
                    _make_large(work, plan.large_size_bytes)]
        tables = {a.name: _measure(a, plan.rounds, work) for a in archives}
    targets = [t for a in archives for t in _targets(a, tables[a.name])]

    _print(archives, tables, targets, plan)
    return {
        "rounds": plan.rounds,
        "archives": [
            {**a.as_dict(), "cases": [row.as_dict(a) for row in tables[a.name]]}
            for a in archives
        ],
        "targets": [t.as_dict() for t in targets],
    }


@dataclass(frozen=True)
class _Archive:
    name: str
    host_path: Path
    members: int
    member_bytes: int
    archive_bytes: int

    @property
    def timeout(self) -> float:
        return max(MIN_TIMEOUT_SECONDS,
                   self.member_bytes / SLOWEST_BYTES_PER_SECOND,
                   self.members / SLOWEST_MEMBERS_PER_SECOND)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "members": self.members,
                "member_bytes": self.member_bytes,
                "archive_bytes": self.archive_bytes}


@dataclass(frozen=True)
class _Sample:
    seconds: float
    peak: int
    rss_before: int
    cpu_seconds: float | None = None
    # An HTTP server's peak before the import: start-up and the login, whose
    # argon2id hash alone takes 64 MiB. The import's own peak is `peak`.
    startup_peak: int | None = None


@dataclass(frozen=True)
class _Row:
    case: str
    samples: list[_Sample]
    vs_tarfile: list[float]

    def seconds(self) -> float:
        return median([s.seconds for s in self.samples])

    def peak(self) -> int:
        return max(s.peak for s in self.samples)

    def as_dict(self, archive: _Archive) -> dict[str, object]:
        seconds = self.seconds()
        cpu = [s.cpu_seconds for s in self.samples if s.cpu_seconds is not None]
        return {
            "case": self.case,
            "seconds_median": round(seconds, 3),
            "seconds_rounds": [round(s.seconds, 3) for s in self.samples],
            "members_per_second": round(archive.members / seconds),
            "mb_per_second": round(archive.member_bytes / seconds / 1e6, 1),
            "vs_tarfile_median": round(median(self.vs_tarfile), 3),
            "peak_memory_bytes_max": self.peak(),
            "rss_before_bytes_median": round(
                median([s.rss_before for s in self.samples])),
            "server_cpu_seconds_median": round(median(cpu), 3) if cpu else None,
            "server_startup_and_login_peak_bytes_max": max(
                (s.startup_peak for s in self.samples if s.startup_peak), default=None),
        }


class _Trash:
    """The trees of finished runs: deleted at once, or all after the last round.

    Deleting many files on a disk mounted with online discard (this machine's
    root is) slows the file creation that follows for minutes: 10,000 files
    made in 0.3 s with nothing deleted before, and in 3.7-9 s right after a
    delete of as many (measured 2026-12-05). A case that ran after a deletion
    would then pay for the case before it, so the small trees are kept until
    every round is over, when that costs at most `KEEP_TREES_BYTES` of disk.
    """

    def __init__(self, keep: bool) -> None:
        self._keep = keep
        self._kept: list[Path] = []

    def throw(self, tree: Path) -> None:
        if self._keep:
            self._kept.append(tree)
        else:
            shutil.rmtree(tree, ignore_errors=True)

    def empty(self) -> None:
        for tree in self._kept:
            shutil.rmtree(tree, ignore_errors=True)
        self._kept.clear()


def _measure(archive: _Archive, rounds: int, work: Path) -> list[_Row]:
    cases = len(WORKER_CASES) + len(HTTP_CASES)
    trash = _Trash(keep=archive.member_bytes * cases * rounds <= KEEP_TREES_BYTES)
    runners: dict[str, Callable[[], _Sample]] = {
        case: _worker_runner(kind, archive, work, trash)
        for case, kind in WORKER_CASES.items()
    }
    runners |= {case: _http_runner(space, archive, work, trash)
                for case, space in HTTP_CASES.items()}
    names = list(runners)
    samples: dict[str, list[_Sample]] = {name: [] for name in names}
    try:
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                print(f"  {archive.name}: round {round_index + 1}/{rounds}, {name}",
                      flush=True)
                os.sync()
                samples[name].append(runners[name]())
    finally:
        trash.empty()
    peer = [s.seconds for s in samples[PEER]]
    return [
        _Row(name, runs, [p / s.seconds for p, s in zip(peer, runs, strict=True)])
        for name, runs in samples.items()
    ]


# The archives


def _make_many(work: Path, members: int) -> _Archive:
    host_path = work / "many.tar"
    pattern = os.urandom(_PATTERN_BYTES)
    total = 0
    with tarfile.open(host_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(members):
            size = MEMBER_SIZES_BYTES[n % len(MEMBER_SIZES_BYTES)]
            info = tarfile.TarInfo(f"d{n // MEMBERS_PER_FOLDER:04d}/f{n:05d}.bin")
            info.size = size
            start = (n * 4099) % (_PATTERN_BYTES - size)
            tar.addfile(info, io.BytesIO(pattern[start:start + size]))
            total += size
    return _Archive("many", host_path, members, total, host_path.stat().st_size)


def _make_large(work: Path, size: int) -> _Archive:
    host_path = work / "large.tar"
    with tarfile.open(host_path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("large.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Pattern(size), _PATTERN_BYTES))
    return _Archive("large", host_path, 1, size, host_path.stat().st_size)


class _Pattern(io.RawIOBase):
    """`size` bytes of a repeated random 1 MiB block, without holding them."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._block = os.urandom(_PATTERN_BYTES)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._left, len(self._block))
        buffer[:count] = self._block[:count]
        self._left -= count
        return count


# The worker subprocess: the peer, and the storage layer called directly


def _worker_runner(
    kind: str, archive: _Archive, work: Path, trash: _Trash
) -> Callable[[], _Sample]:
    def run() -> _Sample:
        dest = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=work))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bench.imports", "worker", kind,
                 str(archive.host_path), str(dest)],
                capture_output=True, text=True, timeout=archive.timeout,
                cwd=Path(__file__).resolve().parent.parent, check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{kind} worker failed:\n{done.stderr[-3000:]}")
            answer = json.loads(done.stdout)
            _check_answer(kind, answer, archive, dest)
        finally:
            trash.throw(dest)
        return _Sample(answer["seconds"], answer["peak_bytes"],
                       answer["rss_before_bytes"])

    return run


def _check_answer(
    kind: str, answer: dict[str, object], archive: _Archive, dest: Path
) -> None:
    if kind.startswith("tarfile"):
        _check_tree(kind, dest, archive)
        return
    if answer["outcome"] != "imported" or answer["imported"] != archive.members:
        raise RuntimeError(f"{kind} import went wrong: {answer}")
    if kind == "directory":
        _check_tree(kind, dest / "space", archive)


def _check_tree(kind: str, top: Path, archive: _Archive) -> None:
    files = [Path(d, f) for d, _, names in os.walk(top) for f in names]
    stored = sum(p.stat().st_size for p in files)
    if len(files) != archive.members or stored != archive.member_bytes:
        raise RuntimeError(f"{kind} left {len(files)} files and {stored} bytes; "
                           f"expected {archive.members} and {archive.member_bytes}")


def _worker(kind: str, archive_path: Path, dest: Path) -> dict[str, object]:
    """Unpack once, timing only the unpacking; called in a fresh process."""
    unpack = _peer_unpack if kind.startswith("tarfile") else _strongroom_unpack(kind)
    rss_before = _status_bytes("VmRSS")

    started = time.perf_counter()
    answer = unpack(archive_path, dest)
    if kind == "tarfile-sync":
        os.sync()
    seconds = time.perf_counter() - started

    return {**answer, "seconds": seconds, "rss_before_bytes": rss_before,
            "peak_bytes": _status_bytes("VmHWM")}


def _peer_unpack(archive_path: Path, dest: Path) -> dict[str, object]:
    with tarfile.open(archive_path) as tar:
        tar.extractall(dest, filter="data")
    return {}


def _strongroom_unpack(kind: str) -> Callable[[Path, Path], dict[str, object]]:
    # Strongroom is imported here, not at the top, so that the peer's worker does
    # not carry it in its resident set.
    from strongroom.confine import Root
    from strongroom.storage import open_metadata_store
    from strongroom.storage.blobs import LocalBlobStore
    from strongroom.storage.home import HomeSpace
    from strongroom.storage.imports import import_archive
    from strongroom.storage.spaces import DirectorySpace, Space

    def unpack(archive_path: Path, dest: Path) -> dict[str, object]:
        with contextlib.ExitStack() as stack:
            space: Space
            if kind == "directory":
                (dest / "space").mkdir()
                root = stack.enter_context(Root(dest / "space"))
                space = DirectorySpace("bench", root, writable=True)
            else:
                (dest / "blobs").mkdir()
                meta = open_metadata_store(f"sqlite:///{dest}/metadata.db")
                stack.callback(meta.close)
                user = meta.add_user(BENCH_USER, "unused")
                blobs = LocalBlobStore(stack.enter_context(Root(dest / "blobs")))
                space = HomeSpace(user.id, meta, blobs)
            archive = stack.enter_context(archive_path.open("rb"))
            size = archive_path.stat().st_size
            report = import_archive(space, archive, size, "")
        return {"outcome": report.outcome, "imported": report.count("imported")}

    return unpack


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


# The HTTP cases: a fresh server per run


def _http_runner(
    space: str, archive: _Archive, work: Path, trash: _Trash
) -> Callable[[], _Sample]:
    def run() -> _Sample:
        home = Path(tempfile.mkdtemp(prefix=f"http-{space}-", dir=work))
        try:
            with contextlib.ExitStack() as stack:
                server, token = _start_server(home, archive, work / "logs", stack)
                return _post(server, token, space, archive, home)
        finally:
            trash.throw(home)

    return run


def _start_server(
    home: Path, archive: _Archive, logs: Path, stack: contextlib.ExitStack
) -> tuple[ServerProcess, str]:
    (home / "drop").mkdir()
    config = home / "strongroom.toml"
    limit = 2 * archive.archive_bytes
    config.write_text("\n".join([
        f"data_dir = {json.dumps(str(home / 'data'))}",
        f"max_upload_bytes = {limit}",
        f'host = "{LOOPBACK}"',
        "",
        "[[spaces]]",
        'name = "drop"',
        f"path = {json.dumps(str(home / 'drop'))}",
        'mode = "rw"',
        'users = ["*"]',
        "",
    ]))
    password = secrets.token_urlsafe(18)
    strongroom = str(Path(sys.executable).parent / "strongroom")
    subprocess.run(
        [strongroom, "--config", str(config), "user", "add", BENCH_USER,
         "--password-stdin"],
        input=password + "\n", capture_output=True, text=True, timeout=60,
        check=True,
    )
    port = free_port()
    server = ServerProcess(
        "strongroom-import",
        [strongroom, "--config", str(config), "serve", "--port", str(port)],
        port, logs / "strongroom-import.log",
    )
    stack.callback(server.stop)
    server.start("/healthz")
    return server, fetch_token(server.base_url, BENCH_USER, password)


def _post(
    server: ServerProcess, token: str, space: str, archive: _Archive, home: Path
) -> _Sample:
    url = f"{server.base_url}/api/v1/spaces/{space}/import"
    startup_peak = server.peak_memory_bytes()
    # The peak is rewound to the current resident set, so that it covers the
    # import alone; the start-up's and the login's is kept beside it.
    if not server.reset_peak_memory():
        raise RuntimeError("cannot rewind the server's peak memory (clear_refs)")
    rss_before = server.rss_bytes()
    cpu_before = server.cpu_seconds()

    status, seconds, body = _upload(url, token, archive, home / "answer.json")

    report = json.loads(body) if body else {}
    if status != 200 or report.get("imported") != archive.members:
        raise RuntimeError(f"HTTP import into {space} went wrong: status {status}, "
                           f"{str(report)[:300]}")
    if space == "drop":
        _check_tree("HTTP, directory", home / "drop", archive)
    return _Sample(seconds, server.peak_memory_bytes(), rss_before,
                   server.cpu_seconds() - cpu_before, startup_peak)


def _upload(
    url: str, token: str, archive: _Archive, answer: Path
) -> tuple[int, float, bytes]:
    """POST the archive as the raw body; return status, seconds and the answer."""
    if urllib.parse.urlsplit(url).hostname != LOOPBACK:
        raise ValueError(f"imports only ever go to {LOOPBACK}")
    if shutil.which("curl") is None:
        return _upload_python(url, token, archive)
    argv = [
        "curl", "--silent", "--show-error", "--noproxy", "*", "-X", "POST",
        "--max-time", str(round(archive.timeout)), "--output", str(answer),
        "--write-out", "%{http_code} %{time_total}",
        "--header", f"Authorization: Bearer {token}",
        # No "Expect: 100-continue" round trip; the body goes out at once.
        "--header", "Expect:", "--upload-file", str(archive.host_path), url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True,
                          timeout=archive.timeout + 10, check=True)
    status, seconds = done.stdout.split()
    return int(status), float(seconds), answer.read_bytes()


def _upload_python(url: str, token: str, archive: _Archive) -> tuple[int, float, bytes]:
    import http.client

    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(
        LOOPBACK, parts.port, timeout=archive.timeout, blocksize=_PATTERN_BYTES
    )
    headers = {"Authorization": f"Bearer {token}",
               "Content-Length": str(archive.archive_bytes)}
    started = time.perf_counter()
    try:
        with archive.host_path.open("rb") as body:
            connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    return response.status, time.perf_counter() - started, data


# Targets and the printed tables


def _targets(archive: _Archive, rows: list[_Row]) -> Iterator[Target]:
    by_case = {row.case: row for row in rows}
    durable = by_case["tarfile, then sync"].seconds()
    for case in (*HTTP_CASES, "storage, directory", "storage, home"):
        row = by_case[case]
        speed = median(row.vs_tarfile)
        if case in HTTP_CASES:
            yield Target(
                name=f"{archive.name} tar, {case}: speed vs tarfile",
                goal=f">= {MIN_SPEED_VS_TARFILE:.1f}x",
                measured=f"{speed:.2f}x ({durable / row.seconds():.2f}x vs "
                         "tarfile, then sync)",
                met=speed >= MIN_SPEED_VS_TARFILE,
            )
        yield Target(
            name=f"{archive.name} tar, {case}: peak memory",
            goal=f"< {MAX_PEAK_MEMORY_BYTES / 1e6:.0f} MB",
            measured=f"{row.peak() / 1e6:.0f} MB",
            met=row.peak() < MAX_PEAK_MEMORY_BYTES,
        )


def _print(
    archives: list[_Archive],
    tables: dict[str, list[_Row]],
    targets: list[Target],
    plan: ImportsPlan,
) -> None:
    for archive in archives:
        print(f"\n== Import: {archive.name} tar, {archive.members:,} members, "
              f"{format_bytes(archive.member_bytes)}, {plan.rounds} rounds ==")
        table = [
            [
                row.case,
                f"{row.seconds():.2f}",
                f"{archive.members / row.seconds():,.0f}",
                f"{archive.member_bytes / row.seconds() / 1e6:,.1f}",
                f"{median(row.vs_tarfile):.2f}x",
                f"{median([s.rss_before for s in row.samples]) / 1e6:.0f} MB",
                f"{row.peak() / 1e6:.0f} MB",
            ]
            for row in tables[archive.name]
        ]
        headers = ["case", "s median", "members/s", "MB/s", "vs tarfile",
                   "RSS before", "peak RSS"]
        print(format_table(headers, table))
    for target in targets:
        print(target.line())


def _main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "worker":
        print("usage: python -m bench.imports worker KIND ARCHIVE DEST",
              file=sys.stderr)
        return 2
    _, kind, archive_path, dest = argv
    print(json.dumps(_worker(kind, Path(archive_path), Path(dest))))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
