"""Shared mechanics of the benchmark: medians, targets, tables, machine facts, JSON."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "BUSY_LOAD_PER_CORE",
    "RESULTS_DIR",
    "load_note",
    "Target",
    "format_bytes",
    "format_table",
    "machine_info",
    "median",
    "write_results",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# A one-minute load average above this many runnable tasks per core means other
# work competes with the benchmark for the CPU; its figures get noisier.
BUSY_LOAD_PER_CORE = 0.5


@dataclass(frozen=True)
class Target:
    """One target from issue #2 and whether this run met it."""

    name: str
    goal: str
    measured: str
    met: bool

    def line(self) -> str:
        """Return the line printed under a part's table."""
        verdict = "met" if self.met else "MISSED"
        return f"  target {verdict:6s} {self.name}: {self.measured} (goal {self.goal})"

    def as_dict(self) -> dict[str, object]:
        """Return the target as plain JSON values."""
        return asdict(self)


def median(values: Sequence[float]) -> float:
    """Return the median of a non-empty sequence."""
    return float(statistics.median(values))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Lay out rows under headers; the first column left-aligned, the rest right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def render(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(headers), rule, *(render(row) for row in rows)])


def format_bytes(size: float) -> str:
    """Show a byte count in binary units (KiB, MiB, GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def load_note() -> tuple[float, str | None]:
    """Return the one-minute load average and a warning line if the machine is busy."""
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if load <= BUSY_LOAD_PER_CORE * cores:
        return load, None
    return load, (
        f"  note: load average {load:.1f} on {cores} cores before this part: other "
        "work shares the CPU; absolute figures are noisier, in-run ratios less so"
    )


def machine_info() -> dict[str, object]:
    """Describe the machine and the tools, so a result file explains itself."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                            / 1024**3, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _tool_version(["nginx", "-v"]),
        "wrk": _tool_version(["wrk", "--version"]),
        "curl": _tool_version(["curl", "--version"]),
        "source": _source_revision(),
    }


def write_results(results: dict[str, object], profile: str) -> Path:
    """Write one run's results as JSON under `bench/results/` and return the path.

    `latest.json` is overwritten with the same content so scripts can find the
    newest run without listing the folder.
    """
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{stamp}-{profile}.json"
    text = json.dumps(results, indent=2, sort_keys=False) + "\n"
    path.write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    return path


def _source_revision() -> str | None:
    # Which code was measured: the commit, marked when the work tree differs from it.
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                "--", "src"], capture_output=True, text=True,
                               timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + (" with uncommitted changes in src/" if dirty.stdout
                                  else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _tool_version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # nginx prints its version on stderr, wrk on stdout; keep the first line.
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None
