"""tests/data/jwt-attacks.json against live servers: HS256 (per resolver) and EdDSA.

Every token-layer variant (tests/jwt_forgery.py) is sent to a routed endpoint and
to the download fast lane, which parse the header separately; the cases about
HTTP itself (header shapes, where a token may travel, users, logins) live here
only. A refused token is a 401 with `WWW-Authenticate: Bearer
error="invalid_token"`; a request that offers no bearer token gets a bare
`Bearer` challenge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import forged_tokens
import pytest
from live_server import (
    CONFIG,
    PROBLEM_JSON,
    SPACE_DIRS,
    LiveServer,
    Reply,
    add_user,
    files_url,
    run_server,
)

from jwt_forgery import VARIANTS, Ctx, b64, compact, hs, unb64
from strongroom.auth import KeySet, TokenAuthority, load_key_set

API = "/api/v1"
ROUTES = [f"{API}/spaces", files_url("lab", "a.txt")]
INVALID_TOKEN = 'Bearer error="invalid_token"'  # noqa: S105 (a header value)
TTL = 900

VARIANT_PARAMS = [
    pytest.param(case_id, name, id=f"{case_id}:{name}")
    for case_id, variants in VARIANTS.items()
    for name in variants
]


def context_of(server: LiveServer, keys: KeySet) -> Ctx:
    """A Ctx around alice's real token, forging with the server's own key."""
    token = server.tokens["alice"]
    header, claims = (json.loads(unb64(p)) for p in token.split(".")[:2])
    return Ctx(TokenAuthority(keys, max_ttl_seconds=TTL), keys.active, token,
               header, claims)


def hs_context(server: LiveServer) -> Ctx:
    return context_of(
        server, KeySet.from_secret(forged_tokens.server_secret(server.data_dir)))


def send(server: LiveServer, route: str, value: str) -> Reply:
    return server.request("GET", route, headers=[("Authorization", value)],
                          token=None)


def assert_refused(reply: Reply) -> None:
    assert reply.status == 401, reply.body[:200]
    assert reply.header("www-authenticate") == INVALID_TOKEN
    assert reply.header("content-type") == PROBLEM_JSON


@pytest.fixture
def lab_file(live_server: LiveServer) -> LiveServer:
    (live_server.parent / "lab" / "a.txt").write_text("A")
    return live_server


@pytest.fixture(scope="module")
def eddsa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server signing with Ed25519, with alice and bob."""
    parent = tmp_path_factory.mktemp("p-eddsa")
    for name in (*SPACE_DIRS, "outside", "lab-backup"):
        (parent / name).mkdir()
    (parent / "lab" / "a.txt").write_text("A")
    config_text = CONFIG.format(data_dir=parent / "data").replace(
        "max_upload_bytes", 'token_algorithm = "EdDSA"\nmax_upload_bytes', 1)
    users = (("alice", "alice-password-1", "user"), ("bob", "bob-password-22", "admin"))
    with run_server(parent, config_text, "auto", users) as server:
        yield server


@pytest.mark.parametrize(("case_id", "name"), VARIANT_PARAMS)
def test_attack_token_is_401_invalid_token_on_the_hs256_server(
    lab_file: LiveServer, case_id: str, name: str
) -> None:
    token = VARIANTS[case_id][name](hs_context(lab_file))

    replies = [send(lab_file, route, f"Bearer {token}") for route in ROUTES]

    for reply in replies:
        assert_refused(reply)


@pytest.mark.parametrize(("case_id", "name"), VARIANT_PARAMS)
def test_attack_token_is_401_invalid_token_on_the_eddsa_server(
    eddsa_server: LiveServer, case_id: str, name: str
) -> None:
    keys = load_key_set("EdDSA", eddsa_server.data_dir)
    token = VARIANTS[case_id][name](context_of(eddsa_server, keys))

    replies = [send(eddsa_server, route, f"Bearer {token}") for route in ROUTES]

    for reply in replies:
        assert_refused(reply)


def test_the_eddsa_server_accepts_its_own_tokens(eddsa_server: LiveServer) -> None:
    replies = [eddsa_server.request("GET", route) for route in ROUTES]

    assert [r.status for r in replies] == [200, 200]


def test_jwks_of_the_eddsa_server_lists_its_public_key_only(
    eddsa_server: LiveServer,
) -> None:
    kid = json.loads(unb64(eddsa_server.tokens["alice"].split(".")[0]))["kid"]

    reply = eddsa_server.request("GET", "/.well-known/jwks.json", token=None)

    assert reply.status == 200
    keys = reply.json()["keys"]  # type: ignore[index]
    assert [(k["kid"], k["kty"], k["crv"], k["alg"]) for k in keys] == [
        (kid, "OKP", "Ed25519", "EdDSA")]
    assert "d" not in keys[0]


def test_jwks_of_the_hs256_server_is_empty(live_server: LiveServer) -> None:
    reply = live_server.request("GET", "/.well-known/jwks.json", token=None)

    assert reply.status == 200
    assert reply.json() == {"keys": []}


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
@pytest.mark.parametrize("route", ROUTES)
def test_the_bearer_scheme_is_case_insensitive(
    lab_file: LiveServer, scheme: str, route: str
) -> None:
    """[TRN-01] A positive control: the scheme is case-insensitive (RFC 9110)."""
    reply = send(lab_file, route, f"{scheme} {lab_file.tokens['alice']}")

    assert reply.status == 200


@pytest.mark.parametrize(
    "values",
    [
        ["Bearer {alice}", "Bearer garbage"],
        ["Bearer garbage", "Bearer {alice}"],
        ["Bearer {alice}", "Bearer {bob}"],
        ["Bearer {alice}, Bearer {bob}"],
        ["Bearer {alice} {bob}"],
        ["Bearer {alice},{bob}"],
    ],
    ids=["valid-then-garbage", "garbage-then-valid", "alice-then-bob",
         "comma-joined", "two-tokens-one-value", "comma-no-space"],
)
@pytest.mark.parametrize("route", ROUTES)
def test_ambiguous_credentials_are_401(
    lab_file: LiveServer, values: list[str], route: str
) -> None:
    """[TRN-03] Never pick one of two credentials."""
    headers = [("Authorization", v.format(**lab_file.tokens)) for v in values]

    reply = lab_file.request("GET", route, headers=headers, token=None)

    assert_refused(reply)


@pytest.mark.parametrize(
    ("method", "where"),
    [("GET", "query"), ("GET", "cookie"), ("POST", "form"), ("POST", "query")],
)
def test_a_token_anywhere_but_the_header_is_ignored(
    lab_file: LiveServer, method: str, where: str
) -> None:
    """[TRN-04] Query strings, forms and cookies never carry an access token."""
    token = lab_file.tokens["alice"]
    route = f"{API}/spaces" if method == "GET" else f"{API}/spaces/lab/dirs/new"
    headers = [("Cookie", f"access_token={token}")] if where == "cookie" else []
    body = None
    if where == "form":
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        body = f"access_token={token}".encode()
    query = f"?access_token={token}" if where == "query" else ""

    reply = lab_file.request(method, route + query, headers=headers, body=body,
                             token=None)

    assert reply.status == 401
    assert reply.header("www-authenticate") == "Bearer"
    assert not (lab_file.parent / "lab" / "new").exists()


@pytest.mark.parametrize(
    "part", ["payload", "header", "signature", "whole-1MB"],
)
def test_an_oversized_token_is_refused_quickly(
    lab_file: LiveServer, part: str
) -> None:
    """[ENC-01] Over 4 KiB: refused before decoding, or by the HTTP layer."""
    head, body, signature = lab_file.tokens["alice"].split(".")
    pad = b64(b"A" * 75_000)
    token = {
        "payload": f"{head}.{b64(compact({'pad': 'A' * 100_000}))}.{signature}",
        "header": f"{pad}.{body}.{signature}",
        "signature": f"{head}.{body}.{pad}",
        "whole-1MB": f"{head}.{b64(b'A' * 750_000)}.{signature}",
    }[part]

    reply = send(lab_file, ROUTES[0], f"Bearer {token}")

    assert reply.status in (400, 401, 413, 431)
    assert reply.seconds < 2


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"HS256","x":' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"alg":"HS256","x":' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"alg":"HS256","x":' + b'{"a":' * 600 + b"1" + b"}" * 600 + b"}",
    ],
    ids=["arrays-1000", "arrays-3000-over-cap", "objects-600"],
)
@pytest.mark.parametrize("route", ROUTES)
def test_a_deeply_nested_header_is_401_not_500(
    lab_file: LiveServer, header: bytes, route: str
) -> None:
    """[ENC-02] RecursionError in the header parser is a refusal."""
    token = hs_context(lab_file).forge(header)

    assert_refused(send(lab_file, route, f"Bearer {token}"))


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"HS256","kid":"\xc3\x28"}',
        '{"alg":"HS256","typ":"at+jwt"}'.encode("utf-16"),
        '{"alg":"HS256","typ":"at+jwt"}'.encode("utf-32"),
        b'\xef\xbb\xbf{"alg":"HS256","typ":"at+jwt"}',
        b'{"alg":"HS256","typ":"at+jwt","kid":"\\ud800"}',
    ],
    ids=["bad-utf8", "utf16", "utf32", "bom", "lone-surrogate"],
)
def test_a_header_that_is_not_utf8_json_is_401(
    lab_file: LiveServer, header: bytes
) -> None:
    """[ENC-04]"""
    assert_refused(send(lab_file, ROUTES[0],
                        f"Bearer {hs_context(lab_file).forge(header)}"))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_a_payload_that_is_not_utf8_is_401_even_when_signed(
    lab_file: LiveServer, encoding: str
) -> None:
    """[ENC-04] The key-holder variant: signed for real, still refused."""
    ctx = hs_context(lab_file)

    token = ctx.forge(claims=json.dumps(ctx.claims).encode(encoding))

    assert_refused(send(lab_file, ROUTES[0], f"Bearer {token}"))


@pytest.mark.parametrize("route", ROUTES)
def test_raw_high_bytes_in_the_authorization_header_are_refused(
    lab_file: LiveServer, route: str
) -> None:
    """[ENC-04] Bytes 0x80-0xFF in the header value: 400 or 401, never 500."""
    value = "Bearer " + bytes(range(0x80, 0x100)).decode("latin-1")

    reply = send(lab_file, route, value)

    assert reply.status in (400, 401)


def test_a_key_named_after_an_uploaded_file_is_refused(lab_file: LiveServer) -> None:
    """[KID-03] The file store is no key store: kid never reaches storage."""
    assert lab_file.put("home", "k.txt", b"attackerkey").status in (200, 201)
    ctx = hs_context(lab_file)
    kids = ["k.txt", "home/k.txt", "uploads/k.txt", "../uploads/k.txt",
            "../../data/k.txt", "../data/blobs/k.txt", "1", "../../../k.txt"]

    replies = [
        send(lab_file, ROUTES[0], "Bearer " + ctx.forge(
            compact({**ctx.header, "kid": kid}), ctx.admin(), hs(b"attackerkey")))
        for kid in kids
    ]

    lab_file.reset_home("alice")
    for reply in replies:
        assert_refused(reply)


@pytest.mark.parametrize(
    "sub",
    [str(forged_tokens.UNKNOWN_USER_ID), 1, "", "alice", "../1", "1' OR '1'='1"],
    ids=repr,
)
@pytest.mark.parametrize("route", ROUTES)
def test_a_subject_that_names_no_user_is_401(
    lab_file: LiveServer, sub: object, route: str
) -> None:
    """[CLM-07] Signed for real; the subject must be an existing user's id."""
    ctx = hs_context(lab_file)

    token = ctx.forge(claims={**ctx.claims, "sub": sub})

    assert_refused(send(lab_file, route, f"Bearer {token}"))


def test_a_token_of_a_removed_then_recreated_user_is_401(server: LiveServer) -> None:
    """[LIF-01] The new account of the same name does not inherit old tokens."""
    (server.parent / "lab" / "a.txt").write_text("A")
    name = f"erin-{server.resolver}"
    server.add_logged_in_user(name, "erin-password-666")
    old_token = server.tokens[name]

    server.remove_user(name)
    gone = send(server, ROUTES[0], f"Bearer {old_token}")
    add_user(server.config_path, name, "erin-password-777", "user")
    again = send(server, ROUTES[0], f"Bearer {old_token}")

    assert_refused(gone)
    assert_refused(again)


def test_tokens_from_before_a_password_change_are_401(server: LiveServer) -> None:
    """[LIF-02] The access-token part; refresh and disabling wait for issue 3."""
    name = f"fay-{server.resolver}"
    server.add_logged_in_user(name, "fay-password-8888")

    server.change_password(name, "fay-password-99999")

    for route in ROUTES:
        assert_refused(server.request("GET", route, token=name))


def login(server: LiveServer, user: str, password: str, address: str) -> Reply:
    form = f"username={user}&password={password}".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Forwarded-For": address}
    return server.request("POST", f"{API}/token", body=form, headers=headers,
                          token=None)


@pytest.mark.parametrize("addresses", ["one", "rotating"])
def test_brute_force_is_throttled_even_for_the_right_password(
    live_server: LiveServer, addresses: str
) -> None:
    """[TOK-01] Per-name counting: rotating client addresses do not reset it."""
    name = f"gus-{addresses}-{live_server.resolver}"
    add_user(live_server.config_path, name, "gus-password-1234", "user")
    for attempt in range(30):
        octet = attempt if addresses == "rotating" else 0
        login(live_server, name, f"wrong-{attempt}", f"203.0.113.{octet}")

    reply = login(live_server, name, "gus-password-1234", "203.0.113.200")

    assert reply.status == 429
    assert int(reply.header("Retry-After") or "0") >= 1
    assert b"access_token" not in reply.body


def test_unknown_user_and_wrong_password_get_the_same_answer(
    live_server: LiveServer,
) -> None:
    """[TOK-02] Status and body; timing is covered by the dummy hash in passwords."""
    name = f"hal-{live_server.resolver}"
    add_user(live_server.config_path, name, "hal-password-1234", "user")

    known = login(live_server, name, "wrong-password", "192.0.2.10")
    unknown = login(live_server, f"nobody-{name}", "wrong-password", "192.0.2.11")

    assert known.status == unknown.status == 401
    assert known.body == unknown.body


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_credentials_in_the_query_string_are_refused(
    live_server: LiveServer, method: str
) -> None:
    """[TOK-05] Passwords travel in the form body only."""
    query = "grant_type=password&username=alice&password=alice-password-1"

    reply = live_server.request(method, f"{API}/token?{query}", body=b"",
                                token=None)

    assert reply.status in (400, 405, 415, 422)
    assert b"access_token" not in reply.body


@pytest.mark.parametrize(
    "sub", ["9" * 19, str(2**63), str(2**64), "9" * 18, str(2**31), str(2**31 - 1)],
    ids=["19-nines", "2-to-63", "2-to-64", "18-nines", "2-to-31", "2-to-31-less-1"],
)
def test_a_signed_token_naming_a_huge_user_id_is_401_never_500(
    server: LiveServer, sub: str
) -> None:
    """Found by an attack session: a 19-digit sub overflowed the database lookup."""
    secret = forged_tokens.server_secret(server.data_dir)
    claims = json.loads(unb64(server.tokens["alice"].split(".")[1]))
    token = forged_tokens.signed({**claims, "sub": sub}, secret)

    for route in [*ROUTES, f"{API}/account"]:
        assert_refused(send(server, route, f"Bearer {token}"))
