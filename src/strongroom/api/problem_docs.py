"""How the OpenAPI document describes error answers: problem+json, status by status.

Every error the API gives is an RFC 9457 problem (problems.py builds them), but
FastAPI only documents the success status and its own 422 shape (a JSON `detail`
list we never send). A client generated from the document, or a fuzzer holding
answers to it (tests/proof/test_fuzz_api.py), would then meet statuses and a
content type the document never mentions. Each router passes the statuses its
routes can answer with to `problem_responses`, which documents them all as
`application/problem+json` with the problem's fields; declaring 422 here also keeps
FastAPI from adding its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from strongroom.api.problems import PROBLEM_TYPE

__all__ = [
    "AUTHENTICATED",
    "PATH_ERRORS",
    "ProblemOut",
    "problem_responses",
]

# Every route behind a bearer token: none or a bad one (401), a token without
# the route's scope or a user without the right (403).
AUTHENTICATED = (401, 403)
# Every route that takes a path in a space: a refused path (400, 403), no such
# space or entry (404), the wrong kind of entry (409), damaged content (410), an
# unreachable blob store (503).
PATH_ERRORS = (400, 403, 404, 409, 410, 503)
# Reason phrases as the problems' titles say them: RFC 9110 renamed 413 and 422
# after Python's HTTPStatus took the older names, and tus 1.0's checksum
# extension adds 460.
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content",
           460: "Checksum Mismatch"}


class ProblemOut(BaseModel):
    """An RFC 9457 problem, the body of every error answer.

    Some problems carry more members (a validation error's `errors` list), so
    members beyond these are allowed.
    """

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="about:blank, with the code as its fragment")
    title: str = Field(description="the status's reason phrase")
    status: int
    code: str = Field(description="stable error code that clients can branch on")
    detail: str = Field(description="what was wrong, in terms of the request")


_PROBLEM_SCHEMA = ProblemOut.model_json_schema()


def problem_responses(
    *statuses: int, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """Return FastAPI `responses` entries documenting `statuses` as problems.

    `descriptions` says what a status means for one route (the reason phrase
    otherwise). A route's own entry replaces its router's for the same status,
    so a route that describes a status passes it here rather than as a bare dict.
    The schema is written inline rather than as a shared component: a router
    cannot add components, and the document stays valid either way.
    """
    described = descriptions or {}
    return {
        status: {
            "description": described.get(status, _title(status)),
            "content": {PROBLEM_TYPE: {"schema": _PROBLEM_SCHEMA}},
        }
        for status in sorted({*statuses, *described})
    }


def _title(status: int) -> str:
    return _TITLES.get(status) or HTTPStatus(status).phrase
