"""Spaces as a whole: who sees which, read-only spaces, private homes, errors.

Runs once per resolver; see test_files_api.py for the routes inside a space.
"""

from __future__ import annotations

import forged_tokens
import pytest
from live_server import (
    API,
    MAX_UPLOAD_BYTES,
    PROBLEM_JSON,
    LiveServer,
    files_url,
    snapshot_tree,
)

# GET /spaces


def test_spaces_lists_home_first_then_alices_spaces_with_kind_and_mode(
    server: LiveServer,
) -> None:
    reply = server.request("GET", f"{API}/spaces")

    assert reply.status == 200
    assert reply.json() == [
        {"name": "home", "kind": "home", "mode": "rw"},
        {"name": "docs-ro", "kind": "directory", "mode": "ro"},
        {"name": "lab", "kind": "directory", "mode": "rw"},
        {"name": "team", "kind": "directory", "mode": "rw"},
    ]


def test_spaces_gives_bob_the_admin_space_and_his_own_but_not_team(
    server: LiveServer,
) -> None:
    reply = server.request("GET", f"{API}/spaces", token="bob")

    names = [s["name"] for s in reply.json()]  # type: ignore[union-attr]
    assert names == ["home", "bob", "docs-ro", "lab", "ops"]


@pytest.mark.parametrize("name", ["ops", "bob", "nosuch", "BOB", "Lab", "home2"])
def test_space_alice_may_not_use_answers_404_like_a_missing_one(
    server: LiveServer, name: str
) -> None:
    reply = server.request("GET", f"{API}/spaces/{name}/list")

    assert reply.status == 404
    assert reply.header("content-type") == PROBLEM_JSON


# Read-only space


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [("PUT", "files/new.txt", b"x"), ("PUT", "files/seed.txt", b"x"),
     ("POST", "dirs/newdir", None), ("DELETE", "files/seed.txt", None),
     ("POST", "move", b'{"from": "seed.txt", "to": "moved.txt"}')],
    ids=["put-new", "put-replace", "mkdir", "delete", "move"],
)
def test_writes_to_a_read_only_space_are_403_and_change_nothing(
    server: LiveServer, method: str, route: str, body: bytes | None
) -> None:
    (server.parent / "docs-ro" / "seed.txt").write_text("SEED")
    before = snapshot_tree(server.parent / "docs-ro")

    reply = server.request(method, f"{API}/spaces/docs-ro/{route}", body=body,
                           headers={"Content-Type": "application/json"})

    assert reply.status == 403
    assert snapshot_tree(server.parent / "docs-ro") == before


def test_a_read_only_space_still_serves_its_files(server: LiveServer) -> None:
    (server.parent / "docs-ro" / "seed.txt").write_text("SEED")

    reply = server.request("GET", files_url("docs-ro", "seed.txt"))

    assert reply.body == b"SEED"


# Errors


ERROR_REQUESTS = {
    "400-bad-path": ("GET", files_url("lab", "a%00b"), "alice"),
    "401-no-token": ("GET", files_url("lab", "a.txt"), None),
    "403-read-only": ("PUT", files_url("docs-ro", "a.txt"), "alice"),
    "403-escape": ("GET", files_url("lab", "..%2Foutside%2Fsecret.txt"), "alice"),
    "404-missing-file": ("GET", files_url("lab", "missing.txt"), "alice"),
    "404-missing-space": ("GET", files_url("nosuch", "a.txt"), "alice"),
    "404-no-route": ("GET", f"{API}/nothing", "alice"),
    "405-method": ("PATCH", files_url("lab", "a.txt"), "alice"),
    "409-folder": ("PUT", files_url("lab", "docs"), "alice"),
    "412-exists": ("PUT", files_url("lab", "a.txt"), "alice"),
    "413-too-big": ("PUT", files_url("lab", "big.bin"), "alice"),
    "416-range": ("GET", files_url("lab", "a.txt"), "alice"),
    "422-limit": ("GET", f"{API}/spaces/lab/list?limit=0", "alice"),
}
_ERROR_HEADERS = {
    "412-exists": {"If-None-Match": "*"}, "416-range": {"Range": "bytes=99-"},
}


@pytest.mark.parametrize("kind", list(ERROR_REQUESTS))
def test_every_error_is_problem_json_with_a_detail(
    server: LiveServer, kind: str
) -> None:
    (server.parent / "lab" / "docs").mkdir()
    (server.parent / "lab" / "a.txt").write_text("A")
    method, path, token = ERROR_REQUESTS[kind]
    body = b"x" * (MAX_UPLOAD_BYTES + 1) if kind == "413-too-big" else None

    reply = server.request(method, path, token=token, body=body,
                           headers=_ERROR_HEADERS.get(kind, {}))

    assert reply.status == int(kind[:3])
    assert reply.header("content-type") == PROBLEM_JSON
    problem = reply.json()
    assert isinstance(problem, dict) and problem["status"] == reply.status
    assert isinstance(problem["detail"], str) and problem["detail"]


def test_error_details_name_no_host_path(server: LiveServer) -> None:
    reply = server.request("GET", files_url("lab", "..%2F..%2Fetc%2Fpasswd"))

    assert str(server.parent).encode() not in reply.body
    assert reply.status in (400, 403)


# Homes are private


ALICE_PLAN = b"ALICE-PRIVATE-PLAN"


def test_bob_cannot_see_or_reach_alices_home_by_any_path(server: LiveServer) -> None:
    server.reset_home("alice")
    server.reset_home("bob")
    assert server.put("home", "secret/plan.txt", ALICE_PLAN).status == 201
    alice_id = _user_id(server, "alice")
    attempts = [
        ("GET", files_url("home", "secret/plan.txt")),
        ("GET", f"{API}/spaces/home/meta/secret/plan.txt"),
        ("GET", f"{API}/spaces/home/list/secret"),
        ("GET", files_url("home", "..%2Falice%2Fsecret%2Fplan.txt")),
        ("GET", files_url("home", f"..%2F{alice_id}%2Fsecret%2Fplan.txt")),
        ("GET", files_url("alice", "secret/plan.txt")),
        ("GET", files_url("home:alice", "secret/plan.txt")),
        ("GET", files_url("home%2Falice", "secret/plan.txt")),
        ("GET", files_url("Home", "secret/plan.txt")),
        ("GET", f"{files_url('home', 'secret/plan.txt')}?user=alice&owner={alice_id}"),
        ("DELETE", files_url("home", "secret/plan.txt")),
    ]
    listings = [f"{API}/spaces/home/list", f"{API}/spaces/home/list?owner=alice",
                f"{API}/spaces/home/list?user={alice_id}"]

    replies = [server.request(m, p, token="bob") for m, p in attempts]
    bob_moves = server.move(
        "home", {"from": "secret/plan.txt", "to": "x.txt"}, token="bob")
    bob_lists = [server.request("GET", p, token="bob") for p in listings]

    for (method, path), reply in zip(attempts, replies, strict=True):
        assert reply.status in (400, 403, 404), (method, path, reply.status)
        assert ALICE_PLAN not in reply.body, (method, path)
    assert bob_moves.status in (400, 403, 404)
    assert [r.json()["entries"] for r in bob_lists] == [[], [], []]  # type: ignore[index]
    alices = server.request("GET", files_url("home", "secret/plan.txt"))
    assert alices.body == ALICE_PLAN


def test_same_name_in_two_homes_holds_two_files(server: LiveServer) -> None:
    server.reset_home("alice")
    server.reset_home("bob")

    server.put("home", "notes.txt", b"ALICE")
    server.put("home", "notes.txt", b"BOB", token="bob")

    assert server.request("GET", files_url("home", "notes.txt")).body == b"ALICE"
    bobs = server.request("GET", files_url("home", "notes.txt"), token="bob")
    assert bobs.body == b"BOB"


def _user_id(server: LiveServer, name: str) -> int:
    return forged_tokens.user_id_of(server.tokens[name])
