"""Scopes: what a token may do, never more than what its user's role allows.

There are four: `files:read` (list, stat, download, folder archives),
`files:write` (upload, make folders, move, delete, import), `shares` (create,
list and revoke share links) and `admin` (the account routes). A role holds a
fixed set of them (`ROLE_SCOPES`); a token carries the subset its login asked for
(all the role holds when it asked for none). A role change revokes every older
token, so a token's scopes never outlive the role that granted them.

The `scope` request parameter and the token claim use the OAuth 2.0 syntax
(RFC 6749, section 3.3): scope tokens separated by single spaces. We are
stricter than the syntax: only our four names, no empty token (so no leading,
trailing or doubled space), a bounded length. Anything else is refused, never
dropped or passed through, so a client learns at once that it asked wrongly.
"""

from __future__ import annotations

from collections.abc import Iterable

from strongroom.errors import InvalidScopeError

__all__ = [
    "ADMIN",
    "ALL_SCOPES",
    "FILES_READ",
    "FILES_WRITE",
    "MAX_SCOPE_CHARS",
    "ROLE_SCOPES",
    "SCOPE_DESCRIPTIONS",
    "SHARES",
    "format_scopes",
    "parse_scopes",
]

FILES_READ = "files:read"
FILES_WRITE = "files:write"
SHARES = "shares"
ADMIN = "admin"

# Shown on the OpenAPI page, where a person ticks the scopes to ask for.
SCOPE_DESCRIPTIONS = {
    FILES_READ: "list and download files",
    FILES_WRITE: "upload, move, delete and import files",
    SHARES: "create, list and revoke share links",
    ADMIN: "manage accounts (admins only)",
}
ALL_SCOPES = frozenset(SCOPE_DESCRIPTIONS)
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "user": frozenset({FILES_READ, FILES_WRITE, SHARES}),
    "admin": ALL_SCOPES,
}
# All four names with their separators are 38 characters; the bound refuses a
# name repeated a thousand times before any work is done on it.
MAX_SCOPE_CHARS = 128


def parse_scopes(text: str) -> frozenset[str]:
    """Return the scopes named in a space-separated `scope` value.

    Raises:
        InvalidScopeError: the value is empty, too long, badly spaced, or names
            an unknown scope (the message says which).
    """
    if not text or len(text) > MAX_SCOPE_CHARS:
        raise InvalidScopeError(
            f"scope must name 1 to {MAX_SCOPE_CHARS} characters of scopes"
        )
    names = text.split(" ")
    unknown = [name for name in names if name not in ALL_SCOPES]
    if "" in names:
        raise InvalidScopeError("scope names are separated by exactly one space")
    if unknown:
        known = ", ".join(sorted(ALL_SCOPES))
        raise InvalidScopeError(f"unknown scope {unknown[0]!r}; known: {known}")
    return frozenset(names)


def format_scopes(scopes: Iterable[str]) -> str:
    """Return scopes as one canonical, sorted, space-separated value."""
    return " ".join(sorted(scopes))
