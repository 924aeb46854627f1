"""Part 2: requests per second for a small file, 64 connections on loopback.

Each peer serves the same 4 KiB file three directories deep: Strongroom with a
valid bearer token (`GET /api/v1/spaces/bench/files/...`), Starlette's
`StaticFiles` with no auth under the same uvicorn call, and nginx when installed.
Every peer first gets one correctness check (status 200 and the exact bytes) and a
warm-up run; then each round runs every peer once, in a rotating order, for a fixed
duration. The ratio to `StaticFiles` is computed per round and its median reported.

With `--profile` (and py-spy available), one extra run after the measured rounds
samples the Strongroom server under the same load and summarises where its time
goes; that run perturbs the rate and is not counted.
"""

from __future__ import annotations

import collections
import subprocess
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench._load import LoadResult, run_load
from bench._report import Target, format_table, median
from bench._servers import LOCAL_OPENER
from bench._stage import SMALL_REL_PATH, Peer, Stage

__all__ = ["ServingPlan", "run_serving"]

# Issue #2, section 4: Strongroom should serve at least 3x what StaticFiles does.
MIN_RATIO_VS_STATICFILES = 3.0
# py-spy's sampling rate; 250 Hz over the profile run gives thousands of samples
# without the sampler itself taking a noticeable share of the second core.
PY_SPY_RATE_HZ = 250
PROFILE_TOP = 15


@dataclass(frozen=True)
class ServingPlan:
    """How long and how hard to load each peer."""

    rounds: int
    seconds: float
    warmup_seconds: float
    connections: int
    tool: str
    py_spy: str | None


def run_serving(stage: Stage, plan: ServingPlan) -> dict[str, object]:
    """Measure every peer, print the table and target, and return the results."""
    peers = [stage.strongroom(), stage.staticfiles()]
    nginx = stage.nginx()
    if nginx is not None:
        peers.append(nginx)
    for peer in peers:
        _check_peer(peer, stage.small_bytes)
        _load(peer, plan, plan.warmup_seconds)

    results: dict[str, list[_Round]] = {peer.name: [] for peer in peers}
    for round_index in range(plan.rounds):
        shift = round_index % len(peers)
        for peer in peers[shift:] + peers[:shift]:
            results[peer.name].append(_measured_round(peer, plan))
    summary = _summarise(results)
    target = _target(results)
    profile = _profile(stage.strongroom(), plan, stage.tmp) if plan.py_spy else None

    _print(summary, target, profile, plan)
    return {
        "file_bytes": len(stage.small_bytes),
        "rel_path": SMALL_REL_PATH,
        "rounds": plan.rounds,
        "seconds_per_round": plan.seconds,
        "connections": plan.connections,
        "load_tool": plan.tool,
        "server_workers": 1,
        "peers": summary,
        "targets": [target.as_dict()],
        "profile": profile,
    }


@dataclass(frozen=True)
class _Round:
    load: LoadResult
    server_cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.load.requests_per_second

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_seconds / max(1, self.load.requests) * 1e6


def _check_peer(peer: Peer, expected: bytes) -> None:
    request = urllib.request.Request(peer.url(SMALL_REL_PATH), headers=peer.headers)
    with LOCAL_OPENER.open(request, timeout=10) as response:
        body = response.read()
        if response.status != 200 or body != expected:
            raise RuntimeError(f"{peer.name} did not serve the file correctly")


def _measured_round(peer: Peer, plan: ServingPlan) -> _Round:
    # The server's own CPU time per request is less sensitive to other work on
    # the machine than the rate is, so it is recorded beside it.
    before = peer.server.cpu_seconds()
    load = _load(peer, plan, plan.seconds)
    return _Round(load, peer.server.cpu_seconds() - before)


def _load(peer: Peer, plan: ServingPlan, seconds: float) -> LoadResult:
    return run_load(
        peer.url(SMALL_REL_PATH),
        peer.headers,
        connections=plan.connections,
        seconds=seconds,
        tool=plan.tool,
    )


def _summarise(results: dict[str, list[_Round]]) -> list[dict[str, object]]:
    baseline = [r.rate for r in results["staticfiles"]]
    summary = []
    for name, runs in results.items():
        rates = [r.rate for r in runs]
        ratios = [mine / base for mine, base in zip(rates, baseline, strict=True)]
        summary.append({
            "peer": name,
            "requests_per_second_median": round(median(rates), 1),
            "requests_per_second_rounds": [round(r, 1) for r in rates],
            "ratio_vs_staticfiles": round(median(ratios), 3),
            "server_cpu_us_per_request_median": round(
                median([r.cpu_us_per_request for r in runs]), 1
            ),
            "latency_p50_ms_median": _median_of(r.load.latency_p50_ms for r in runs),
            "latency_p99_ms_median": _median_of(r.load.latency_p99_ms for r in runs),
            "requests": sum(r.load.requests for r in runs),
            "errors": sum(r.load.errors for r in runs),
        })
    return summary


def _median_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(median(present), 2) if present else None


def _target(results: dict[str, list[_Round]]) -> Target:
    ratios = [
        mine.rate / base.rate
        for mine, base in zip(
            results["strongroom"], results["staticfiles"], strict=True
        )
    ]
    ratio = median(ratios)
    # The same comparison by server CPU per request: what the rate ratio would be
    # if each server had a core to itself, whatever else runs on the machine.
    cpu_ratio = median([
        base.cpu_us_per_request / mine.cpu_us_per_request
        for mine, base in zip(
            results["strongroom"], results["staticfiles"], strict=True
        )
    ])
    return Target(
        name="Strongroom (with token) vs StaticFiles (no auth), req/s",
        goal=f">= {MIN_RATIO_VS_STATICFILES:.1f}x",
        measured=f"{ratio:.2f}x (by server CPU per request: {cpu_ratio:.2f}x)",
        met=ratio >= MIN_RATIO_VS_STATICFILES,
    )


def _profile(peer: Peer, plan: ServingPlan, tmp: Path) -> dict[str, object]:
    """Sample the server with py-spy during one unmeasured load run."""
    assert plan.py_spy is not None
    output = tmp / "strongroom-py-spy.txt"
    seconds = max(2, round(plan.seconds))
    argv = [
        plan.py_spy, "record", "--pid", str(peer.server.pid), "--format", "raw",
        "--rate", str(PY_SPY_RATE_HZ), "--duration", str(seconds),
        "--output", str(output), "--nonblocking",
        # Only samples that hold the GIL: the CPU the Python code burns, without
        # idle worker threads parked on their queue.
        "--gil",
    ]
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as spy:
        loaded = _load(peer, plan, seconds)
        _, errors = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not output.exists():
        return {"error": errors.decode(errors="replace").strip()[-500:]}
    return _summarise_stacks(output.read_text(), loaded)


def _summarise_stacks(text: str, loaded: LoadResult) -> dict[str, object]:
    # py-spy's raw format: one line per distinct stack, "frame;frame;... count",
    # outermost frame first. Own time goes to the last frame; inclusive time to
    # every distinct frame of the stack.
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short_frame(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    total = total or 1
    return {
        "samples": total,
        "requests_per_second_while_sampled": round(loaded.requests_per_second, 1),
        "own": [
            {"function": f, "share": round(n / total, 3)}
            for f, n in own.most_common(PROFILE_TOP)
        ],
        "inclusive": [
            {"function": f, "share": round(n / total, 3)}
            for f, n in inclusive.most_common(PROFILE_TOP * 2)
        ],
    }


def _short_frame(frame: str) -> str:
    # "function (/long/path/site-packages/pkg/mod.py:123)" -> "pkg/mod.py:function"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}" if path else name


def _print(
    summary: list[dict[str, object]],
    target: Target,
    profile: dict[str, object] | None,
    plan: ServingPlan,
) -> None:
    print(f"\n== Serving: GET of a 4 KiB file, {plan.connections} connections, "
          f"{plan.rounds} rounds x {plan.seconds:g} s, load by {plan.tool} ==")
    rows = [
        [
            str(s["peer"]),
            f"{s['requests_per_second_median']:,.0f}",
            f"{s['ratio_vs_staticfiles']:.2f}x",
            f"{s['server_cpu_us_per_request_median']:,.0f} us",
            _ms(s["latency_p50_ms_median"]),
            _ms(s["latency_p99_ms_median"]),
            str(s["errors"]),
        ]
        for s in summary
    ]
    headers = ["peer", "req/s median", "vs StaticFiles", "server CPU/req", "p50",
               "p99", "errors"]
    print(format_table(headers, rows))
    print(target.line())
    if profile:
        _print_profile(profile)


def _print_profile(profile: dict[str, object]) -> None:
    if "error" in profile:
        print(f"  py-spy failed: {profile['error']}")
        return
    print(f"\n  where the Strongroom server spends its time (py-spy, "
          f"{profile['samples']} samples):")
    for kind in ("inclusive", "own"):
        entries = profile[kind]
        assert isinstance(entries, list)
        rows = [[str(e["function"]), f"{e['share']:.1%}"] for e in entries]
        print(format_table([f"function ({kind})", "share"], rows))


def _ms(value: object) -> str:
    return "-" if value is None else f"{value:.1f} ms"
