"""What the share-link tests share: making links, using them, forging tokens.

Links are made through the API as a user would; forged tokens are signed with
the server's own share key, which anyone holding the data directory can derive
the way the server does (`KeySet.derive("share")`), so the one flaw a forged
token carries is the only reason to refuse it.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Mapping
from typing import Any

import forged_tokens
from live_server import API, LiveServer, Reply

from jwt_forgery import b64, compact, unb64
from strongroom.auth import KeySet

__all__ = [
    "SHARE_HEADERS",
    "basic",
    "claims_of",
    "create_share",
    "forge",
    "get_link",
    "get_link_from",
    "new_link",
    "request_from",
    "seed",
    "share_keys",
    "with_claims",
]

# What every answer under /s/ must carry (issue 4, and a link is a secret).
SHARE_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "private, no-store",
}


def create_share(
    server: LiveServer, space: str, body: Mapping[str, Any], token: str = "alice"
) -> Reply:
    """POST a share request to `space` as user `token`."""
    return server.request(
        "POST", f"{API}/spaces/{space}/shares", body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, token=token,
    )


def new_link(server: LiveServer, space: str, path: str, **fields: Any) -> str:
    """Share `path` of `space` as alice and return the link's URL path."""
    reply = create_share(server, space, {"path": path, **fields})
    assert reply.status == 201, (reply.status, reply.body)
    url = reply.json()["url"]  # type: ignore[index]
    assert isinstance(url, str) and url.startswith("/s/")
    return url


def get_link(
    server: LiveServer, url: str, headers: Mapping[str, str] | None = None,
    method: str = "GET",
) -> Reply:
    """Use a link as an anonymous recipient would: no bearer token."""
    return server.request(method, url, headers=headers or {}, token=None)


def get_link_from(
    server: LiveServer, address: str, url: str,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """GET a link from another loopback source address (127.0.0.0/8).

    The share throttle counts wrong passwords per client address; tests that
    send wrong ones use an address of their own so they never slow down others.
    """
    return request_from(server, address, "GET", url, headers)


def request_from(
    server: LiveServer, address: str, method: str, url: str,
    headers: Mapping[str, str] | None = None, body: bytes | None = None,
) -> Reply:
    """Send one request from the loopback source address `address`."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=10, source_address=(address, 0)
    )
    started = time.monotonic()
    try:
        conn.request(method, url, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read(),
                     time.monotonic() - started)
    finally:
        conn.close()


def basic(password: str, user: str = "") -> dict[str, str]:
    """Return the Authorization header of HTTP Basic with this password."""
    raw = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def seed(server: LiveServer, space: str, files: Mapping[str, bytes]) -> None:
    """Put files into `space`: on disk for a directory space, by upload for home."""
    for rel_path, data in files.items():
        if space == "home":
            reply = server.put("home", rel_path, data)
            assert reply.status in (200, 201), (rel_path, reply.status, reply.body)
            continue
        host_path = server.parent / space / rel_path
        host_path.parent.mkdir(parents=True, exist_ok=True)
        host_path.write_bytes(data)


def share_keys(server: LiveServer) -> KeySet:
    """Return the server's share-link keys, derived as the server derives them."""
    secret = forged_tokens.server_secret(server.data_dir)
    return KeySet.from_secret(secret).derive("share")


def claims_of(url: str) -> dict[str, Any]:
    """Read the (unverified) claims of a link's token."""
    token = url.removeprefix("/s/").split("/", 1)[0]
    value = json.loads(unb64(token.split(".")[1]))
    assert isinstance(value, dict)
    return value


def with_claims(url: str, **changes: Any) -> str:
    """Return the link with claims changed and the old signature kept."""
    token = url.removeprefix("/s/")
    header, _, signature = token.split(".")
    claims = {**claims_of(url), **changes}
    return f"/s/{header}.{b64(compact(claims))}.{signature}"


def forge(server: LiveServer, claims: Mapping[str, Any],
          header: Mapping[str, Any] | None = None) -> str:
    """Return a link whose token is signed with the server's real share key."""
    keys = share_keys(server)
    key = keys.active
    head = {"alg": "HS256", "typ": "share+jwt", "kid": key.kid, **(header or {})}
    signing_input = f"{b64(compact(head))}.{b64(compact(dict(claims)))}"
    signature = b64(key.sign(signing_input.encode()))
    return f"/s/{signing_input}.{signature}"
