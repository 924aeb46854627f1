"""The OpenAPI document declares the answers the server really gives (issue 7).

Regressions found by the schemathesis fuzzer (tests/proof/test_fuzz_api.py): the
document declared only success statuses and FastAPI's own 422 shape, so every
problem+json error was an undeclared status or content type; the tus routes did
not mention the headers they require; nothing linked an upload to what can be
done with the file next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_server import API, PROBLEM_JSON, LiveServer

PROBLEM_FIELDS = {"type", "title", "status", "code", "detail"}
METHODS = {"get", "head", "put", "post", "patch", "delete"}


def test_every_error_an_operation_declares_is_problem_json(
    server: LiveServer,
) -> None:
    document = _document(server)

    wrong = [
        f"{label} {status}: {sorted(response.get('content', {}))}"
        for label, operation in _operations(document)
        for status, response in operation["responses"].items()
        if status[0] in "45" and not _is_problem(response)
    ]

    assert wrong == []


def test_no_operation_declares_fastapis_validation_shape(server: LiveServer) -> None:
    """A validation error is a problem with `errors`, never `{"detail": [...]}`."""
    document = _document(server)

    schemas = document.get("components", {}).get("schemas", {})

    assert "HTTPValidationError" not in schemas
    assert all(
        _is_problem(operation["responses"]["422"])
        for _, operation in _operations(document)
        if "422" in operation["responses"]
    )


def test_every_private_operation_declares_401_and_403(server: LiveServer) -> None:
    document = _document(server)

    missing = [
        label for label, operation in _operations(document)
        if operation.get("security")
        and not {"401", "403"} <= set(operation["responses"])
    ]

    assert missing == []


FILE = f"{API}/spaces/{{space}}/files/{{path}}"


@pytest.mark.parametrize(
    ("method", "raw_path", "template", "status"),
    [
        ("GET", f"{API}/spaces/lab/files/a%01b", FILE, 400),
        ("GET", f"{API}/spaces/lab/files/missing.txt", FILE, 404),
        ("DELETE", f"{API}/spaces/no-such-space/files/a.txt", FILE, 404),
        ("GET", f"{API}/spaces/lab/meta/missing.txt",
         f"{API}/spaces/{{space}}/meta/{{path}}", 404),
        ("POST", f"{API}/admin/users/nobody/revoke",
         f"{API}/admin/users/{{name}}/revoke", 404),
        ("POST", f"{API}/uploads", f"{API}/uploads", 412),
    ],
    ids=["control-char", "no-file", "no-space", "no-meta", "no-user", "no-tus"],
)
def test_a_refused_request_answers_a_status_its_operation_declares(
    server: LiveServer, method: str, raw_path: str, template: str, status: int
) -> None:
    document = _document(server)
    token = "bob" if "/admin/" in raw_path else "alice"

    reply = server.request(method, raw_path, token=token)

    declared = document["paths"][template][method.lower()]["responses"]
    assert reply.status == status, reply.body[:300]
    assert reply.header("Content-Type") == PROBLEM_JSON
    assert str(status) in declared


def test_tus_operations_declare_the_headers_they_require(server: LiveServer) -> None:
    document = _document(server)
    create = document["paths"][f"{API}/uploads"]["post"]
    append = document["paths"][f"{API}/uploads/{{upload_id}}"]["patch"]

    required = {
        name: {p["name"] for p in op["parameters"] if p.get("required")}
        for name, op in (("create", create), ("append", append))
    }

    assert required["create"] >= {"Tus-Resumable", "Upload-Length"}
    assert required["append"] >= {"Tus-Resumable", "Upload-Offset", "upload_id"}
    assert "application/offset+octet-stream" in append["requestBody"]["content"]


def test_an_upload_links_to_operations_that_exist(server: LiveServer) -> None:
    document = _document(server)
    ids = {operation["operationId"] for _, operation in _operations(document)}
    put = document["paths"][f"{API}/spaces/{{space}}/files/{{path}}"]["put"]

    links = {
        name: link["operationId"]
        for status in ("200", "201")
        for name, link in put["responses"][status]["links"].items()
    }

    assert set(links) == {"Download", "DownloadHead", "Describe", "Delete", "Move",
                          "Share"}
    assert set(links.values()) <= ids


def _document(server: LiveServer) -> dict:
    reply = server.request("GET", "/openapi.json", token=None)
    assert reply.status == 200
    document = reply.json()
    assert isinstance(document, dict)
    return document


def _operations(document: dict) -> Iterator[tuple[str, dict]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation


def _is_problem(response: dict) -> bool:
    content = response.get("content", {})
    if set(content) != {PROBLEM_JSON}:
        return False
    schema = content[PROBLEM_JSON].get("schema", {})
    return set(schema.get("required", ())) >= PROBLEM_FIELDS
