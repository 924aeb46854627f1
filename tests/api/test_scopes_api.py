"""Scopes over HTTP: asked for at login, carried by the token, demanded per route.

TOK-04 of tests/data/jwt-attacks.json and the kinds around it: a user asking
for a scope the role does not hold, malformed and unknown scope values, a token
with too few scopes on every kind of route (the download fast lane included), a
key holder minting an admin-scoped token for a plain user, and the revocations
that must follow a role change, a disable and an explicit revoke.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import quote

import forged_tokens
import pytest
from live_server import (
    ALICE_PASSWORD,
    API,
    CONFIG,
    PROBLEM_JSON,
    SPACE_DIRS,
    LiveServer,
    Reply,
    add_user,
    files_url,
    run_server,
)

from jwt_forgery import unb64

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
USER_SCOPES = "files:read files:write shares"
ADMIN_SCOPES = "admin files:read files:write shares"


def login(server: LiveServer, user: str, password: str, scope: str | None) -> Reply:
    form = f"username={user}&password={quote(password)}"
    if scope is not None:
        form += f"&scope={quote(scope)}"
    return server.request(
        "POST", f"{API}/token", body=form.encode(), token=None, headers=FORM
    )


def bearer(reply: Reply) -> dict[str, str]:
    assert reply.status == 200, reply.body
    token = reply.json()["access_token"]  # type: ignore[index]
    return {"Authorization": f"Bearer {token}"}


def claims(reply: Reply) -> dict[str, object]:
    token = reply.json()["access_token"]  # type: ignore[index]
    value = json.loads(unb64(token.split(".")[1]))
    assert isinstance(value, dict)
    return value


def assert_insufficient(reply: Reply, scope: str) -> None:
    assert reply.status == 403, reply.body
    assert reply.header("content-type") == PROBLEM_JSON
    assert reply.header("www-authenticate") == (
        f'Bearer error="insufficient_scope", scope="{scope}"'
    )
    if reply.body:  # a HEAD answer has none
        assert reply.json()["code"] == "insufficient_scope"  # type: ignore[index]


def new_user(server: LiveServer, role: str = "user") -> tuple[str, str]:
    name = f"u{secrets.token_hex(4)}"
    password = f"pw-{secrets.token_hex(8)}"
    add_user(server.config_path, name, password, role)
    return name, password


# What each scope opens: (method, path, body, scope it needs).
ROUTES = [
    ("GET", f"{API}/spaces", None, "files:read"),
    ("GET", f"{API}/spaces/lab/list", None, "files:read"),
    ("GET", f"{API}/spaces/lab/meta/a.txt", None, "files:read"),
    ("GET", files_url("lab", "a.txt"), None, "files:read"),  # the fast lane
    ("HEAD", files_url("lab", "a.txt"), None, "files:read"),
    ("GET", f"{API}/spaces/lab/archive", None, "files:read"),
    ("PUT", files_url("lab", "new.txt"), b"x", "files:write"),
    ("POST", f"{API}/spaces/lab/dirs/newdir", None, "files:write"),
    ("DELETE", files_url("lab", "a.txt"), None, "files:write"),
    ("POST", f"{API}/spaces/lab/import", b"", "files:write"),
    ("GET", f"{API}/admin/users", None, "admin"),
    ("POST", f"{API}/admin/users/no-such-user/revoke", None, "admin"),
]


def test_a_login_without_scope_gets_all_its_role_holds(server: LiveServer) -> None:
    user = login(server, "alice", ALICE_PASSWORD, None)
    name, password = new_user(server, "admin")
    admin = login(server, name, password, None)

    assert user.json()["scope"] == USER_SCOPES  # type: ignore[index]
    assert claims(user)["scope"] == USER_SCOPES
    assert admin.json()["scope"] == ADMIN_SCOPES  # type: ignore[index]


def test_tok_04_a_user_asking_for_admin_is_refused(server: LiveServer) -> None:
    """[TOK-04] Alice (no admin role) asks for admin: 400 invalid_scope, no token."""
    reply = login(server, "alice", ALICE_PASSWORD, "files:read files:write admin")

    assert reply.status == 400, reply.body
    assert reply.header("content-type") == PROBLEM_JSON
    assert reply.json()["code"] == "invalid_scope"  # type: ignore[index]
    assert "access_token" not in reply.json()  # type: ignore[operator]


@pytest.mark.parametrize(
    "scope",
    ["files:*", "*", "admin ", " files:read", "files:read  shares", "FILES:READ",
     "files:read\tshares", "openid", " ".join(["admin"] * 1000),
     " ".join(["files:read"] * 1000)],
    ids=["wildcard-files", "star", "trailing-space", "leading-space",
         "double-space", "upper-case", "tab", "unknown", "admin-x1000",
         "read-x1000"],
)
def test_tok_04_malformed_and_unknown_scopes_are_refused(
    server: LiveServer, scope: str
) -> None:
    """[TOK-04] Unknown values are refused, never dropped or passed through."""
    reply = login(server, "alice", ALICE_PASSWORD, scope)

    assert reply.status == 400, reply.body
    assert reply.json()["code"] == "invalid_scope"  # type: ignore[index]


def test_tok_04_the_users_token_is_refused_by_admin_routes(
    server: LiveServer,
) -> None:
    """[TOK-04] The token alice does get carries no admin scope: 403."""
    reply = server.request("GET", f"{API}/admin/users")

    assert_insufficient(reply, "admin")


def test_a_wrong_password_with_a_bad_scope_reveals_nothing_about_the_user(
    server: LiveServer,
) -> None:
    """The role check runs after the password: no probing who is an admin."""
    reply = login(server, "alice", "wrong-password-0", "admin")

    assert reply.status == 401


@pytest.mark.parametrize(("method", "path", "body", "needs"), ROUTES)
def test_each_route_demands_its_scope(
    server: LiveServer, method: str, path: str, body: bytes | None, needs: str
) -> None:
    (server.parent / "lab" / "a.txt").write_text("A")
    name, password = new_user(server, "admin")
    others = {"files:read", "files:write", "shares", "admin"} - {needs}
    without = bearer(login(server, name, password, " ".join(sorted(others))))
    only = bearer(login(server, name, password, needs))

    refused = server.request(method, path, headers=without, body=body, token=None)
    allowed = server.request(method, path, headers=only, body=body, token=None)

    assert_insufficient(refused, needs)
    assert allowed.status not in (401, 403), (allowed.status, allowed.body)


def test_a_read_only_token_cannot_write_but_can_read(server: LiveServer) -> None:
    (server.parent / "lab" / "a.txt").write_text("A")
    reader = bearer(login(server, "alice", ALICE_PASSWORD, "files:read"))

    read = server.request("GET", files_url("lab", "a.txt"), headers=reader, token=None)
    write = server.request(
        "PUT", files_url("lab", "a.txt"), headers=reader, body=b"B", token=None
    )

    assert read.status == 200 and read.body == b"A"
    assert_insufficient(write, "files:write")
    assert (server.parent / "lab" / "a.txt").read_text() == "A"


def test_a_forged_admin_scope_for_a_plain_user_is_refused(server: LiveServer) -> None:
    """Even with the signing key, a user's token cannot open admin routes.

    The route checks the user's current role as well as the token's scope.
    """
    secret = forged_tokens.server_secret(server.data_dir)
    real = claims(login(server, "alice", ALICE_PASSWORD, None))
    forged = forged_tokens.signed({**real, "scope": ADMIN_SCOPES}, secret)

    reply = server.request(
        "GET", f"{API}/admin/users", token=None,
        headers={"Authorization": f"Bearer {forged}"},
    )

    assert_insufficient(reply, "admin")


@pytest.mark.parametrize(
    "scope", [None, 7, ["files:read"], "files:read  admin", "root", ""],
    ids=["missing", "number", "list", "double-space", "unknown", "empty"],
)
def test_a_token_with_a_bad_scope_claim_is_401(
    server: LiveServer, scope: object
) -> None:
    secret = forged_tokens.server_secret(server.data_dir)
    real = claims(login(server, "alice", ALICE_PASSWORD, None))
    changed = {**real, "scope": scope}
    if scope is None:
        del changed["scope"]

    reply = server.request(
        "GET", f"{API}/spaces", token=None,
        headers={"Authorization": f"Bearer {forged_tokens.signed(changed, secret)}"},
    )

    assert reply.status == 401
    assert reply.header("www-authenticate") == 'Bearer error="invalid_token"'


def test_a_refresh_keeps_the_scopes_asked_for_at_login(server: LiveServer) -> None:
    first = login(server, "alice", ALICE_PASSWORD, "files:read")
    refresh = first.json()["refresh_token"]  # type: ignore[index]

    again = server.request(
        "POST", f"{API}/token/refresh", token=None, headers=FORM,
        body=f"refresh_token={refresh}".encode(),
    )

    assert again.json()["scope"] == "files:read"  # type: ignore[index]
    assert claims(again)["scope"] == "files:read"


def test_a_role_change_revokes_access_and_refresh_tokens(server: LiveServer) -> None:
    name, password = new_user(server, "admin")
    victim = login(server, name, password, None)
    admin = {"Authorization": f"Bearer {server.tokens['bob']}"}

    demoted = server.request(
        "PATCH", f"{API}/admin/users/{name}", token=None,
        headers={**admin, **JSON}, body=b'{"role": "user"}',
    )
    old_access = server.request(
        "GET", f"{API}/spaces", headers=bearer(victim), token=None
    )
    old_refresh = server.request(
        "POST", f"{API}/token/refresh", token=None, headers=FORM,
        body=f"refresh_token={victim.json()['refresh_token']}".encode(),  # type: ignore[index]
    )
    relogin = login(server, name, password, None)

    assert demoted.status == 200 and demoted.json()["role"] == "user"  # type: ignore[index]
    assert old_access.status == 401
    assert old_refresh.status == 400
    assert relogin.json()["scope"] == USER_SCOPES  # type: ignore[index]


@pytest.mark.parametrize("how", ["revoke", "disable"])
def test_an_admin_revoke_or_disable_refuses_every_token(
    server: LiveServer, how: str
) -> None:
    name, password = new_user(server)
    sessions = [login(server, name, password, None) for _ in range(2)]
    admin = {"Authorization": f"Bearer {server.tokens['bob']}"}

    if how == "revoke":
        done = server.request(
            "POST", f"{API}/admin/users/{name}/revoke", headers=admin, token=None
        )
        assert done.status == 204
    else:
        done = server.request(
            "PATCH", f"{API}/admin/users/{name}", token=None,
            headers={**admin, **JSON}, body=b'{"active": false}',
        )
        assert done.status == 200 and done.json()["active"] is False  # type: ignore[index]

    for session in sessions:
        reply = server.request(
            "GET", f"{API}/spaces", headers=bearer(session), token=None
        )
        assert reply.status == 401
        # The reason as it is: a disabled account still exists.
        said = "it was revoked" if how == "revoke" else "the account is disabled"
        assert said in reply.json()["detail"]  # type: ignore[index]
    relogin = login(server, name, password, None)
    assert relogin.status == (200 if how == "revoke" else 401)


def test_admin_routes_answer_problems_for_bad_input(server: LiveServer) -> None:
    admin = {"Authorization": f"Bearer {server.tokens['bob']}", **JSON}

    unknown = server.request(
        "PATCH", f"{API}/admin/users/nobody-here", headers=admin, token=None,
        body=b'{"role": "admin"}',
    )
    bad_role = server.request(
        "PATCH", f"{API}/admin/users/alice", headers=admin, token=None,
        body=b'{"role": "root"}',
    )
    bad_name = server.request(
        "POST", f"{API}/admin/users", headers=admin, token=None,
        body=b'{"name": "../etc", "password": "long-enough-pw"}',
    )
    taken = server.request(
        "POST", f"{API}/admin/users", headers=admin, token=None,
        body=b'{"name": "alice", "password": "long-enough-pw"}',
    )

    assert unknown.status == 404
    assert bad_role.status == 422
    assert bad_name.status == 422
    assert taken.status == 409
    for reply in (unknown, bad_role, bad_name, taken):
        assert reply.header("content-type") == PROBLEM_JSON


def test_an_admin_creates_a_user_who_can_log_in(server: LiveServer) -> None:
    admin = {"Authorization": f"Bearer {server.tokens['bob']}", **JSON}
    name = f"n{secrets.token_hex(4)}"

    made = server.request(
        "POST", f"{API}/admin/users", headers=admin, token=None,
        body=json.dumps({"name": name, "password": "fresh-password-1"}).encode(),
    )
    listed = server.request("GET", f"{API}/admin/users", headers=admin, token=None)

    assert made.status == 201 and made.json()["role"] == "user"  # type: ignore[index]
    assert name in [u["name"] for u in listed.json()]  # type: ignore[union-attr]
    assert login(server, name, "fresh-password-1", None).status == 200


def test_the_account_route_names_the_tokens_scopes(server: LiveServer) -> None:
    server.reset_home("alice")  # used_bytes counts what earlier tests left
    reader = bearer(login(server, "alice", ALICE_PASSWORD, "files:read"))

    reply = server.request("GET", f"{API}/account", headers=reader, token=None)

    assert reply.json() == {  # type: ignore[comparison-overlap]
        "name": "alice", "role": "user", "scopes": ["files:read"],
        "used_bytes": 0, "quota_bytes": None,
    }


def test_a_password_change_ends_every_session(server: LiveServer) -> None:
    name, password = new_user(server)
    first, second = (login(server, name, password, None) for _ in range(2))
    change = json.dumps(
        {"current_password": password, "new_password": "a-new-password-9"}
    ).encode()

    wrong = server.request(
        "POST", f"{API}/account/password", token=None,
        headers={**bearer(first), **JSON},
        body=json.dumps(
            {"current_password": "not-it-at-all", "new_password": "x" * 20}
        ).encode(),
    )
    done = server.request(
        "POST", f"{API}/account/password", token=None,
        headers={**bearer(first), **JSON}, body=change,
    )

    assert wrong.status == 403 and wrong.header("content-type") == PROBLEM_JSON
    assert done.status == 204
    for session in (first, second):
        reply = server.request(
            "GET", f"{API}/spaces", headers=bearer(session), token=None
        )
        assert reply.status == 401
    assert login(server, name, password, None).status == 401
    assert login(server, name, "a-new-password-9", None).status == 200


def test_a_too_short_new_password_is_400_and_changes_nothing(
    server: LiveServer,
) -> None:
    name, password = new_user(server)
    session = login(server, name, password, None)

    reply = server.request(
        "POST", f"{API}/account/password", token=None,
        headers={**bearer(session), **JSON},
        body=json.dumps({"current_password": password, "new_password": "x"}).encode(),
    )

    assert reply.status == 400
    assert reply.json()["code"] == "password_policy"  # type: ignore[index]
    assert server.request(
        "GET", f"{API}/spaces", headers=bearer(session), token=None
    ).status == 200


def test_the_openapi_page_offers_the_password_flow_on_every_private_route(
    server: LiveServer,
) -> None:
    """/docs lets a person authorise with the password flow and try each route."""
    document = server.request("GET", "/openapi.json", token=None).json()
    assert isinstance(document, dict)
    flow = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    public = {"/api/v1/token", "/api/v1/token/refresh"}

    undocumented = [
        f"{method} {path}"
        for path, operations in document["paths"].items()
        if path.startswith("/api/v1/") and path not in public
        for method, operation in operations.items() if not operation.get("security")
    ]
    ids = [op["operationId"] for ops in document["paths"].values()
           for op in ops.values()]

    assert flow["flows"]["password"]["tokenUrl"] == "/api/v1/token"
    assert set(flow["flows"]["password"]["scopes"]) == {
        "files:read", "files:write", "shares", "admin"}
    assert undocumented == []
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("form", "code"),
    [("username=alice&password=P&scope=", "invalid_scope"),
     ("username=bob&username=alice&password=P", "invalid_request"),
     ("username=alice&password=P&scope=files%3Aread&scope=admin", "invalid_request"),
     ("username=alice&password=x&password=P", "invalid_request")],
    ids=["empty-scope", "two-names", "two-scopes", "two-passwords"],
)
def test_an_empty_or_repeated_login_parameter_is_refused(
    server: LiveServer, form: str, code: str
) -> None:
    """An empty scope is not every scope; no parameter counts twice."""
    body = form.replace("P", quote(ALICE_PASSWORD)).encode()

    reply = server.request(
        "POST", f"{API}/token", body=body, token=None, headers=FORM
    )

    assert reply.status == 400, reply.body
    assert reply.json()["code"] == code  # type: ignore[index]


def test_a_repeated_refresh_token_parameter_is_refused(server: LiveServer) -> None:
    first = login(server, "alice", ALICE_PASSWORD, None).json()
    token = first["refresh_token"]  # type: ignore[index]

    reply = server.request(
        "POST", f"{API}/token/refresh", token=None, headers=FORM,
        body=f"refresh_token={token}&refresh_token={token}".encode(),
    )
    after = server.request(
        "POST", f"{API}/token/refresh", token=None, headers=FORM,
        body=f"refresh_token={token}".encode(),
    )

    assert reply.status == 400
    assert reply.json()["code"] == "invalid_request"  # type: ignore[index]
    assert after.status == 200  # the refused request spent nothing


def test_the_last_active_admin_cannot_be_demoted_or_disabled(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """On a server of its own: the shared one has other admins."""
    parent = tmp_path_factory.mktemp("one-admin")
    for name in SPACE_DIRS:
        (parent / name).mkdir()
    users = [("root", "root-password-1", "admin")]
    config = CONFIG.format(data_dir=parent / "data")
    with run_server(parent, config, "openat2", users) as server:
        admin = {"Authorization": f"Bearer {server.tokens['root']}", **JSON}
        replies = [
            server.request("PATCH", f"{API}/admin/users/root", headers=admin,
                           token=None, body=body)
            for body in (b'{"role": "user"}', b'{"active": false}')
        ]
        still = server.request("GET", f"{API}/admin/users", headers=admin, token=None)

    assert [r.status for r in replies] == [409, 409]
    assert replies[0].json()["code"] == "last_admin"  # type: ignore[index]
    assert still.status == 200


def test_an_admin_sets_a_password_which_revokes_every_token(server: LiveServer) -> None:
    name, password = new_user(server)
    old = bearer(login(server, name, password, None))
    admin = {"Authorization": f"Bearer {server.tokens['bob']}", **JSON}

    short = server.request("POST", f"{API}/admin/users/{name}/password",
                           headers=admin, token=None, body=b'{"new_password": "x"}')
    done = server.request("POST", f"{API}/admin/users/{name}/password",
                          headers=admin, token=None,
                          body=b'{"new_password": "reset-by-admin-1"}')
    as_user = server.request("POST", f"{API}/admin/users/{name}/password",
                             headers={**old, **JSON}, token=None,
                             body=b'{"new_password": "reset-by-user-22"}')

    assert short.status == 400 and done.status == 204
    assert as_user.status == 401  # the reset already revoked that token
    assert login(server, name, password, None).status == 401
    assert login(server, name, "reset-by-admin-1", None).status == 200


def test_the_admin_space_list_shows_policies_but_no_host_paths(
    server: LiveServer,
) -> None:
    admin = {"Authorization": f"Bearer {server.tokens['bob']}"}

    reply = server.request("GET", f"{API}/admin/spaces", headers=admin, token=None)
    refused = server.request("GET", f"{API}/admin/spaces")

    spaces = reply.json()
    assert isinstance(spaces, list)
    assert [s["name"] for s in spaces][0] == "home"
    lab = next(s for s in spaces if s["name"] == "lab")
    assert lab == {"name": "lab", "kind": "directory", "mode": "rw",
                   "symlinks": "deny", "hardlinks": "deny", "users": ["alice", "bob"]}
    assert str(server.parent) not in reply.body.decode()
    assert refused.status == 403
