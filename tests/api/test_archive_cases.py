"""Every shared archive case, and its tar or zip twin, posted to a live server.

The cases (tests/data/archive-cases.json) use the layout and judging of the HTTP
cases (see `http_cases.py`). Each trick is also tried in the other archive
format: the twin of a tar case is a zip whose entries carry the same types in
their Unix mode bits, and the twin of a zip case is a tar; a name that only one
format can hide (a pax `path` record, a zip local header) becomes the twin's
plain member name. Cases run in `lab` and in alice's `home`.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from http_cases import (
    ARCHIVE_CASES_FILE,
    CaseRun,
    has_home_shape,
    run_case,
)
from live_server import LiveServer


def _twin(case: dict[str, Any]) -> dict[str, Any]:
    twin = copy.deepcopy(case)
    twin["id"] = f"{case['id']}-twin"
    for request in twin["requests"]:
        kind = request["body_kind"]
        if kind not in ("tar", "zip"):
            continue
        request["body_kind"] = "zip" if kind == "tar" else "tar"
        request.pop("format", None)
        for member in request["archive_members"]:
            hidden = member.pop("pax_path", None) or member.pop(
                "local_header_name", None)
            if hidden:
                member["name"] = hidden
    return twin


def _load() -> dict[str, dict[str, Any]]:
    from http_cases import load_cases

    cases = load_cases(ARCHIVE_CASES_FILE)
    every = cases + [_twin(case) for case in cases]
    return {case["id"]: case for case in every}


CASES = _load()
_RUNS: dict[tuple[int, str, str], CaseRun] = {}


def _params(variant: str) -> list[Any]:
    return [
        pytest.param(case_id, index, id=f"{case_id}#{index}")
        for case_id, case in CASES.items()
        for index, request in enumerate(case["requests"])
        if variant == "lab" or has_home_shape(request)
    ]


def _run(server: LiveServer, variant: str, case_id: str) -> CaseRun:
    case = CASES[case_id]
    if case.get("hold"):
        pytest.skip(f"{case_id} is on hold in the case file")
    key = (server.port, variant, case_id)
    if key not in _RUNS:
        _RUNS[key] = run_case(server, case, variant)
    return _RUNS[key]


@pytest.mark.parametrize("variant", ["lab", "home"])
@pytest.mark.parametrize("case_id", list(CASES))
def test_archive_case_leaves_the_space_and_its_surroundings_as_required(
    live_server: LiveServer, variant: str, case_id: str
) -> None:
    run = _run(live_server, variant, case_id)

    assert not run.final_violations, "\n".join(run.final_violations)


@pytest.mark.parametrize(("case_id", "index"), _params("lab"))
def test_lab_archive_request_gets_an_allowed_answer(
    live_server: LiveServer, case_id: str, index: int
) -> None:
    outcome = _run(live_server, "lab", case_id).outcomes[index]

    assert not outcome.violations, outcome.report()


@pytest.mark.parametrize(("case_id", "index"), _params("home"))
def test_home_archive_request_gets_an_allowed_answer(
    live_server: LiveServer, case_id: str, index: int
) -> None:
    outcome = _run(live_server, "home", case_id).outcomes[index]

    assert not outcome.violations, outcome.report()
