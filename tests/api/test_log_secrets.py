"""The server log through a login, a refresh, a download and refused tokens.

Everything the server process writes is read back and searched for every secret
that passed through it: passwords, access and refresh tokens (whole, and each
signature on its own), the signing secret in every usual encoding. The same log
must show that each of those events was logged, so the search is over a log
that really covers them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from urllib.parse import quote

from live_server import ALICE_PASSWORD, API, LiveServer, add_user, files_url

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_no_password_token_or_secret_reaches_the_log(server: LiveServer) -> None:
    name, password = f"log{secrets.token_hex(3)}", f"pw-{secrets.token_hex(10)}"
    add_user(server.config_path, name, password, "user")
    wrong_password = f"wrong-{secrets.token_hex(10)}"
    (server.parent / "lab" / "logged.txt").write_text("content")
    start = len(server.log_text())

    failed = server.request(
        "POST", f"{API}/token", token=None, headers=FORM,
        body=f"username={name}&password={quote(wrong_password)}".encode(),
    )
    first = server.request(
        "POST", f"{API}/token", token=None, headers=FORM,
        body=f"username={name}&password={quote(password)}".encode(),
    ).json()
    assert isinstance(first, dict)
    second = server.request(
        "POST", f"{API}/token/refresh", token=None, headers=FORM,
        body=f"refresh_token={first['refresh_token']}".encode(),
    ).json()
    assert isinstance(second, dict)
    reused = server.request(
        "POST", f"{API}/token/refresh", token=None, headers=FORM,
        body=f"refresh_token={first['refresh_token']}".encode(),
    )
    download = server.request(
        "GET", files_url("lab", "logged.txt"), token=None,
        headers={"Authorization": f"Bearer {server.tokens['alice']}"},
    )
    forged = first["access_token"][:-4] + "AAAA"
    refused = [
        server.request("GET", f"{API}/spaces", token=None,
                       headers={"Authorization": f"Bearer {token}"})
        for token in (first["access_token"], forged, second["access_token"])
    ]
    query_token = server.request(
        "GET", f"{API}/spaces?access_token={second['access_token']}", token=None
    )

    log = server.log_text()[start:]

    assert failed.status == 401 and reused.status == 400
    assert download.status == 200
    assert [r.status for r in refused] == [401, 401, 401]
    assert query_token.status == 401
    for event in ("strongroom.auth login_failed ", "strongroom.auth login ",
                  "strongroom.auth token_refreshed ",
                  "strongroom.auth refresh_token_reused ",
                  "strongroom.api auth_refused ", " op=download "):
        assert event in log, f"{event!r} was not logged"
    for secret in secrets_seen(server, password, wrong_password, first, second):
        assert secret not in log


def secrets_seen(
    server: LiveServer,
    password: str,
    wrong_password: str,
    *issued: dict[str, str],
) -> list[str]:
    found = [password, quote(password), wrong_password, ALICE_PASSWORD]
    for tokens in issued:
        access, refresh = tokens["access_token"], tokens["refresh_token"]
        found += [access, access.split(".")[2], refresh]
    found += [server.tokens["alice"], server.tokens["alice"].split(".")[2]]
    key = (server.data_dir / "jwt.secret").read_bytes()
    found += [
        key.hex(),
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).rstrip(b"=").decode(),
        json.dumps(key.decode("latin-1"))[1:-1],
    ]
    return found


def test_a_password_typed_as_the_name_is_logged_only_as_a_keyed_digest(
    server: LiveServer,
) -> None:
    # People type their password into the name field. A plain hash of it in the
    # log could be checked against a password list offline; the digest must
    # need the server's key, and still tell repeated tries apart.
    typed = f"Passw0rd-typed-as-name-{secrets.token_hex(4)}"
    start = len(server.log_text())

    for name in (typed, typed, f"{typed}!"):
        reply = server.request(
            "POST", f"{API}/token", token=None, headers=FORM,
            body=f"username={quote(name)}&password=wrong".encode(),
        )
        assert reply.status == 401

    log = server.log_text()[start:]
    digests = re.findall(r"login_failed .*?user_hash=([0-9a-f]+)", log)
    assert len(digests) == 3, log[-2000:]
    assert digests[0] == digests[1] != digests[2]
    plain = hashlib.sha256(typed.encode()).hexdigest()
    assert digests[0] not in plain
    assert typed not in log
