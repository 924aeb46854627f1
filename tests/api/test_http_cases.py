"""Every shared HTTP case, request by request, against a live server per resolver.

A case runs once per resolver and space variant (its requests depend on each
other: a PUT, then the GET of what it stored); each request's verdict is then its
own test, named `<case>#<request index>`, and the state left at the end is one
more test per case. See `http_cases.py` for the layout and placeholder rules and
`case_checks.py` for how each expectation is judged.
"""

from __future__ import annotations

from typing import Any

import pytest
from http_cases import CaseRun, has_home_shape, load_cases, run_case
from live_server import LiveServer

CASES = {case["id"]: case for case in load_cases()}
# Product bugs the cases expose, by (variant, case id, request index); index None
# marks the final-state test. Each stays strict: a fix turns it into a failure
# here, and the entry must then go.
KNOWN_BUGS: dict[tuple[str, str, int | None], str] = {}

_RUNS: dict[tuple[int, str, str], CaseRun] = {}


def _params(variant: str) -> list[Any]:
    params = []
    for case in CASES.values():
        for index, request in enumerate(case["requests"]):
            if variant == "home" and not has_home_shape(request):
                continue
            params.append(_param(variant, case["id"], index))
    return params


def _final_params(variant: str) -> list[Any]:
    return [
        _param(variant, case["id"], None) for case in CASES.values()
        if variant == "lab" or any(has_home_shape(r) for r in case["requests"])
    ]


def _param(variant: str, case_id: str, index: int | None) -> Any:
    reason = KNOWN_BUGS.get((variant, case_id, index))
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    name = case_id if index is None else f"{case_id}#{index}"
    return pytest.param(case_id, index, id=name, marks=marks)


def _run(server: LiveServer, variant: str, case_id: str) -> CaseRun:
    case = CASES[case_id]
    if case.get("hold"):
        pytest.skip(f"{case_id} is on hold in the case file")
    key = (server.port, variant, case_id)
    if key not in _RUNS:
        _RUNS[key] = run_case(server, case, variant)
    return _RUNS[key]


def _check_request(server: LiveServer, variant: str, case_id: str, index: int) -> None:
    outcome = _run(server, variant, case_id).outcomes[index]

    assert not outcome.violations, outcome.report()


def _check_final_state(server: LiveServer, variant: str, case_id: str) -> None:
    run = _run(server, variant, case_id)

    assert not run.final_violations, "\n".join(run.final_violations)


@pytest.mark.parametrize(("case_id", "index"), _params("lab"))
def test_lab_request_gets_an_allowed_answer_and_reaches_nothing_outside(
    live_server: LiveServer, case_id: str, index: int
) -> None:
    _check_request(live_server, "lab", case_id, index)


@pytest.mark.parametrize(("case_id", "index"), _final_params("lab"))
def test_lab_case_leaves_the_space_and_its_surroundings_as_required(
    live_server: LiveServer, case_id: str, index: None
) -> None:
    _check_final_state(live_server, "lab", case_id)


@pytest.mark.parametrize(("case_id", "index"), _params("home"))
def test_home_request_gets_an_allowed_answer_and_reaches_nothing_outside(
    live_server: LiveServer, case_id: str, index: int
) -> None:
    _check_request(live_server, "home", case_id, index)


@pytest.mark.parametrize(("case_id", "index"), _final_params("home"))
def test_home_case_leaves_the_space_and_its_surroundings_as_required(
    live_server: LiveServer, case_id: str, index: None
) -> None:
    _check_final_state(live_server, "home", case_id)
