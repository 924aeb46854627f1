"""`python -m bench`: run the benchmark parts and print them side by side.

    python -m bench                       # everything, the full profile
    python -m bench --quick               # a smoke profile, well under a minute
    python -m bench --only containment    # one part (repeat --only for more)

Results are printed and written as JSON under `bench/results/`. Every server the
run starts listens on 127.0.0.1 and is stopped before the command returns, also on
an error or Ctrl-C. The exit code is 0 when every part ran (whether or not it met
its targets), 1 when a part failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from bench._load import has_wrk
from bench._report import format_bytes, load_note, machine_info, write_results
from bench._stage import Stage
from bench.containment import run_containment
from bench.imports import ImportsPlan, run_imports
from bench.large import LargePlan, run_large
from bench.offload import OffloadPlan, run_offload
from bench.serving import ServingPlan, run_serving
from bench.tokens import run_tokens

PARTS = ("containment", "tokens", "serving", "large", "imports", "offload")


@dataclass(frozen=True)
class Profile:
    """Rounds, durations and sizes of one benchmark profile."""

    name: str
    containment_rounds: int
    containment_iterations: int
    tokens_rounds: int
    tokens_iterations: int
    serving_rounds: int
    serving_seconds: float
    serving_warmup_seconds: float
    large_size_bytes: int
    large_rounds: int
    imports_members: int
    imports_size_bytes: int
    imports_rounds: int


FULL = Profile(
    name="full",
    containment_rounds=9,
    containment_iterations=20_000,
    tokens_rounds=9,
    tokens_iterations=1_000,
    serving_rounds=3,
    serving_seconds=10.0,
    serving_warmup_seconds=2.0,
    large_size_bytes=1024**3,
    large_rounds=3,
    imports_members=10_000,
    imports_size_bytes=1024**3,
    imports_rounds=3,
)
QUICK = Profile(
    name="quick",
    containment_rounds=5,
    containment_iterations=3_000,
    tokens_rounds=5,
    tokens_iterations=300,
    serving_rounds=2,
    serving_seconds=3.0,
    serving_warmup_seconds=1.0,
    large_size_bytes=64 * 1024**2,
    large_rounds=2,
    imports_members=1_000,
    imports_size_bytes=64 * 1024**2,
    imports_rounds=2,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts; return the exit code."""
    args = _parser().parse_args(argv)
    profile = _profile(args)
    parts = args.only or list(PARTS)
    results: dict[str, object] = {
        "profile": profile.name,
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
    }
    _print_header(results, profile, parts)

    # A shell that starts a background job ignores SIGINT for it; the benchmark
    # wants Ctrl-C and SIGTERM alike to unwind, so the servers get stopped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        _run_parts(parts, profile, args, results)
    except KeyboardInterrupt:
        print("\ninterrupted; every server the benchmark started was stopped")
        results["error"] = "interrupted"
        code = 130
    except Exception as exc:
        traceback.print_exc()
        results["error"] = f"{type(exc).__name__}: {exc}"
        code = 1

    path = write_results(results, profile.name)
    _print_targets(results)
    print(f"\nresults: {path}")
    return code


def _run_parts(
    parts: list[str],
    profile: Profile,
    args: argparse.Namespace,
    results: dict[str, object],
) -> None:
    if "containment" in parts:
        load = _check_load()
        results["containment"] = run_containment(
            profile.containment_rounds, profile.containment_iterations
        ) | {"load_average_before": load}
    if "tokens" in parts:
        load = _check_load()
        results["tokens"] = run_tokens(
            profile.tokens_rounds, profile.tokens_iterations
        ) | {"load_average_before": load}
    if "imports" in parts:
        imports = ImportsPlan(profile.imports_members, profile.imports_size_bytes,
                              profile.imports_rounds, args.import_dir)
        load = _check_load()
        results["imports"] = run_imports(imports) | {"load_average_before": load}
    if not {"serving", "large", "offload"} & set(parts):
        return
    with contextlib.ExitStack() as stack:
        stage = Stage(stack, max_upload_bytes=profile.large_size_bytes)
        if "serving" in parts:
            plan = ServingPlan(
                rounds=profile.serving_rounds,
                seconds=profile.serving_seconds,
                warmup_seconds=profile.serving_warmup_seconds,
                connections=args.connections,
                tool=_load_tool(args.load_client),
                py_spy=_py_spy(args) if args.profile else None,
            )
            load = _check_load()
            results["serving"] = run_serving(stage, plan) | {
                "load_average_before": load
            }
        if "large" in parts:
            large = LargePlan(profile.large_size_bytes, profile.large_rounds)
            load = _check_load()
            results["large"] = run_large(stage, large) | {"load_average_before": load}
        if "offload" in parts:
            offload = OffloadPlan(
                rounds=profile.serving_rounds,
                seconds=profile.serving_seconds,
                warmup_seconds=profile.serving_warmup_seconds,
                connections=args.connections,
                tool=_load_tool(args.load_client),
                large_size_bytes=profile.large_size_bytes,
            )
            load = _check_load()
            results["offload"] = run_offload(stage, offload) | {
                "load_average_before": load
            }


def _check_load() -> float:
    load, note = load_note()
    if note:
        print(f"\n{note}")
    return round(load, 2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Strongroom's benchmark: containment, token checks, serving, "
        "large transfers.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="short smoke profile (well under a minute)")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable)")
    parser.add_argument("--rounds", type=int,
                        help="rounds for every part (default from the profile)")
    parser.add_argument("--seconds", type=float,
                        help="load duration of each serving round")
    parser.add_argument("--connections", type=int, default=64,
                        help="concurrent connections for serving (default 64)")
    parser.add_argument("--large-size", type=_parse_size,
                        help="size of the large transfer, e.g. 1GiB or 256MiB")
    parser.add_argument("--load-client", choices=("auto", "wrk", "python"),
                        default="auto", help="load generator (auto: wrk if present)")
    parser.add_argument("--import-dir", type=Path, metavar="PATH",
                        help="where the imports part makes and unpacks its "
                        "archives (default: a temporary folder); /dev/shm "
                        "measures the code apart from the disk")
    parser.add_argument("--profile", action="store_true",
                        help="sample the Strongroom server with py-spy under load")
    parser.add_argument("--py-spy", metavar="PATH",
                        help="py-spy executable (default: py-spy on PATH)")
    return parser


def _profile(args: argparse.Namespace) -> Profile:
    profile = QUICK if args.quick else FULL
    if args.rounds is not None:
        if args.rounds < 1:
            raise SystemExit("--rounds must be at least 1")
        profile = replace(profile, containment_rounds=args.rounds,
                          tokens_rounds=args.rounds, serving_rounds=args.rounds,
                          large_rounds=args.rounds, imports_rounds=args.rounds)
    if args.seconds is not None:
        profile = replace(profile, serving_seconds=args.seconds)
    if args.large_size is not None:
        profile = replace(profile, large_size_bytes=args.large_size)
    return profile


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _parse_size(text: str) -> int:
    found = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(i?b)?\s*", text.lower())
    if found is None or int(found.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 1GiB")
    return int(found.group(1)) * _SIZE_UNITS[found.group(2)]


def _load_tool(choice: str) -> str:
    if choice == "wrk" and not has_wrk():
        raise SystemExit("--load-client wrk, but wrk is not installed")
    if choice == "auto":
        return "wrk" if has_wrk() else "python"
    return choice


def _py_spy(args: argparse.Namespace) -> str:
    found: str | None = args.py_spy or shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy: pass --py-spy PATH or put it on PATH")
    return found


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so the servers are stopped on the way out.
    raise KeyboardInterrupt


def _print_header(
    results: dict[str, object], profile: Profile, parts: list[str]
) -> None:
    machine = results["machine"]
    assert isinstance(machine, dict)
    print(f"Strongroom benchmark, {profile.name} profile: {', '.join(parts)}")
    print(f"machine: {machine['cores']} cores, {machine['cpu']}, "
          f"{machine['memory_gib']} GiB, Linux {machine['kernel']}, "
          f"Python {machine['python']}")
    print(f"source: {machine['source']}")
    if "large" in parts:
        print(f"large transfer size: {format_bytes(profile.large_size_bytes)}")
    if "imports" in parts:
        print(f"import archives: {profile.imports_members:,} members, and one "
              f"member of {format_bytes(profile.imports_size_bytes)}")


def _print_targets(results: dict[str, object]) -> None:
    lines = []
    for part in PARTS:
        section = results.get(part)
        if isinstance(section, dict):
            for target in section.get("targets", []):
                verdict = "met" if target["met"] else "MISSED"
                lines.append(f"  {verdict:6s} {part}: {target['name']}: "
                             f"{target['measured']} (goal {target['goal']})")
    if lines:
        print("\n== Targets ==")
        print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
