"""The web page: one HTML document and the CSS and JavaScript modules it loads.

Everything here is static and ships inside the package (no build step, nothing
fetched from another host). The page talks to the server only through the
public HTTP API, with the bearer token it gets at sign-in, exactly as any other
client would; this module only finds the files and describes them so that the
API layer (`strongroom.api.web`) can serve them.

Limits: the assets are read once, when the app is built, so an edit to a file
here shows only after a restart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

__all__ = ["ASSET_URL_PREFIX", "MEDIA_TYPES", "PAGE_URL", "Asset", "load_assets"]

# Where the page lives and where its assets are served; the API owns /api, share
# links own /s, so neither prefix can ever shadow a route of theirs.
PAGE_URL = "/"
ASSET_URL_PREFIX = "/assets/"
# Only these kinds of file are served; anything else in the folder (a stray
# editor backup, Python caches) stays private.
MEDIA_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One servable file: its bytes, its media type and a strong ETag."""

    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Read the page and its assets, keyed by the URL path that serves each.

    The keys are exact paths (`/`, `/assets/app.js`); a request is answered only
    when its path is one of them, so no part of a URL ever reaches a file name.
    """
    package = resources.files(__name__)
    assets = {PAGE_URL: _asset(package.joinpath("index.html").read_bytes(),
                               "text/html; charset=utf-8")}
    for item in package.joinpath("assets").iterdir():
        media_type = MEDIA_TYPES.get(_suffix(item.name))
        if media_type is not None and item.is_file():
            assets[ASSET_URL_PREFIX + item.name] = _asset(item.read_bytes(), media_type)
    return assets


def _asset(body: bytes, media_type: str) -> Asset:
    digest = hashlib.sha256(body).hexdigest()[:32]
    return Asset(body=body, media_type=media_type, etag=f'"{digest}"')


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:] if dot > 0 else ""
