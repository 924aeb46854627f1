"""Fixtures: a live server for the page, Debian's Chromium, a watched page per test.

The browser is the system's `/usr/bin/chromium` (installed by `make test`), driven
by Playwright with `executable_path`; Playwright's own browser downloads are never
used. Every page is watched: a JavaScript dialog, an uncaught error or a request
to anything but the loopback server fails the test that caused it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from browser_env import (
    ADMIN,
    CHROMIUM,
    CHROMIUM_ARGS,
    CONFIG,
    DESKTOP,
    MAX_UPLOAD_BYTES,
    USER,
    WAIT_MS,
    Watched,
)
from page_steps import wait_for_files
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, sync_playwright

from api.live_server import LiveServer, run_server


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Start one server with an admin (ada), a user (ben) and two directory spaces."""
    parent = tmp_path_factory.mktemp("web")
    for name in ("team", "manuals"):
        (parent / name).mkdir()
    (parent / "manuals" / "guide.txt").write_text("read me\n")
    config = CONFIG.format(data_dir=parent / "data", max_upload_bytes=MAX_UPLOAD_BYTES)
    users = [(*ADMIN, "admin"), (*USER, "user")]
    with run_server(parent, config, "auto", users) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Launch headless Chromium once for the whole run."""
    if not CHROMIUM.exists():
        reason = (
            "browser tests need Debian's chromium at /usr/bin/chromium; `make test` "
            "installs it with apt-get, which failed or was not run here"
        )
        # CI must run them: there a missing browser is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def api_sessions(web_server: LiveServer) -> dict[str, dict[str, object]]:
    """One API login each for ada and ben, in the form the page keeps a session.

    Most tests start signed in through this (one password hash per run, not
    per test); the tests of signing in and out use the form and their own
    sessions, since signing out ends the session for every page that shares it.
    """
    sessions: dict[str, dict[str, object]] = {}
    for name, password in (ADMIN, USER):
        tokens = web_server.login(name, password).json()
        assert isinstance(tokens, dict), tokens
        account = web_server.request(
            "GET", "/api/v1/account",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        ).json()
        assert isinstance(account, dict), account
        sessions[name] = {
            "access": tokens["access_token"],
            "refresh": tokens["refresh_token"],
            "expiresAt": (time.time() + tokens["expires_in"]) * 1000,
            "lifetimeMs": tokens["expires_in"] * 1000,
            "scopes": account["scopes"],
            "name": account["name"],
            "role": account["role"],
        }
    return sessions


@pytest.fixture
def open_page(
    browser: Browser, web_server: LiveServer, api_sessions: dict[str, dict[str, object]]
) -> Iterator[Callable[..., Watched]]:
    """Return a function that opens a fresh, watched page (own storage) at `/`.

    With `session="ada"` (or "ben") the page starts signed in, as after a reload.
    """
    contexts: list[BrowserContext] = []
    watched: list[Watched] = []

    def open_one(viewport: dict[str, int] = DESKTOP, color_scheme: str = "light",
                 port: int | None = None, session: str | None = None) -> Watched:
        origin = f"http://127.0.0.1:{port or web_server.port}"
        context = browser.new_context(
            viewport=viewport, base_url=origin, accept_downloads=True,
            color_scheme=color_scheme,  # type: ignore[arg-type]
        )
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        watch = Watched(page, origin)
        page.on("dialog", lambda dialog: _refuse_dialog(watch, dialog))
        page.on("pageerror", lambda error: watch.errors.append(str(error)))
        page.on("console", lambda message: _note_violation(watch, message.text))
        context.on("request", lambda request: _check_host(watch, request.url))
        if session is not None:
            _restore_session(page, api_sessions[session])
        page.goto("/")
        watched.append(watch)
        return watch

    yield open_one
    for context in contexts:
        context.close()
    for watch in watched:
        watch.assert_clean()


@pytest.fixture
def clean_server(web_server: LiveServer) -> LiveServer:
    """The server with `team` and both homes emptied and no failed logins counted."""
    web_server.forget_failed_logins()
    _empty(web_server.parent / "team")
    for name in (ADMIN[0], USER[0]):
        web_server.reset_home(name)
    return web_server


@pytest.fixture
def page(open_page: Callable[..., Watched], clean_server: LiveServer) -> Page:
    """A desktop-sized page at `/` of a clean server."""
    return open_page().page


@pytest.fixture
def as_ben(open_page: Callable[..., Watched], clean_server: LiveServer) -> Page:
    """A page signed in as ben (role user), showing his empty home."""
    page = open_page(session=USER[0]).page
    wait_for_files(page)
    return page


@pytest.fixture
def as_ada(open_page: Callable[..., Watched], clean_server: LiveServer) -> Page:
    """A page signed in as ada (admin), showing her empty home."""
    page = open_page(session=ADMIN[0]).page
    wait_for_files(page)
    return page


def _restore_session(page: Page, saved: dict[str, object]) -> None:
    # sessionStorage belongs to the origin: stand on it (an asset, so no page
    # script runs yet), store the session with a tab id of its own, then load.
    page.goto("/assets/icon.svg")
    page.evaluate(
        "(saved) => sessionStorage.setItem('strongroom.session',"
        " JSON.stringify({...saved, sid: crypto.randomUUID()}))",
        saved,
    )


def _note_violation(watch: Watched, text: str) -> None:
    # Chromium reports what the policy blocked as a console error naming it.
    if "Content Security Policy" in text:
        watch.policy_violations.append(text)


def _refuse_dialog(watch: Watched, dialog: Dialog) -> None:
    # The page's own "leave while uploading?" guard is expected; any other
    # dialog (alert, confirm, prompt) is script the page must never run.
    if dialog.type == "beforeunload":
        dialog.accept()
        return
    watch.dialogs.append(f"{dialog.type}: {dialog.message}")
    dialog.dismiss()


def _check_host(watch: Watched, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob"):
        return
    if parts.hostname != "127.0.0.1":
        watch.foreign_requests.append(url)


def _empty(folder: Path) -> None:
    for child in sorted(folder.rglob("*"), reverse=True):
        if child.is_dir() and not child.is_symlink():
            child.rmdir()
        else:
            child.unlink()
