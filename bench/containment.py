"""Part 1: what containment costs on one small read.

Each variant opens, reads and closes the same 4 KiB file three directories deep:

- `open()`: plain `open(host_path, "rb").read()`, no containment at all (unsafe);
- `os.open+os.read`: the bare syscalls, shown only to tell how much of `open()` is
  Python's io stack rather than the kernel;
- `resolve+relative_to`: the common advice, `Path.resolve()` then `relative_to()`
  then `open()`; it still loses to a symlink swapped in between check and use;
- `Root openat2` and `Root walk`: `Root.read_bytes` with each resolver.

Timing is timeit-style: many calls per round with the garbage collector off, several
rounds, variants interleaved within each round (in a rotating order) so that drift of
the machine hits all of them alike. The clock is the process's CPU time (user plus
system), so other work on the machine, which delays a run but does not make a
syscall cost more, inflates the figures far less than wall time would. A ratio is
computed per round against `open()` from that same round, and the median of those
ratios is reported.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench._report import Target, format_table, median
from strongroom.confine import Root, openat2_available

__all__ = ["FILE_BYTES", "REL_PATH", "run_containment"]

# The file the issue names: 4 KiB, three directories below the root.
FILE_BYTES = 4096
REL_PATH = "a/b/c/file.bin"
# Issue #2, section 4: the kernel path may cost at most 1.2x plain open(), the
# fallback walk at most 2x.
OPENAT2_MAX_RATIO = 1.2
WALK_MAX_RATIO = 2.0
# Calls profiled per resolver when it misses its target: enough for cProfile's
# per-call figures to settle, small enough to take well under a second.
PROFILE_CALLS = 20_000
PROFILE_TOP = 10


def run_containment(rounds: int, iterations: int) -> dict[str, object]:
    """Measure every variant, print the table and targets, and return the results.

    A resolver that misses its target is profiled with cProfile right away, and its
    heaviest functions are printed and returned under `profiles`.
    """
    with tempfile.TemporaryDirectory(prefix="strongroom-bench-") as tmp:
        base = Path(tmp).resolve()
        expected = _make_tree(base)
        roots = _open_roots(base)
        try:
            variants = _variants(base, roots)
            _check_variants(variants, expected)
            samples = _measure(variants, rounds, iterations)
            rows = _summarise(variants, samples)
            targets = _targets(rows)
            profiles = {
                key: _profile(roots[key])
                for key, target in targets.items()
                if not target.met
            }
        finally:
            for root in roots.values():
                root.close()

    _print(rows, targets, profiles, rounds, iterations)
    return {
        "file_bytes": FILE_BYTES,
        "rel_path": REL_PATH,
        "rounds": rounds,
        "iterations_per_round": iterations,
        "openat2_available": "openat2" in roots,
        "variants": [row.as_dict() for row in rows],
        "targets": [t.as_dict() for t in targets.values()],
        "profiles": profiles,
    }


@dataclass(frozen=True)
class _Variant:
    key: str
    label: str
    read: Callable[[], bytes]


@dataclass(frozen=True)
class _Row:
    key: str
    label: str
    us_per_op: list[float]
    ratio_vs_open: float

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "label": self.label,
            "us_per_op_median": round(median(self.us_per_op), 3),
            "us_per_op_min": round(min(self.us_per_op), 3),
            "us_per_op_max": round(max(self.us_per_op), 3),
            "ratio_vs_open": round(self.ratio_vs_open, 3),
            "us_per_op_rounds": [round(s, 3) for s in self.us_per_op],
        }


def _make_tree(base: Path) -> bytes:
    host_path = base / REL_PATH
    host_path.parent.mkdir(parents=True)
    data = os.urandom(FILE_BYTES)
    host_path.write_bytes(data)
    # Measure files at rest: the confined root re-resolves a file whose ctime
    # moved within the last second (see Root._check_hardlinks), which a file
    # that was just written always has.
    time.sleep(1.1)
    return data


def _open_roots(base: Path) -> dict[str, Root]:
    roots = {"walk": Root(base, symlinks="deny", resolver="walk")}
    if openat2_available():
        roots["openat2"] = Root(base, symlinks="deny", resolver="openat2")
    return roots


def _variants(base: Path, roots: dict[str, Root]) -> list[_Variant]:
    host_path = str(base / REL_PATH)

    def read_plain() -> bytes:
        with open(host_path, "rb") as handle:
            return handle.read()

    def read_syscalls() -> bytes:
        fd = os.open(host_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.read(fd, FILE_BYTES + 1)
        finally:
            os.close(fd)

    def read_resolved() -> bytes:
        # The common advice: resolve the joined path, then insist it is still below.
        resolved = (base / REL_PATH).resolve()
        resolved.relative_to(base)
        with open(resolved, "rb") as handle:
            return handle.read()

    variants = [
        _Variant("open", "open() (unsafe baseline)", read_plain),
        _Variant("syscalls", "os.open+os.read (reference)", read_syscalls),
        _Variant("resolve", "resolve+relative_to+open()", read_resolved),
    ]
    for key in ("openat2", "walk"):
        if key in roots:
            read = _root_reader(roots[key])
            variants.append(_Variant(key, f"Root.read_bytes, {key}", read))
    return variants


def _root_reader(root: Root) -> Callable[[], bytes]:
    def read_confined() -> bytes:
        return root.read_bytes(REL_PATH)

    return read_confined


def _check_variants(variants: list[_Variant], expected: bytes) -> None:
    # A fast wrong answer is no answer: every variant must read the same bytes.
    for variant in variants:
        if variant.read() != expected:
            raise RuntimeError(f"variant {variant.key} read the wrong bytes")


def _measure(
    variants: list[_Variant], rounds: int, iterations: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {v.key: [] for v in variants}
    for variant in variants:
        _timer(variant).timeit(max(1, iterations // 10))
    for round_index in range(rounds):
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            seconds = _timer(variant).timeit(iterations)
            samples[variant.key].append(seconds / iterations * 1e6)
    return samples


def _timer(variant: _Variant) -> timeit.Timer:
    return timeit.Timer(variant.read, timer=time.process_time)


def _summarise(
    variants: list[_Variant], samples: dict[str, list[float]]
) -> list[_Row]:
    baseline = samples["open"]
    rows = []
    for variant in variants:
        mine = samples[variant.key]
        ratios = [m / b for m, b in zip(mine, baseline, strict=True)]
        rows.append(_Row(variant.key, variant.label, mine, median(ratios)))
    return rows


def _targets(rows: list[_Row]) -> dict[str, Target]:
    ratios = {r.key: r.ratio_vs_open for r in rows}
    targets = {}
    for key, limit in (("openat2", OPENAT2_MAX_RATIO), ("walk", WALK_MAX_RATIO)):
        if key in ratios:
            targets[key] = Target(
                name=f"Root {key} vs plain open()",
                goal=f"<= {limit:.1f}x",
                measured=f"{ratios[key]:.2f}x",
                met=ratios[key] <= limit,
            )
    return targets


def _profile(root: Root) -> list[dict[str, object]]:
    """Profile `read_bytes` and return the functions with the most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(PROFILE_CALLS):
        root.read_bytes(REL_PATH)
    profiler.disable()

    report = pstats.Stats(profiler, stream=io.StringIO()).get_stats_profile()
    total = report.total_tt or 1.0
    heaviest = sorted(
        report.func_profiles.items(), key=lambda item: item[1].tottime, reverse=True
    )
    return [
        {
            "function": _short_function(fp.file_name, fp.line_number, name),
            # ncalls reads "total/primitive" for recursive functions.
            "calls_per_op": round(int(fp.ncalls.split("/")[0]) / PROFILE_CALLS, 2),
            "own_share": round(fp.tottime / total, 3),
        }
        for name, fp in heaviest[:PROFILE_TOP]
    ]


def _short_function(filename: str, line: int, name: str) -> str:
    if filename in ("~", ""):
        return name
    parts = Path(filename).parts
    tail = "/".join(parts[parts.index("strongroom"):]) if "strongroom" in parts else (
        Path(filename).name
    )
    return f"{tail}:{line}({name})"


def _print(
    rows: list[_Row],
    targets: dict[str, Target],
    profiles: dict[str, list[dict[str, object]]],
    rounds: int,
    iterations: int,
) -> None:
    print(f"\n== Containment: open+read+close of {FILE_BYTES} B at {REL_PATH} "
          f"({rounds} rounds x {iterations} calls) ==")
    table = [
        [
            r.label,
            f"{median(r.us_per_op):.2f}",
            f"{min(r.us_per_op):.2f}-{max(r.us_per_op):.2f}",
            f"{r.ratio_vs_open:.2f}x",
        ]
        for r in rows
    ]
    print(format_table(["variant", "CPU us/op median", "range", "vs open()"], table))
    for target in targets.values():
        print(target.line())
    for key, entries in profiles.items():
        print(f"\n  where Root.read_bytes ({key}) spends its time "
              f"(cProfile, own time, {PROFILE_CALLS} calls):")
        profile_rows = [
            [str(e["function"]), f"{e['calls_per_op']:g}", f"{e['own_share']:.1%}"]
            for e in entries
        ]
        print(format_table(["function", "calls/op", "own share"], profile_rows))
