"""Part 3: one large download and one large upload per peer, throughput and memory.

The file (1 GiB by default, `--large-size` to change) is generated once in the
shared tree from a random 1 MiB block; it sits in the page cache for every peer
alike. Downloads: Strongroom from a directory space and from the home space (the
blob store), `StaticFiles`, and nginx. Uploads: Strongroom's `PUT` to a writable
directory space and to the home space (which also records the sha256), and nginx's
WebDAV `PUT`. `StaticFiles` takes no uploads.

Memory is the server's peak resident set (VmHWM from /proc, the largest of its
processes), rewound to the current RSS through /proc/PID/clear_refs right before
each transfer so it covers that transfer alone. Before each upload `sync(2)` flushes
what earlier rounds left dirty, so no peer pays for another's writeback.

Strongroom answers a PUT only after fsync; nginx answers before its data reaches
the disk. The row "nginx, then fsync" adds the time of an fsync of nginx's file
taken right after its answer: the durable figure, shown beside the target's.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench._report import Target, format_bytes, format_table, median
from bench._servers import ServerProcess
from bench._stage import Stage
from bench._transfer import TransferResult, transfer

__all__ = ["LargePlan", "run_large"]

LARGE_REL_PATH = "big.bin"
# Issue #2, section 4: peak memory under 150 MB (decimal megabytes, the stricter
# reading) for the download and the upload; uploads at least 0.8x nginx's.
MAX_PEAK_MEMORY_BYTES = 150 * 1000**2
MIN_UPLOAD_RATIO_VS_NGINX = 0.8
# A transfer slower than this (5 MiB/s) means something is wrong; stop waiting.
SLOWEST_BYTES_PER_SECOND = 5 * 1024**2
MIN_TIMEOUT_SECONDS = 60.0
_PATTERN_BYTES = 1 << 20


@dataclass(frozen=True)
class LargePlan:
    """How big the file is and how many rounds to run."""

    size_bytes: int
    rounds: int


def run_large(stage: Stage, plan: LargePlan) -> dict[str, object]:
    """Run every download and upload case, print the tables and targets."""
    source, digest = _make_large_file(stage, plan.size_bytes)
    downloads, uploads = _cases(stage, plan.size_bytes, digest)
    # Seed the home space so that its download has something to fetch.
    _run_case(uploads["strongroom home"], plan, source, stage)
    servers = {id(c.server): c.server for c in [*downloads.values(), *uploads.values()]}
    memory_rewound = all(server.reset_peak_memory() for server in servers.values())

    samples = {
        "download": _measure(downloads, plan, None, stage),
        "upload": _measure(uploads, plan, source, stage),
    }
    summary = {
        kind: [_Row(name, plan.size_bytes, runs) for name, runs in per_case.items()]
        for kind, per_case in samples.items()
    }
    summary["upload"] += [
        _Row(f"{name}, then fsync", plan.size_bytes, _flushed(samples["upload"][name]))
        for name, case in uploads.items()
        if case.flush_path is not None
    ]
    targets = _targets(summary)

    _print(summary, targets, plan, memory_rewound)
    return {
        "size_bytes": plan.size_bytes,
        "rounds": plan.rounds,
        "peak_memory_covers": "each transfer" if memory_rewound else "server lifetime",
        "downloads": [row.as_dict() for row in summary["download"]],
        "uploads": [row.as_dict() for row in summary["upload"]],
        "targets": [t.as_dict() for t in targets],
    }


@dataclass(frozen=True)
class _Case:
    name: str
    server: ServerProcess
    url: str
    headers: dict[str, str]
    check: Callable[[TransferResult], str | None]
    # Where a peer that does not fsync leaves the file, to time an fsync after it.
    flush_path: Path | None = None


@dataclass(frozen=True)
class _Sample:
    seconds: float
    rss_before: int
    peak: int
    cpu_seconds: float
    flush_seconds: float = 0.0


@dataclass(frozen=True)
class _Row:
    peer: str
    size: int
    samples: list[_Sample]

    @property
    def mib_per_second(self) -> float:
        return median([self.size / s.seconds for s in self.samples]) / 1024**2

    @property
    def peak(self) -> int:
        return max(s.peak for s in self.samples)

    def as_dict(self) -> dict[str, object]:
        return {
            "peer": self.peer,
            "mib_per_second_median": round(self.mib_per_second, 1),
            "mib_per_second_rounds": [
                round(self.size / s.seconds / 1024**2, 1) for s in self.samples
            ],
            "seconds_median": round(median([s.seconds for s in self.samples]), 3),
            "peak_memory_bytes_max": self.peak,
            "server_cpu_seconds_median": round(
                median([s.cpu_seconds for s in self.samples]), 3
            ),
            "rss_before_bytes_median": round(
                median([s.rss_before for s in self.samples])
            ),
            "fsync_after_seconds_median": round(
                median([s.flush_seconds for s in self.samples]), 3
            ),
        }


def _measure(
    cases: dict[str, _Case], plan: LargePlan, upload: Path | None, stage: Stage
) -> dict[str, list[_Sample]]:
    # Each round runs every case once, starting one further along each time.
    samples: dict[str, list[_Sample]] = {name: [] for name in cases}
    names = list(cases)
    for round_index in range(plan.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(_run_case(cases[name], plan, upload, stage))
    return samples


def _make_large_file(stage: Stage, size: int) -> tuple[Path, str]:
    host_path = stage.write_tree_file(LARGE_REL_PATH)
    pattern = os.urandom(_PATTERN_BYTES)
    digest = hashlib.sha256()
    with host_path.open("wb") as handle:
        left = size
        while left:
            block = pattern[: min(left, _PATTERN_BYTES)]
            handle.write(block)
            digest.update(block)
            left -= len(block)
    return host_path, digest.hexdigest()


def _cases(
    stage: Stage, size: int, digest: str
) -> tuple[dict[str, _Case], dict[str, _Case]]:
    strongroom, staticfiles = stage.strongroom(), stage.staticfiles()
    auth, sr = strongroom.headers, strongroom.server
    got_file = _expect_download(size)
    downloads = {
        "strongroom dir": _Case("strongroom dir", sr,
                                stage.strongroom_url("bench", LARGE_REL_PATH), auth,
                                got_file),
        "strongroom home": _Case("strongroom home", sr,
                                 stage.strongroom_url("home", LARGE_REL_PATH), auth,
                                 got_file),
        "staticfiles": _Case("staticfiles", staticfiles.server,
                             staticfiles.url(LARGE_REL_PATH), {}, got_file),
    }
    uploads = {
        "strongroom dir": _Case("strongroom dir", sr,
                                stage.strongroom_url("drop", LARGE_REL_PATH), auth,
                                _expect_stored(size, stage.drop / LARGE_REL_PATH)),
        "strongroom home": _Case("strongroom home", sr,
                                 stage.strongroom_url("home", LARGE_REL_PATH), auth,
                                 _expect_digest(size, digest)),
    }
    nginx = stage.nginx()
    if nginx is not None:
        downloads["nginx"] = _Case("nginx", nginx.server, nginx.url(LARGE_REL_PATH),
                                   {}, got_file)
        uploads["nginx"] = _Case("nginx", nginx.server,
                                 stage.nginx_dav_url(LARGE_REL_PATH), {},
                                 _expect_stored(size, stage.dav / LARGE_REL_PATH),
                                 flush_path=stage.dav / LARGE_REL_PATH)
    return downloads, uploads


def _expect_download(size: int) -> Callable[[TransferResult], str | None]:
    def check(result: TransferResult) -> str | None:
        if result.status != 200 or result.size != size:
            return f"status {result.status}, {result.size} of {size} bytes"
        return None

    return check


def _expect_stored(
    size: int, host_path: Path
) -> Callable[[TransferResult], str | None]:
    def check(result: TransferResult) -> str | None:
        if result.status not in (200, 201, 204):
            return f"status {result.status}: {result.body[:200]!r}"
        stored = host_path.stat().st_size
        return None if stored == size else f"stored {stored} of {size} bytes"

    return check


def _expect_digest(size: int, digest: str) -> Callable[[TransferResult], str | None]:
    # The home space answers with the metadata it recorded; its ETag is the sha256
    # it computed while receiving, so a match proves the digest was really taken.
    def check(result: TransferResult) -> str | None:
        if result.status not in (200, 201):
            return f"status {result.status}: {result.body[:200]!r}"
        meta = json.loads(result.body)
        if meta.get("size") != size or meta.get("etag") != f'"{digest}"':
            return f"recorded size {meta.get('size')}, etag {meta.get('etag')}"
        return None

    return check


def _run_case(
    case: _Case, plan: LargePlan, upload: Path | None, stage: Stage
) -> _Sample:
    if upload is not None:
        os.sync()
    case.server.reset_peak_memory()
    rss_before = case.server.rss_bytes()
    cpu_before = case.server.cpu_seconds()
    timeout = max(MIN_TIMEOUT_SECONDS, plan.size_bytes / SLOWEST_BYTES_PER_SECOND)

    result = transfer(
        case.url, case.headers, upload=upload, timeout=timeout,
        scratch=stage.tmp / "answer.json",
    )

    problem = case.check(result)
    if problem is not None:
        kind = "upload" if upload is not None else "download"
        raise RuntimeError(f"{kind} via {case.name} went wrong: {problem}")
    return _Sample(
        result.seconds,
        rss_before,
        case.server.peak_memory_bytes(),
        case.server.cpu_seconds() - cpu_before,
        _time_fsync(case.flush_path) if case.flush_path else 0.0,
    )


def _flushed(samples: list[_Sample]) -> list[_Sample]:
    return [replace(s, seconds=s.seconds + s.flush_seconds) for s in samples]


def _time_fsync(host_path: Path) -> float:
    # Strongroom answers a PUT only once the file is fsync-ed; nginx answers
    # before. Timing an fsync right after nginx's answer gives the durable figure.
    started = time.perf_counter()
    fd = os.open(host_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def _targets(summary: dict[str, list[_Row]]) -> list[Target]:
    targets = []
    for kind, rows in summary.items():
        for row in rows:
            if row.peer.startswith("strongroom"):
                targets.append(Target(
                    name=f"{row.peer} {kind} peak memory",
                    goal=f"< {MAX_PEAK_MEMORY_BYTES / 1e6:.0f} MB",
                    measured=f"{row.peak / 1e6:.0f} MB",
                    met=row.peak < MAX_PEAK_MEMORY_BYTES,
                ))
    rates = {row.peer: row.mib_per_second for row in summary["upload"]}
    if "nginx" in rates:
        for name in ("strongroom dir", "strongroom home"):
            ratio = rates[name] / rates["nginx"]
            durable = rates[name] / rates["nginx, then fsync"]
            targets.append(Target(
                name=f"{name} upload vs nginx WebDAV PUT",
                goal=f">= {MIN_UPLOAD_RATIO_VS_NGINX:.1f}x",
                measured=f"{ratio:.2f}x ({durable:.2f}x vs nginx, then fsync)",
                met=ratio >= MIN_UPLOAD_RATIO_VS_NGINX,
            ))
    return targets


def _print(
    summary: dict[str, list[_Row]],
    targets: list[Target],
    plan: LargePlan,
    memory_rewound: bool,
) -> None:
    covers = "this transfer" if memory_rewound else "the server's lifetime"
    print(f"\n== Large transfers: {format_bytes(plan.size_bytes)}, "
          f"{plan.rounds} rounds; peak RSS covers {covers} ==")
    for kind, rows in summary.items():
        table = [
            [
                f"{kind}: {row.peer}",
                f"{row.mib_per_second:,.0f}",
                f"{median([s.seconds for s in row.samples]):.2f}",
                f"{median([s.cpu_seconds for s in row.samples]):.2f}",
                _megabytes(median([s.rss_before for s in row.samples])),
                _megabytes(row.peak),
            ]
            for row in rows
        ]
        headers = ["case", "MiB/s median", "s median", "server CPU s",
                   "RSS before", "peak RSS"]
        print(format_table(headers, table))
    for target in targets:
        print(target.line())


def _megabytes(size: float) -> str:
    # Decimal megabytes, the unit of the 150 MB target.
    return f"{size / 1e6:.0f} MB"
