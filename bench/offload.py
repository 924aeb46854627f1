"""Part 6: the app alone, the app behind nginx with offload, and nginx alone (issue 6).

Side by side in one run, on the stage's shared tree (`bench._stage`):

- `app alone`: Strongroom answering `GET /api/v1/spaces/bench/files/...` itself;
- `app + nginx (offload)`: the same request through nginx, configured by
  `strongroom nginx-config`, to a Strongroom instance with `offload = "nginx"`: the
  app checks the token and opens the file, nginx sends the bytes;
- `2 apps + nginx (offload)`: the same with two instances behind that nginx;
- `nginx alone`: nginx serving the same file with no auth (the stage's peer).

For each: 4 KiB requests per second at the plan's connection count (wrk when
installed), and the download rate of one 1 GiB file (curl, body discarded). Each
round runs every peer once, in a rotating order; figures are medians over rounds
and ratios are computed per round. Every offloaded instance shares one data folder
and SQLite database, as instances of one deployment do.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench._load import run_load
from bench._report import Target, format_table, median
from bench._servers import LOOPBACK, ServerProcess, free_port
from bench._stage import SMALL_REL_PATH, Peer, Stage, fetch_token, run_cli, venv_bin
from bench._transfer import transfer

__all__ = ["OffloadPlan", "run_offload"]

# Issue 6: behind nginx with offload, at least 0.9x nginx alone for the large
# download and 0.5x for small files; two instances at least 1.7x one instance.
MIN_LARGE_VS_NGINX = 0.9
MIN_SMALL_VS_NGINX = 0.5
MIN_TWO_INSTANCES_VS_ONE = 1.7
LARGE_REL_PATH = "offload-big.bin"
_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class OffloadPlan:
    """Sizes, durations and load of the offload part."""

    rounds: int
    seconds: float
    warmup_seconds: float
    connections: int
    tool: str
    large_size_bytes: int


def run_offload(stage: Stage, plan: OffloadPlan) -> dict[str, object]:
    """Measure the four peers, print the table and the targets, return the results."""
    _write_large_file(stage, plan.large_size_bytes)
    nginx = stage.nginx()
    if nginx is None:
        print("nginx is not installed: the offload part needs it")
        return {"skipped": "nginx is not installed"}
    with contextlib.ExitStack() as stack:
        peers = {
            "app alone": stage.strongroom(),
            "app + nginx (offload)": _offloaded(stage, stack, instances=1),
            "2 apps + nginx (offload)": _offloaded(stage, stack, instances=2),
            "nginx alone": nginx,
        }
        for peer in peers.values():
            _check(peer, stage.small_bytes, plan.large_size_bytes)
            run_load(peer.url(SMALL_REL_PATH), peer.headers,
                     connections=plan.connections, seconds=plan.warmup_seconds,
                     tool=plan.tool)
        rounds = [_round(peers, plan, n) for n in range(plan.rounds)]
    rows = _rows(rounds, list(peers))
    targets = _targets(rounds)
    _print(rows, targets, plan)
    return {
        "rounds": rounds,
        "summary": rows,
        "targets": [t.as_dict() for t in targets],
        "connections": plan.connections,
        "tool": plan.tool,
        "large_size_bytes": plan.large_size_bytes,
    }


def _round(peers: dict[str, Peer], plan: OffloadPlan, n: int) -> dict[str, object]:
    names = list(peers)
    order = names[n % len(names):] + names[: n % len(names)]
    small: dict[str, float] = {}
    large: dict[str, float] = {}
    errors: dict[str, int] = {}
    for name in order:
        peer = peers[name]
        print(f"  offload: round {n + 1}/{plan.rounds}, {name}", flush=True)
        load = run_load(peer.url(SMALL_REL_PATH), peer.headers,
                        connections=plan.connections, seconds=plan.seconds,
                        tool=plan.tool)
        small[name] = load.requests_per_second
        errors[name] = load.errors
        got = transfer(peer.url(LARGE_REL_PATH), peer.headers, upload=None,
                       timeout=max(60.0, plan.large_size_bytes / 20e6),
                       scratch=Path(os.devnull))
        large[name] = got.size / got.seconds / 1e6
    return {"small_rps": small, "large_mb_s": large, "errors": errors}


def _rows(rounds: list[dict[str, object]], names: list[str]) -> list[dict[str, object]]:
    rows = []
    for name in names:
        small = [r["small_rps"][name] for r in rounds]  # type: ignore[index]
        large = [r["large_mb_s"][name] for r in rounds]  # type: ignore[index]
        rows.append({
            "peer": name,
            "small_rps_median": round(median(small)),
            "large_mb_s_median": round(median(large), 1),
            "small_vs_nginx": round(_ratio(rounds, "small_rps", name), 2),
            "large_vs_nginx": round(_ratio(rounds, "large_mb_s", name), 2),
            "errors": sum(r["errors"][name] for r in rounds),  # type: ignore[index]
        })
    return rows


def _ratio(rounds: list[dict[str, object]], key: str, name: str,
           against: str = "nginx alone") -> float:
    values = [r[key][name] / r[key][against] for r in rounds]  # type: ignore[index]
    return median(values)


def _targets(rounds: list[dict[str, object]]) -> list[Target]:
    one, two = "app + nginx (offload)", "2 apps + nginx (offload)"
    large = _ratio(rounds, "large_mb_s", one)
    small = _ratio(rounds, "small_rps", one)
    scale = _ratio(rounds, "small_rps", two, against=one)
    return [
        Target("offload: large download vs nginx alone", f">= {MIN_LARGE_VS_NGINX}x",
               f"{large:.2f}x", large >= MIN_LARGE_VS_NGINX),
        Target("offload: 4 KiB requests vs nginx alone", f">= {MIN_SMALL_VS_NGINX}x",
               f"{small:.2f}x", small >= MIN_SMALL_VS_NGINX),
        Target("offload: 4 KiB requests, two instances vs one",
               f">= {MIN_TWO_INSTANCES_VS_ONE}x", f"{scale:.2f}x",
               scale >= MIN_TWO_INSTANCES_VS_ONE),
    ]


def _print(rows: list[dict[str, object]], targets: list[Target],
           plan: OffloadPlan) -> None:
    print(f"\n== Offload: 4 KiB at {plan.connections} connections ({plan.tool}), "
          f"{plan.large_size_bytes / 1024**3:.1f} GiB download, "
          f"{plan.rounds} rounds ==")
    table = [
        [str(r["peer"]), f"{r['small_rps_median']:,}", f"{r['small_vs_nginx']:.2f}x",
         f"{r['large_mb_s_median']:,.1f}", f"{r['large_vs_nginx']:.2f}x",
         str(r["errors"])]
        for r in rows
    ]
    print(format_table(["peer", "4 KiB req/s", "vs nginx", "download MB/s",
                        "vs nginx", "errors"], table))
    for target in targets:
        print(target.line())


# The offloaded instances and their nginx


def _offloaded(stage: Stage, stack: contextlib.ExitStack, instances: int) -> Peer:
    home = stage.tmp / f"offload-{instances}"
    home.mkdir(mode=0o700)
    config = home / "strongroom.toml"
    config.write_text(_offload_config(stage, home))
    password = "bench-" + os.urandom(9).hex()
    run_cli(config, ["user", "add", "bench", "--password-stdin"], password)
    ports = []
    for n in range(instances):
        port = free_port()
        argv = [str(venv_bin("strongroom")), "--config", str(config), "serve",
                "--port", str(port)]
        server = ServerProcess(f"offload-{instances}-app{n}", argv, port,
                               stage.logs / f"offload-{instances}-app{n}.log")
        stack.callback(server.stop)
        server.start("/healthz")
        ports.append(port)
    front = _front_nginx(stage, stack, config, ports, f"offload-{instances}-nginx")
    token = fetch_token(front.base_url, "bench", password)
    return Peer(
        name=f"offload-{instances}",
        server=front,
        headers={"Authorization": f"Bearer {token}"},
        path_for=lambda rel: "/api/v1/spaces/bench/files/" + rel,
    )


def _offload_config(stage: Stage, home: Path) -> str:
    return "\n".join([
        f"data_dir = {json.dumps(str(home / 'data'))}",
        "token_ttl_seconds = 3600",
        f'host = "{LOOPBACK}"',
        'offload = "nginx"',
        f'trusted_proxies = ["{LOOPBACK}"]',
        "",
        "[[spaces]]",
        'name = "bench"',
        f"path = {json.dumps(str(stage.tree))}",
        'mode = "ro"',
        'users = ["*"]',
        "",
    ])


def _front_nginx(stage: Stage, stack: contextlib.ExitStack, config: Path,
                 upstreams: list[int], name: str) -> ServerProcess:
    runtime = stage.tmp / name
    runtime.mkdir()
    port = free_port()
    argv = [str(venv_bin("strongroom")), "--config", str(config), "nginx-config",
            "--listen", f"{LOOPBACK}:{port}", "--runtime-dir", str(runtime)]
    for upstream in upstreams:
        argv += ["--upstream", f"{LOOPBACK}:{upstream}"]
    if os.geteuid() == 0:
        argv += ["--user", "root"]  # the workers must enter the private data folder
    text = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    conf = runtime / "nginx.conf"
    conf.write_text(text)
    nginx = [_which_nginx(), "-e", str(runtime / "early.log"), "-c", str(conf),
             "-g", "daemon off;"]
    server = ServerProcess(name, nginx, port, stage.logs / f"{name}.log")
    stack.callback(server.stop)
    server.start("/healthz")
    return server


def _which_nginx() -> str:
    for candidate in ("/usr/sbin/nginx", "/usr/bin/nginx"):
        if os.path.exists(candidate):
            return candidate
    raise RuntimeError("nginx is not installed")


def _write_large_file(stage: Stage, size: int) -> None:
    host_path = stage.write_tree_file(LARGE_REL_PATH)
    block = os.urandom(_BLOCK_BYTES)
    with host_path.open("wb") as out:
        for start in range(0, size, _BLOCK_BYTES):
            out.write(block[: min(_BLOCK_BYTES, size - start)])


def _check(peer: Peer, small: bytes, large_size: int) -> None:
    got = transfer(peer.url(SMALL_REL_PATH), peer.headers, upload=None,
                   timeout=30.0, scratch=Path(os.devnull))
    if got.status != 200 or got.size != len(small):
        raise RuntimeError(f"{peer.name} answered {got.status} with {got.size} bytes")
    head = transfer(peer.url(LARGE_REL_PATH), peer.headers, upload=None,
                    timeout=max(60.0, large_size / 20e6), scratch=Path(os.devnull))
    if head.status != 200 or head.size != large_size:
        raise RuntimeError(f"{peer.name} sent {head.size} of {large_size} bytes")
