"""Serve the web page at `/` and its assets under `/assets/`, with strict headers.

The page is a client of the API like any other: these routes need no token and
hand out only the static files of `strongroom.web`, read once at start-up. Every
answer carries a Content-Security-Policy that allows scripts, styles and
connections from this origin only, so even a name that smuggled markup into the
page could not run or load anything; the page itself never builds markup from
data (it inserts names as text).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from strongroom.web import ASSET_URL_PREFIX, PAGE_URL, Asset, load_assets

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE_HEADERS", "build_router"]

# No inline script or style, no eval, no plugins, no framing, no <base>; images
# may be data: URLs (the icon); forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # The page's URL fragment names folders; no other site needs to see it.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # Revalidate on every load: the modules import each other by fixed names,
    # so a long max-age could mix two versions after an upgrade. An unchanged
    # file costs a 304.
    "Cache-Control": "no-cache",
}


def build_router() -> APIRouter:
    """Read the page's files and return a router that serves them.

    Raises `OSError` if the package was installed without its web files.
    """
    assets = load_assets()
    router = APIRouter(include_in_schema=False)

    @router.api_route(PAGE_URL, methods=["GET", "HEAD"])
    def page(request: Request) -> Response:
        """Serve the page."""
        return _answer(request, assets[PAGE_URL])

    @router.api_route(ASSET_URL_PREFIX + "{name}", methods=["GET", "HEAD"])
    def asset(name: str, request: Request) -> Response:
        """Serve one asset of the page by its exact name."""
        found = assets.get(ASSET_URL_PREFIX + name)
        if found is None:
            raise HTTPException(404, f"the page has no asset named {name!r}")
        return _answer(request, found)

    return router


def _answer(request: Request, asset: Asset) -> Response:
    headers = {**PAGE_HEADERS, "ETag": asset.etag}
    if _matches(request.headers.get("if-none-match"), asset.etag):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    headers["Content-Length"] = str(len(asset.body))
    return Response(body, media_type=asset.media_type, headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    # RFC 9110, 13.1.2: a list of tags or "*", compared weakly.
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags
