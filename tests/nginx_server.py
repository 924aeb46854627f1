"""Debian's nginx on a loopback port, configured by `strongroom nginx-config`.

`make test` installs the package (nginx-light) when /usr/sbin/nginx is missing.
The configuration is exactly what the CLI prints for the server's own settings,
so the tests check the file users deploy, not a hand-written stand-in.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
START_TIMEOUT_SECONDS = 10.0


def nginx_problem() -> str | None:
    """Say why nginx cannot run here, or None when it can."""
    if NGINX is None:
        return "nginx is not installed (make test installs Debian's nginx-light)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def run_nginx(
    config_file: Path, upstreams: Sequence[int], runtime_dir: Path
) -> Iterator[int]:
    """Generate the config for `config_file`'s settings, start nginx, yield its port."""
    assert NGINX is not None, nginx_problem()
    runtime_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [str(Path(sys.executable).with_name("strongroom")), "nginx-config",
            "--config", str(config_file), "--listen", f"127.0.0.1:{port}",
            "--runtime-dir", str(runtime_dir)]
    for upstream in upstreams:
        argv += ["--upstream", f"127.0.0.1:{upstream}"]
    if os.geteuid() == 0:
        # Workers would otherwise drop to www-data, which cannot enter pytest's
        # private temporary folders.
        argv += ["--user", "root"]
    text = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    conf = runtime_dir / "nginx.conf"
    conf.write_text(text)
    early_log = runtime_dir / "early.log"
    proc = subprocess.Popen(
        [NGINX, "-e", str(early_log), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(proc, port, runtime_dir)
        yield port
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(proc: subprocess.Popen[bytes], port: int, runtime_dir: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    logs = "".join(
        path.read_text(errors="replace")[-2000:]
        for path in (runtime_dir / "early.log", runtime_dir / "error.log")
        if path.exists()
    )
    raise RuntimeError(f"nginx did not start on port {port}: {logs}")
