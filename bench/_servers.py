"""Servers the benchmark starts itself: loopback processes, and their memory.

Every server listens on 127.0.0.1 only, runs in its own session (so stopping it
signals exactly the processes we started, by process-group id), asks the kernel to
send it SIGTERM should the benchmark die without cleaning up, and is stopped when
the `ExitStack` that started it unwinds, also on an error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "LOCAL_OPENER",
    "LOOPBACK",
    "ServerProcess",
    "free_port",
    "http_status",
]

LOOPBACK = "127.0.0.1"
# Start-up of a Python server (imports, database, first connection) takes a few
# seconds on two cores; thirty is generous and still ends a hung start quickly.
START_TIMEOUT_SECONDS = 30.0
# A graceful stop (uvicorn finishing its connections, nginx its workers) is quick;
# past this the whole process group gets SIGKILL.
STOP_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.05
_PR_SET_PDEATHSIG = 1

# urllib honours *_proxy variables; the benchmark's traffic must stay on loopback,
# so its requests go through an opener that knows no proxy.
LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerProcess:
    """One server process tree that the benchmark started and will stop.

    `peak_memory_bytes` reads VmHWM (the resident high-water mark) of every process
    in the tree and returns the largest; `reset_peak_memory` rewinds it to the
    current RSS through /proc/PID/clear_refs, so a measurement can cover just one
    transfer. Not thread-safe; one owner drives it.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.log_path = log_path
        self._cwd = cwd
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """Return the pid of the process the benchmark spawned."""
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    @property
    def base_url(self) -> str:
        """Return `http://127.0.0.1:PORT`."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, probe_path: str) -> None:
        """Spawn the server and wait until `probe_path` answers with any HTTP status.

        Raises `RuntimeError` with the tail of the server's log when it exits
        early or does not answer within `START_TIMEOUT_SECONDS`.
        """
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._cwd,
                env=self._env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            if http_status(self.base_url + probe_path, timeout=1.0) is not None:
                return
            time.sleep(_POLL_SECONDS)
        raise RuntimeError(f"{self.name} did not answer in time:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the process group: SIGTERM, then SIGKILL after a grace period."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # The group id is the pid: the server was started in its own session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def pids(self) -> list[int]:
        """Return the pids of the server and all its descendants."""
        found, pending = [], [self.pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            pending.extend(_children(pid))
        return found

    def reset_peak_memory(self) -> bool:
        """Rewind every process's VmHWM to its current RSS; False if not possible."""
        try:
            for pid in self.pids():
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def peak_memory_bytes(self) -> int:
        """Return the largest VmHWM in the tree (the peak RSS of any one process)."""
        return max(_status_kib(pid, "VmHWM") for pid in self.pids()) * 1024

    def cpu_seconds(self) -> float:
        """Return the CPU time (user + system) the tree's live processes used so far.

        Per-process counters include threads that have exited, so a thread pool
        shrinking during a measurement loses nothing.
        """
        ticks = sum(_cpu_ticks(pid) for pid in self.pids())
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        """Return the largest current RSS in the tree."""
        return max(_status_kib(pid, "VmRSS") for pid in self.pids()) * 1024

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """Ask the kernel for a free loopback port (a tiny reuse race is acceptable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(url: str, *, timeout: float) -> int | None:
    """Return the status of a GET on `url`, or None when nothing answers."""
    try:
        with LOCAL_OPENER.open(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the benchmark is killed outright,
    # the kernel sends the server SIGTERM instead of leaving it behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found.extend(int(child) for child in text.split())
    return found


def _cpu_ticks(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # Fields after the parenthesised command name; utime and stime are the 14th
    # and 15th fields of the whole line (proc(5)).
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
