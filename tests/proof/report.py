"""`make proof`: run every adversarial family against real servers and report.

Each family is a set of test files run in a pytest process of its own, with the
profile (`short` for CI, `long` for the full numbers) and the report folder in the
environment (see tests/proof_figures.py). A family passes when pytest passes and
ran at least one test; skipped tests are counted and shown, because a family that
skipped its work has not proved anything. The report goes to `proof/report.md`
and `proof/report.json` in the working tree: one line per family, with the counts
pytest gave and the figures the tests recorded, then the totals. The command exits
1 when any family failed.

Usage: python tests/proof/report.py [--profile short|long] [--only FAMILY ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from proof_figures import (  # noqa: E402 (the tests folder is not a package)
    FIGURES_FILE,
    PROFILE_ENV,
    PROFILES,
    PROOF_DIR_ENV,
)

PROOF_DIR = REPO / "proof"
# The race tests size themselves from this variable (tests/confine/test_races.py).
RACE_LONG_ENV = "STRONGROOM_RACE_LONG"


@dataclass(frozen=True)
class Family:
    """One line of the report: a name, what it proves, and its test files."""

    name: str
    title: str
    paths: tuple[str, ...]


FAMILIES = (
    Family("escape", "escape cases, both resolvers",
           ("tests/confine/test_escape_cases.py",
            "tests/confine/test_hostile_layouts.py")),
    Family("http_cases", "HTTP bug cases against a live server",
           ("tests/api/test_http_cases.py", "tests/api/test_hardening_api.py")),
    Family("archive", "archive shapes: import cases and bombs",
           ("tests/api/test_archive_cases.py", "tests/api/test_import_api.py",
            "tests/storage/test_import_header_bombs.py")),
    Family("jwt", "JWT attacks, in the library and over HTTP",
           ("tests/auth/test_jwt_attacks.py", "tests/api/test_jwt_attacks_api.py")),
    Family("races", "race scenarios: symlink and hard-link swaps mid-request",
           ("tests/confine/test_races.py",)),
    Family("fuzz_model", "confined root against a model tree (hypothesis)",
           ("tests/proof/test_model_root.py",)),
    Family("fuzz_api", "every route of the OpenAPI document (schemathesis)",
           ("tests/proof/test_fuzz_api.py",)),
    Family("crash", "SIGKILL mid-write, restart, check every acknowledged byte",
           ("tests/proof/test_crash.py",)),
    Family("load", "64 clients, a realistic mix",
           ("tests/proof/test_load.py",)),
    Family("abuse", "slow clients, idle connections, a full disk",
           ("tests/proof/test_abuse.py",)),
)


@dataclass
class Result:
    """What one family's run gave."""

    name: str
    title: str
    passed: bool
    tests: int = 0
    failures: int = 0
    skipped: int = 0
    seconds: float = 0.0
    figures: dict[str, object] = field(default_factory=dict)
    failed_tests: list[str] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen families, write the report, exit 1 if any failed."""
    args = _parse(argv)
    PROOF_DIR.mkdir(exist_ok=True)
    (PROOF_DIR / FIGURES_FILE).unlink(missing_ok=True)
    chosen = [f for f in FAMILIES if not args.only or f.name in args.only]

    results = []
    for family in chosen:
        print(f"== {family.name}: {family.title}", flush=True)
        results.append(_run_family(family, args.profile))
    _attach_figures(results)

    _write_reports(results, args.profile)
    print((PROOF_DIR / "report.md").read_text())
    return 0 if all(r.passed for r in results) else 1


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="short")
    parser.add_argument("--only", nargs="*", metavar="FAMILY",
                        choices=[f.name for f in FAMILIES])
    return parser.parse_args(argv)


def _run_family(family: Family, profile: str) -> Result:
    """Run one family's tests in a fresh pytest process and read its JUnit XML."""
    junit = PROOF_DIR / f"{family.name}.xml"
    junit.unlink(missing_ok=True)
    env = {**os.environ, PROFILE_ENV: profile, PROOF_DIR_ENV: str(PROOF_DIR)}
    if profile == "long":
        env[RACE_LONG_ENV] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", *family.paths]

    started = time.monotonic()
    exit_code = subprocess.run(command, cwd=REPO, env=env, check=False).returncode
    result = Result(family.name, family.title, passed=False,
                    seconds=round(time.monotonic() - started, 1))

    if junit.exists():
        _read_junit(junit, result)
    # Exit code 5 is "no tests ran": a family that proved nothing fails.
    result.passed = exit_code == 0 and result.tests > result.skipped
    return result


def _read_junit(junit: Path, result: Result) -> None:
    for case in ET.parse(junit).getroot().iter("testcase"):
        result.tests += 1
        if case.find("skipped") is not None:
            result.skipped += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            result.failures += 1
            result.failed_tests.append(f"{case.get('classname')}::{case.get('name')}")


def _attach_figures(results: list[Result]) -> None:
    """Fold the recorded figures into each family.

    Numbers add up (latencies and memory take the worst), text is listed once
    per distinct value, and tables (dicts) are merged by row.
    """
    figures_path = PROOF_DIR / FIGURES_FILE
    if not figures_path.exists():
        return
    by_name = {r.name: r for r in results}
    for line in figures_path.read_text().splitlines():
        record = json.loads(line)
        result = by_name.get(record.pop("family"))
        if result is not None:
            _merge(result.figures, record)


def _merge(into: dict[str, object], record: dict[str, object]) -> None:
    for key, value in record.items():
        known = into.get(key)
        if isinstance(value, dict):
            into[key] = {**(known if isinstance(known, dict) else {}), **value}
        elif isinstance(value, bool) or not isinstance(value, int | float):
            listed = known if isinstance(known, list) else []
            if value not in listed:
                listed.append(value)
            into[key] = listed
        elif key.endswith(("max_ms", "_max", "p99_ms", "p50_ms", "_mb")):
            # Latencies and memory: the worst across records, never a sum.
            into[key] = max(value, known) if isinstance(known, int | float) else value
        else:
            into[key] = (known if isinstance(known, int | float) else 0) + value


def _write_reports(results: list[Result], profile: str) -> None:
    totals = {
        "families": len(results),
        "families_failed": sum(not r.passed for r in results),
        "tests": sum(r.tests for r in results),
        "failures": sum(r.failures for r in results),
        "skipped": sum(r.skipped for r in results),
        "seconds": round(sum(r.seconds for r in results), 1),
    }
    document = {"profile": profile, "totals": totals,
                "families": [asdict(r) for r in results]}
    (PROOF_DIR / "report.json").write_text(json.dumps(document, indent=1) + "\n")
    (PROOF_DIR / "report.md").write_text(_markdown(results, profile, totals))


def _markdown(results: list[Result], profile: str, totals: dict[str, int | float]
              ) -> str:
    lines = [f"# Strongroom proof ({profile} profile)", "",
             "| family | result | tests | failed | skipped | seconds | figures |",
             "| --- | --- | --: | --: | --: | --: | --- |"]
    for r in results:
        verdict = "pass" if r.passed else "**FAIL**"
        lines.append(f"| {r.name}: {r.title} | {verdict} | {r.tests} | {r.failures} "
                     f"| {r.skipped} | {r.seconds} | {_figure_text(r.figures)} |")
    lines.append(f"| **total** | {totals['families_failed']} of {totals['families']} "
                 f"failed | {totals['tests']} | {totals['failures']} "
                 f"| {totals['skipped']} | {totals['seconds']} | |")
    for r in results:
        for key, value in r.figures.items():
            if isinstance(value, dict):
                lines += ["", f"## {r.name}: {key}", "", *_detail_table(value)]
    failed = [t for r in results for t in r.failed_tests]
    if failed:
        lines += ["", "## Failed tests", "", *(f"- `{t}`" for t in failed)]
    return "\n".join(lines) + "\n"


def _figure_text(figures: dict[str, object]) -> str:
    parts = []
    for key, value in figures.items():
        if isinstance(value, dict):
            value = "(table below)"
        elif isinstance(value, list):
            more = " …" if len(value) > 6 else ""
            value = ", ".join(str(v) for v in value[:6]) + more
        elif isinstance(value, float):
            value = f"{value:,.1f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        parts.append(f"{key} {value}")
    return "; ".join(parts)


def _detail_table(rows: dict[str, object]) -> list[str]:
    """A nested figure (say, latency per operation) as a table of its own."""
    columns = sorted({k for row in rows.values() if isinstance(row, dict) for k in row})
    if not columns:
        return [f"- {name}: {row}" for name, row in rows.items()]
    lines = ["| | " + " | ".join(columns) + " |",
             "| --- |" + " --: |" * len(columns)]
    for name, row in rows.items():
        cells = row if isinstance(row, dict) else {}
        lines.append(f"| {name} | "
                     + " | ".join(str(cells.get(c, "")) for c in columns) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
