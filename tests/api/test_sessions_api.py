"""Refresh and logout over HTTP on the live server (issue 3; REF-01/02/04/05)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from live_server import ALICE_PASSWORD, API, LiveServer, Reply

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def login(server: LiveServer) -> dict[str, str]:
    reply = server.login("alice", ALICE_PASSWORD)
    assert reply.status == 200, reply.body[:200]
    body = reply.json()
    assert isinstance(body, dict)
    return body


def refresh(server: LiveServer, refresh_token: str) -> Reply:
    form = f"refresh_token={quote(refresh_token)}".encode()
    return server.request("POST", f"{API}/token/refresh", body=form, token=None,
                          headers=FORM)


def get_spaces(server: LiveServer, access_token: str) -> Reply:
    return server.request("GET", f"{API}/spaces", token=None,
                          headers={"Authorization": f"Bearer {access_token}"})


def logout(server: LiveServer, access_token: str) -> Reply:
    return server.request("POST", f"{API}/logout", token=None,
                          headers={"Authorization": f"Bearer {access_token}"})


def test_login_returns_a_refresh_token(server: LiveServer) -> None:
    body = login(server)

    assert len(body["refresh_token"]) >= 43
    assert body["refresh_token"] != body["access_token"]


def test_refresh_rotates_and_the_new_access_token_works(server: LiveServer) -> None:
    first = login(server)

    reply = refresh(server, first["refresh_token"])

    assert reply.status == 200
    second = reply.json()
    assert isinstance(second, dict)
    assert second["refresh_token"] != first["refresh_token"]
    assert get_spaces(server, second["access_token"]).status == 200


def test_reused_refresh_token_revokes_the_whole_family(server: LiveServer) -> None:
    """[REF-01] The second use of R1 kills R2 and the newest access token A2."""
    first = login(server)
    second = refresh(server, first["refresh_token"]).json()
    assert isinstance(second, dict)

    reused = refresh(server, first["refresh_token"])

    assert reused.status == 400
    assert refresh(server, second["refresh_token"]).status == 400
    assert get_spaces(server, second["access_token"]).status == 401
    assert get_spaces(server, first["access_token"]).status == 401
    assert "refresh_token_reused" in server.log_text()


def test_parallel_refreshes_with_one_token_give_at_most_one_success(
    server: LiveServer,
) -> None:
    """[REF-02] The rotation is one conditional UPDATE, not read-then-write."""
    first = login(server)

    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: refresh(server, first["refresh_token"]),
                                range(10)))

    statuses = sorted(reply.status for reply in replies)
    assert statuses.count(200) <= 1
    assert set(statuses) <= {200, 400}
    assert get_spaces(server, first["access_token"]).status == 401


def test_a_refresh_token_is_no_access_token(server: LiveServer) -> None:
    """[REF-04] An opaque refresh token fails the JWT syntax check at once."""
    first = login(server)

    reply = get_spaces(server, first["refresh_token"])

    assert reply.status == 401
    assert reply.header("www-authenticate") == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: r[:-1] + ("A" if r[-1] != "A" else "B"),
                     id="one-character-changed"),
        pytest.param(lambda r: "' OR 1=1--", id="sql-metacharacters"),
        pytest.param(lambda r: r + "A" * 100_000, id="100-KB"),
    ],
)
def test_a_tampered_refresh_token_is_400(server: LiveServer, change: object) -> None:
    """[REF-05] Parameterised, size-capped lookups: never a 500."""
    first = login(server)
    assert callable(change)

    reply = refresh(server, change(first["refresh_token"]))

    assert reply.status in (400, 413)
    assert refresh(server, first["refresh_token"]).status == 200


def test_logout_makes_the_access_token_401_on_the_next_request(
    server: LiveServer,
) -> None:
    first = login(server)

    assert logout(server, first["access_token"]).status == 204

    assert get_spaces(server, first["access_token"]).status == 401
    assert refresh(server, first["refresh_token"]).status == 400


def test_logout_leaves_other_sessions_alone(server: LiveServer) -> None:
    mine, other = login(server), login(server)

    logout(server, mine["access_token"])

    assert get_spaces(server, other["access_token"]).status == 200


def test_logout_without_a_token_is_401(server: LiveServer) -> None:
    reply = server.request("POST", f"{API}/logout", token=None)

    assert reply.status == 401


def test_no_refresh_token_reaches_the_log(server: LiveServer) -> None:
    first = login(server)
    second = refresh(server, first["refresh_token"]).json()
    assert isinstance(second, dict)
    refresh(server, first["refresh_token"])

    log = server.log_text()

    assert first["refresh_token"] not in log
    assert second["refresh_token"] not in log
