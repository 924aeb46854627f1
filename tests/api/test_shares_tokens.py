"""The token in a share link (issue 4, and SHR-02/03/05 of jwt-attacks.json).

A link whose token is not one of ours (malformed, tampered, another kind of
token, signed with another key) is a 404 that says nothing more; a genuine link
that has ended is a 410. Forged tokens that must be refused for their claims
alone are signed with the server's real share key (see `share_links.forge`).
"""

from __future__ import annotations

import secrets
import time

import pytest
from live_server import API, LiveServer, Reply, files_url, wait_until
from share_links import claims_of, forge, get_link, new_link, seed, with_claims

from jwt_forgery import b64, compact

TTL_SECONDS = 3600


def assert_no_such_link(reply: Reply) -> None:
    assert reply.status == 404, (reply.status, reply.body[:200])
    body = reply.json()
    assert isinstance(body, dict)
    assert (body["code"], body["detail"]) == (
        "share_not_found", "there is no share link here")


def valid_claims(share_id: str, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "shr": share_id, "aud": "strongroom-share", "iss": "strongroom-auth",
        "iat": now, "exp": now + TTL_SECONDS, "perm": "read",
    }
    return {**claims, **changes}


@pytest.fixture
def shared(server: LiveServer) -> tuple[LiveServer, str, str]:
    """A server with docs/a.txt and docs/b.txt, and a link to docs/a.txt."""
    seed(server, "lab", {"docs/a.txt": b"FILE-A", "docs/b.txt": b"FILE-B"})
    return server, new_link(server, "lab", "docs/a.txt"), "lab"


def test_a_forged_token_signed_with_the_real_key_works_as_a_positive_control(
    shared: tuple[LiveServer, str, str],
) -> None:
    server, url, _ = shared

    reply = get_link(server, forge(server, valid_claims(claims_of(url)["shr"])))

    assert (reply.status, reply.body) == (200, b"FILE-A")


def test_an_access_token_is_no_share_token(shared: tuple[LiveServer, str, str]) -> None:
    """[SHR-02] Its typ, audience and key are an access token's, never a link's."""
    server, _, _ = shared

    reply = get_link(server, f"/s/{server.tokens['alice']}")

    assert_no_such_link(reply)


def test_an_access_token_beneath_a_link_path_is_no_share_token(
    shared: tuple[LiveServer, str, str],
) -> None:
    """[SHR-02]"""
    server, _, _ = shared

    replies = [get_link(server, f"/s/{server.tokens['alice']}{tail}")
               for tail in ("/docs/a.txt", "/archive")]

    for reply in replies:
        assert_no_such_link(reply)


@pytest.mark.parametrize(
    "route", [f"{API}/spaces", files_url("lab", "docs/a.txt"), f"{API}/shares",
              f"{API}/spaces/lab/list/docs"],
)
def test_a_share_token_is_no_access_token(
    shared: tuple[LiveServer, str, str], route: str
) -> None:
    """[SHR-02] The reverse: a link's token as a bearer token is a 401."""
    server, url, _ = shared

    reply = server.request("GET", route, token=None,
                           headers={"Authorization": f"Bearer {url[3:]}"})

    assert reply.status == 401
    assert reply.header("www-authenticate") == 'Bearer error="invalid_token"'
    assert b"FILE-A" not in reply.body


def test_a_token_pointed_at_another_share_keeping_its_signature_is_refused(
    shared: tuple[LiveServer, str, str],
) -> None:
    """[SHR-03 b] Both links are alice's; the edited one still reaches neither."""
    server, url, space = shared
    other = new_link(server, space, "docs/b.txt")

    reply = get_link(server, with_claims(url, shr=claims_of(other)["shr"]))

    assert_no_such_link(reply)
    assert b"FILE-B" not in reply.body


@pytest.mark.parametrize("perm", ["write", "delete", "admin", ["read", "write"]])
def test_a_token_with_a_wider_permission_keeping_its_signature_is_refused(
    shared: tuple[LiveServer, str, str], perm: object
) -> None:
    """[SHR-03 c]"""
    server, url, _ = shared

    reply = get_link(server, with_claims(url, perm=perm))

    assert_no_such_link(reply)


@pytest.mark.parametrize("perm", ["write", "delete", "READ", "", None])
def test_a_key_holder_cannot_mint_a_link_with_another_permission(
    shared: tuple[LiveServer, str, str], perm: object
) -> None:
    """[SHR-03 c] Signed for real: the permission claim itself is refused."""
    server, url, _ = shared

    reply = get_link(server, forge(server, valid_claims(claims_of(url)["shr"],
                                                        perm=perm)))

    assert_no_such_link(reply)


def test_the_url_names_the_file_only_through_the_token(
    shared: tuple[LiveServer, str, str],
) -> None:
    """[SHR-03 a] A file or id in the URL next to the token changes nothing."""
    server, url, _ = shared
    other_id = claims_of(new_link(server, "lab", "docs/b.txt"))["shr"]

    replies = [get_link(server, url + tail)
               for tail in ("/../b.txt", f"?shr={other_id}", "?path=docs/b.txt",
                            f"/{other_id}")]

    assert [r.status for r in replies] == [404, 200, 200, 404]
    assert all(b"FILE-B" not in r.body for r in replies)


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "strongroom"},
        {"iss": "someone-else"},
        {"exp": "9999999999"},
        {"iat": True},
        {"shr": "../../etc/passwd"},
        {"shr": 1},
        {"extra": "claim"},
        {"iat": int(time.time()) + 600, "exp": int(time.time()) + 1200},
        {"exp": int(time.time()) + 400 * 24 * 3600},
    ],
    ids=["aud-access", "iss", "exp-string", "iat-bool", "shr-path", "shr-int",
         "extra-claim", "iat-future", "lifetime-over-max"],
)
def test_a_key_holders_token_with_bad_claims_is_refused(
    shared: tuple[LiveServer, str, str], changes: dict[str, object]
) -> None:
    server, url, _ = shared

    reply = get_link(server, forge(server, valid_claims(claims_of(url)["shr"],
                                                        **changes)))

    assert_no_such_link(reply)


def test_a_key_holders_token_missing_a_claim_is_refused(
    shared: tuple[LiveServer, str, str],
) -> None:
    server, url, _ = shared
    claims = valid_claims(claims_of(url)["shr"])
    del claims["perm"]

    reply = get_link(server, forge(server, claims))

    assert_no_such_link(reply)


@pytest.mark.parametrize(
    "header",
    [{"typ": "at+jwt"}, {"typ": "JWT"}, {"alg": "none"}, {"alg": "HS512"},
     {"jku": "http://127.0.0.1:9/keys"}, {"kid": "../../jwt.secret"}],
    ids=["typ-access", "typ-jwt", "alg-none", "alg-other", "jku", "kid-path"],
)
def test_a_key_holders_token_with_a_bad_header_is_refused(
    shared: tuple[LiveServer, str, str], header: dict[str, str]
) -> None:
    server, url, _ = shared

    reply = get_link(server, forge(server, valid_claims(claims_of(url)["shr"]),
                                   header))

    assert_no_such_link(reply)


@pytest.mark.parametrize(
    "mangle",
    ["append-x", "signature-char", "signature-padding", "unsigned", "two-parts",
     "dotdot", "oversized", "not-base64"],
)
def test_a_malformed_or_altered_token_is_404(
    shared: tuple[LiveServer, str, str], mangle: str
) -> None:
    server, url, _ = shared
    token = url.removeprefix("/s/")
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    mangled = {
        "append-x": token + "X",
        "signature-char": f"{head}.{payload}.{flipped}",
        "signature-padding": token + "=",
        "unsigned": f"{head}.{payload}.",
        "two-parts": f"{head}.{payload}",
        "dotdot": "..",
        "oversized": f"{head}.{b64(compact({'pad': 'A' * 5000}))}.{signature}",
        "not-base64": "a%20b.c",
    }[mangle]

    reply = get_link(server, f"/s/{mangled}")

    assert reply.status in (400, 404), reply.body
    assert b"FILE-A" not in reply.body


def test_a_genuine_token_past_its_expiry_is_410(
    shared: tuple[LiveServer, str, str],
) -> None:
    """[SHR-05 a] Signed for real, for a real share, an hour after its exp."""
    server, url, _ = shared
    now = int(time.time())
    claims = valid_claims(claims_of(url)["shr"], iat=now - 7200, exp=now - 3600)

    reply = get_link(server, forge(server, claims))

    assert reply.status == 410


def test_a_link_used_after_its_short_lifetime_is_410(server: LiveServer) -> None:
    """[SHR-05 a] The real thing: a one-second link, used after that second."""
    seed(server, "lab", {"a.txt": b"A"})
    url = new_link(server, "lab", "a.txt", expires_in=1)

    wait_until(lambda: time.time() >= claims_of(url)["exp"], "the link's end")
    reply = get_link(server, url)

    assert reply.status == 410


def test_a_revoked_link_is_410(shared: tuple[LiveServer, str, str]) -> None:
    """[SHR-05 b]"""
    server, url, _ = shared

    server.request("DELETE", f"{API}/shares/{claims_of(url)['shr']}")

    assert get_link(server, url).status == 410


def test_a_link_to_a_deleted_file_is_410(shared: tuple[LiveServer, str, str]) -> None:
    """[SHR-05 c]"""
    server, url, _ = shared

    server.request("DELETE", files_url("lab", "docs/a.txt"))

    assert get_link(server, url).status == 410


def test_a_genuine_token_for_a_share_that_never_existed_is_410(
    shared: tuple[LiveServer, str, str],
) -> None:
    """Only the server can sign it; a row missing means the owner is gone."""
    server, _, _ = shared

    reply = get_link(server, forge(server, valid_claims(secrets.token_urlsafe(16))))

    assert reply.status == 410
