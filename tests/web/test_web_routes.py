"""The routes that serve the page (`strongroom.api.web`): what they send, with which
headers, and that the API beside them is unchanged. No browser needed."""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from api.live_server import API, PROBLEM_JSON, LiveServer
from strongroom.api.web import CONTENT_SECURITY_POLICY
from strongroom.web import ASSET_URL_PREFIX, load_assets

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "src" / "strongroom" / "web"
ASSET_NAMES = sorted(path.name for path in (WEB / "assets").iterdir())
SCRIPT_NAMES = [name for name in ASSET_NAMES if name.endswith(".js")]
# Ways to put markup or code into a page from a string; the page uses none.
UNSAFE_JS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|"
    r"new\s+Function|setTimeout\(\s*[\"'`]|setInterval\(\s*[\"'`]|"
    r"createContextualFragment|DOMParser|javascript:"
)


def test_page_is_served_with_the_strict_policy(web_server: LiveServer) -> None:
    reply = web_server.request("GET", "/", token=None)

    assert reply.status == 200
    assert reply.header("Content-Type") == "text/html; charset=utf-8"
    assert reply.header("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    assert reply.header("X-Content-Type-Options") == "nosniff"
    assert reply.header("X-Frame-Options") == "DENY"
    assert reply.header("Cache-Control") == "no-cache"
    assert b'<script type="module" src="/assets/app.js">' in reply.body


def test_policy_allows_nothing_from_another_origin() -> None:
    sources = {
        part.split()[0]: part.split()[1:]
        for part in CONTENT_SECURITY_POLICY.split("; ")
    }

    assert sources["default-src"] == ["'none'"]
    assert sources["script-src"] == ["'self'"]
    assert sources["style-src"] == ["'self'"]
    assert sources["connect-src"] == ["'self'"]
    assert sources["frame-ancestors"] == ["'none'"]
    assert sources["base-uri"] == ["'none'"]


@pytest.mark.parametrize("name", ASSET_NAMES)
def test_each_asset_is_served_with_its_type_and_the_policy(
    web_server: LiveServer, name: str
) -> None:
    reply = web_server.request("GET", f"/assets/{name}", token=None)

    assert reply.status == 200
    assert reply.body == (WEB / "assets" / name).read_bytes()
    suffix = name.rsplit(".")[-1]
    expected = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
    assert (reply.header("Content-Type") or "").startswith(expected[suffix])
    assert reply.header("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    assert reply.header("X-Content-Type-Options") == "nosniff"


def test_unchanged_asset_answers_304_to_its_etag(web_server: LiveServer) -> None:
    first = web_server.request("GET", "/assets/app.js", token=None)

    again = web_server.request(
        "GET", "/assets/app.js", token=None,
        headers={"If-None-Match": first.header("ETag") or ""},
    )

    assert again.status == 304
    assert again.body == b""
    assert again.header("ETag") == first.header("ETag")


def test_head_sends_the_headers_without_the_body(web_server: LiveServer) -> None:
    reply = web_server.request("HEAD", "/", token=None)

    assert reply.status == 200
    assert reply.body == b""
    assert int(reply.header("Content-Length") or 0) == len(load_assets()["/"].body)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/assets/missing.js",
        "/assets/..%2f__init__.py",
        "/assets/%2e%2e/__init__.py",
        "/assets/../web/__init__.py",
        "/assets/",
        "/index.html",
    ],
    ids=["missing", "encoded-slash", "encoded-dots", "plain-dots", "folder", "index"],
)
def test_anything_but_a_listed_asset_is_not_found(
    web_server: LiveServer, raw_path: str
) -> None:
    reply = web_server.request("GET", raw_path, token=None)

    assert reply.status == 404
    assert reply.header("Content-Type") == PROBLEM_JSON


def test_control_characters_in_an_asset_path_are_refused(
    web_server: LiveServer,
) -> None:
    reply = web_server.request("GET", "/assets/app.js%00", token=None)

    assert reply.status == 400
    assert reply.json()["code"] == "invalid_path"  # type: ignore[index]


def test_downloads_still_take_the_fast_lane_beside_the_page(
    web_server: LiveServer,
) -> None:
    web_server.put("team", "lane.txt", b"still here", token="ada")

    reply = web_server.request("GET", f"{API}/spaces/team/files/lane.txt", token="ada")

    assert (reply.status, reply.body) == (200, b"still here")
    assert "sandbox" in (reply.header("Content-Security-Policy") or "")


def test_page_has_no_inline_script_style_or_handler() -> None:
    finder = _InlineFinder()

    finder.feed((WEB / "index.html").read_text())

    assert finder.found == []


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_scripts_never_turn_strings_into_markup_or_code(name: str) -> None:
    source = (WEB / "assets" / name).read_text()

    assert UNSAFE_JS.findall(source) == []


def test_every_web_file_is_in_the_wheels_package_data() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["strongroom.web"]
    files = [
        path.relative_to(WEB).as_posix()
        for path in WEB.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc")
    ]

    missing = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]

    assert files and missing == []


def test_every_served_asset_is_a_file_of_the_package() -> None:
    served = {key.removeprefix(ASSET_URL_PREFIX) for key in load_assets() if key != "/"}

    assert served == set(ASSET_NAMES)


def test_web_package_imports_only_the_standard_library() -> None:
    """The page reaches the server over HTTP only (STYLE.md, module boundaries)."""
    tree = ast.parse((WEB / "__init__.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    }

    outside = imported - set(sys.stdlib_module_names) - {"__future__"}

    assert outside == set()


class _InlineFinder(HTMLParser):
    """Collect inline scripts, style elements and attributes, and event handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> element")
        self.found.extend(
            f"{name}= on <{tag}>" for name in names
            if name == "style" or name.startswith("on")
        )
