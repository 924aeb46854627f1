"""The profile a proof run asks for, and the figures its test families report.

`make proof` (tests/proof/report.py) runs each family of adversarial tests in its own
pytest process with two environment variables set:

- `SR_PROOF_PROFILE`: `short` (CI: a few minutes in all) or `long` (the full numbers:
  more fuzzing examples, more kills, a longer load run). Tests size their work with
  `pick(short=..., long=...)`; outside a proof run the profile is `short`.
- `SR_PROOF_DIR`: the folder the report is written to. A test that measures something
  beyond pass or fail (attempts and escapes, kills, p99 latency, RSS) calls
  `record(family, ...)`, which appends one JSON line to `figures.jsonl` there. Outside
  a proof run `record` does nothing, so the same tests run anywhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeVar

PROFILE_ENV = "SR_PROOF_PROFILE"
PROOF_DIR_ENV = "SR_PROOF_DIR"
PROFILES = ("short", "long")
FIGURES_FILE = "figures.jsonl"

T = TypeVar("T")


def profile() -> str:
    """Return the proof profile this run asks for (`short` unless told `long`)."""
    chosen = os.environ.get(PROFILE_ENV, "short")
    if chosen not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={chosen!r}: use one of {', '.join(PROFILES)}")
    return chosen


def pick(short: T, long: T) -> T:
    """Return the value for the current profile."""
    return long if profile() == "long" else short


def record(family: str, **figures: object) -> None:
    """Append `figures` (JSON-serialisable values) for `family` to the proof report.

    Several records for one family are kept in order; the report adds up numeric
    fields with the same name and lists the rest. Does nothing outside a proof run.
    """
    folder = os.environ.get(PROOF_DIR_ENV)
    if not folder:
        return
    line = json.dumps({"family": family, **figures}, sort_keys=True, default=str)
    with (Path(folder) / FIGURES_FILE).open("a", encoding="utf-8") as out:
        out.write(line + "\n")
