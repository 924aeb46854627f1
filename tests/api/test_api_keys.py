"""API keys for scripts, over HTTP: made by a login, scoped, revocable, mortal.

A key works as a bearer value on every route its scopes allow (the download
fast lane too), never beyond the scopes of the login that made it, and dies
when revoked, when it expires, and when its account's tokens are revoked. A key
can neither make keys nor stand in for a login's session routes.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from live_server import (
    ALICE_PASSWORD,
    API,
    PROBLEM_JSON,
    LiveServer,
    Reply,
    add_user,
    files_url,
)
from sqlalchemy import update

from strongroom.config import load_settings
from strongroom.storage import open_metadata_store
from strongroom.storage._schema import api_keys
from strongroom.storage.api_keys import MAX_KEYS_PER_USER

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


def login(server: LiveServer, user: str, password: str, scope: str = "") -> str:
    form = f"username={user}&password={quote(password)}"
    if scope:
        form += f"&scope={quote(scope)}"
    reply = server.request(
        "POST", f"{API}/token", body=form.encode(), token=None, headers=FORM
    )
    assert reply.status == 200, reply.body
    token = reply.json()["access_token"]  # type: ignore[index]
    assert isinstance(token, str)
    return token


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def make_key(
    server: LiveServer, token: str, scope: str, password: str = ALICE_PASSWORD,
    **extra: object,
) -> Reply:
    body = json.dumps(
        {"name": "backup script", "scope": scope, "password": password, **extra}
    ).encode()
    return server.request(
        "POST", f"{API}/account/keys", headers={**bearer(token), **JSON},
        body=body, token=None,
    )


def key_of(reply: Reply) -> str:
    assert reply.status == 201, reply.body
    key = reply.json()["key"]  # type: ignore[index]
    assert isinstance(key, str)
    return key


def new_user(server: LiveServer) -> tuple[str, str]:
    name, password = f"k{secrets.token_hex(4)}", f"pw-{secrets.token_hex(8)}"
    add_user(server.config_path, name, password, "user")
    return name, password


def get(server: LiveServer, path: str, value: str) -> Reply:
    return server.request("GET", path, headers=bearer(value), token=None)


def test_a_read_key_reads_but_cannot_write(server: LiveServer) -> None:
    (server.parent / "lab" / "a.txt").write_text("A")
    name, password = new_user(server)
    key = key_of(
        make_key(server, login(server, name, password), "files:read", password)
    )

    listing = get(server, f"{API}/spaces", key)
    download = get(server, files_url("lab", "a.txt"), key)
    write = server.request(
        "PUT", files_url("home", "x.txt"), headers=bearer(key), body=b"x", token=None
    )

    assert key.startswith("srk_") and len(key) > 60
    assert listing.status == 200
    assert download.status in (200, 404)  # lab is alice's and bob's space only
    assert write.status == 403
    assert write.header("www-authenticate") == (
        'Bearer error="insufficient_scope", scope="files:write"'
    )


def test_a_key_works_on_the_download_fast_lane(server: LiveServer) -> None:
    (server.parent / "lab" / "a.txt").write_text("fast")
    key = key_of(make_key(server, server.tokens["alice"], "files:read"))

    reply = get(server, files_url("lab", "a.txt"), key)

    assert reply.status == 200 and reply.body == b"fast"


def test_a_key_cannot_have_more_scopes_than_its_login(server: LiveServer) -> None:
    name, password = new_user(server)
    reader = login(server, name, password, "files:read")

    wider = make_key(server, reader, "files:read files:write", password)
    unknown = make_key(server, reader, "files:*", password)

    assert wider.status == 400 and unknown.status == 400
    assert wider.json()["code"] == "invalid_scope"  # type: ignore[index]


def test_a_listed_key_shows_no_secret_and_a_revoked_one_is_refused(
    server: LiveServer,
) -> None:
    name, password = new_user(server)
    token = login(server, name, password)
    made = make_key(server, token, "files:read", password)
    key, key_id = key_of(made), made.json()["id"]  # type: ignore[index]

    listed = get(server, f"{API}/account/keys", token).json()
    revoked = server.request(
        "DELETE", f"{API}/account/keys/{key_id}", headers=bearer(token), token=None
    )
    again = server.request(
        "DELETE", f"{API}/account/keys/{key_id}", headers=bearer(token), token=None
    )

    assert isinstance(listed, list) and [k["id"] for k in listed] == [key_id]
    assert listed[0]["key"] is None and key[-43:] not in json.dumps(listed)
    assert revoked.status == 204
    assert again.status == 404 and again.header("content-type") == PROBLEM_JSON
    assert get(server, f"{API}/spaces", key).status == 401


def test_another_users_key_cannot_be_revoked(server: LiveServer) -> None:
    name, password = new_user(server)
    made = make_key(server, login(server, name, password), "files:read", password)
    key_id = made.json()["id"]  # type: ignore[index]

    reply = server.request(
        "DELETE", f"{API}/account/keys/{key_id}",
        headers=bearer(server.tokens["alice"]), token=None,
    )

    assert reply.status == 404
    assert get(server, f"{API}/spaces", key_of(made)).status == 200


def test_a_key_cannot_make_keys_or_use_session_routes(server: LiveServer) -> None:
    key = key_of(make_key(server, server.tokens["alice"], "files:read"))

    replies = [
        make_key(server, key, "files:read"),
        get(server, f"{API}/account", key),
        get(server, f"{API}/account/keys", key),
        server.request("POST", f"{API}/logout", headers=bearer(key), token=None),
    ]

    # The key is valid, so not a 401: it is not allowed on these routes.
    assert [r.status for r in replies] == [403, 403, 403, 403]
    assert all(r.json()["code"] == "forbidden" for r in replies)  # type: ignore[index]


def test_an_unknown_key_on_a_session_route_is_a_401(server: LiveServer) -> None:
    unknown = "srk_" + "A" * 22 + "_" + "B" * 43

    reply = get(server, f"{API}/account", unknown)

    assert reply.status == 401
    assert reply.header("www-authenticate") == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    "change",
    [lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),
     lambda k: "srk_" + "A" * 22 + "_" + k[-43:],
     lambda k: k + "x", lambda k: "srk_", lambda k: k.replace("srk_", "SRK_")],
    ids=["secret-changed", "unknown-id", "longer", "prefix-only", "upper-prefix"],
)
def test_an_altered_key_is_refused(server: LiveServer, change: object) -> None:
    key = key_of(make_key(server, server.tokens["alice"], "files:read"))

    reply = get(server, f"{API}/spaces", change(key))  # type: ignore[operator]

    assert reply.status == 401
    assert reply.header("www-authenticate") == 'Bearer error="invalid_token"'


def test_a_key_needs_the_account_password(server: LiveServer) -> None:
    """A stolen access token alone cannot become a lasting credential."""
    name, password = new_user(server)
    token = login(server, name, password)

    wrong = make_key(server, token, "files:read", "not-the-password")

    assert wrong.status == 403 and wrong.header("content-type") == PROBLEM_JSON
    listed = get(server, f"{API}/account/keys", token).json()
    assert listed == []


def test_a_key_expires_in_90_days_unless_asked_otherwise(server: LiveServer) -> None:
    made = make_key(server, server.tokens["alice"], "files:read")
    week = make_key(server, server.tokens["alice"], "files:read", expires_in_days=7)

    def days(reply: Reply) -> float:
        end = datetime.fromisoformat(reply.json()["expires_at"])  # type: ignore[index]
        return (end - datetime.now(UTC)) / timedelta(days=1)

    assert 89.9 < days(made) <= 90
    assert 6.9 < days(week) <= 7


def test_an_expired_key_is_refused(server: LiveServer) -> None:
    made = make_key(server, server.tokens["alice"], "files:read", expires_in_days=1)
    key, key_id = key_of(made), made.json()["id"]  # type: ignore[index]
    assert made.json()["expires_at"]  # type: ignore[index]
    store = open_metadata_store(load_settings(str(server.config_path)).database_url)
    try:
        with store._engine.begin() as conn:
            conn.execute(
                update(api_keys).where(api_keys.c.id == key_id)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    finally:
        store.close()

    assert get(server, f"{API}/spaces", key).status == 401


def test_revoking_the_accounts_tokens_kills_its_keys(server: LiveServer) -> None:
    name, password = new_user(server)
    key = key_of(
        make_key(server, login(server, name, password), "files:read", password)
    )
    assert get(server, f"{API}/spaces", key).status == 200

    done = subprocess.run(
        [str(Path(sys.executable).with_name("strongroom")), "token", "revoke",
         "--user", name, "--config", str(server.config_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert done.returncode == 0, done.stderr
    assert get(server, f"{API}/spaces", key).status == 401


def test_an_account_holds_a_bounded_number_of_keys(server: LiveServer) -> None:
    name, password = new_user(server)
    token = login(server, name, password)
    for _ in range(MAX_KEYS_PER_USER):
        assert make_key(server, token, "files:read", password).status == 201

    reply = make_key(server, token, "files:read", password)

    assert reply.status == 409
    assert reply.json()["code"] == "too_many_api_keys"  # type: ignore[index]


@pytest.mark.parametrize(
    "body",
    [{"name": "", "scope": "files:read"}, {"name": "a\nb", "scope": "files:read"},
     {"name": "x" * 65, "scope": "files:read"}, {"scope": "files:read"},
     {"name": "n", "scope": "files:read", "expires_in_days": 0},
     {"name": "n", "scope": "files:read", "expires_in_days": None},
     {"name": "n", "scope": "files:read", "extra": 1},
     {"name": "n", "scope": "files:read", "password": None}],
    ids=["empty-name", "newline", "long-name", "no-name", "zero-days",
         "never-expires", "extra", "no-password"],
)
def test_a_bad_key_request_is_a_problem(server: LiveServer, body: dict) -> None:
    body = {"password": ALICE_PASSWORD, **body}
    if body["password"] is None:
        del body["password"]
    reply = server.request(
        "POST", f"{API}/account/keys", body=json.dumps(body).encode(), token=None,
        headers={**bearer(server.tokens["alice"]), **JSON},
    )

    assert reply.status == 422 and reply.header("content-type") == PROBLEM_JSON


def test_no_key_reaches_the_log(server: LiveServer) -> None:
    key = key_of(make_key(server, server.tokens["alice"], "files:read"))
    get(server, f"{API}/spaces", key)
    get(server, f"{API}/spaces", key[:-2] + "zz")

    log = server.log_text()

    assert key not in log and key[-43:] not in log
