"""Handing a download's bytes to the front server: X-Accel-Redirect and X-Sendfile.

With `offload = "nginx"` (or `"apache"`) the app still does everything that
decides whether and what to send: it checks the token and the scope, resolves the
path through the confined root and opens the file. Only then, instead of pushing
the bytes itself, it answers with a header that names the opened file to the front
server, which sends it with sendfile(2), Range and conditional requests included.

Design note. The name handed over is not the path the client asked for but the
path the kernel reports for the descriptor we opened (/proc/self/fd), so it has no
`..`, no symlink and no encoding left to interpret; it must also lie beneath one of
the roots the front server was told about, or the app sends the file itself. The
front server opens that path again, and what it opens must be what we checked:
nginx's internal location carries `disable_symlinks on`, so a symlink swapped in
after our check is refused there (403) rather than followed. A *hard link*
swapped in between our check and nginx's open is not caught by nginx (it has no
link-count rule); `fs.protected_hardlinks=1` (the kernel default) or a space on
its own mount closes that, as it does for the app's own check. Apache's
mod_xsendfile has no equivalent of `disable_symlinks`: use X-Sendfile only for
spaces whose trees nobody else writes to.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from starlette.responses import Response

from strongroom.api.download import (
    FileInfo,
    FileResponse,
    answer_status,
    content_headers,
)
from strongroom.config import OffloadMode, Settings
from strongroom.confine import ReadHandle
from strongroom.storage.blobs import SignableReader
from strongroom.storage.spaces import FileReader

__all__ = [
    "INTERNAL_BLOBS",
    "INTERNAL_SPACES",
    "Offloader",
    "nginx_config",
    "nginx_locations",
    "send_file",
]

# Below `offload_prefix`: home blobs and one folder per directory space.
INTERNAL_BLOBS = "blobs"
INTERNAL_SPACES = "spaces"
# What /proc/self/fd/N shows for a file whose name was removed after we opened it.
_DELETED_SUFFIX = " (deleted)"
# A path X-Sendfile can carry verbatim: printable ASCII, and no '%'.
_SENDFILE_SAFE = re.compile(r"/[\x20-\x24\x26-\x7e]*")
# Characters that end or alter a word in nginx's configuration syntax.
_NOT_PLAIN = frozenset(";{}\"'$#\\")


@dataclass(frozen=True, slots=True)
class _Tree:
    """A folder on disk that the front server may serve, and its internal URI."""

    host_path: str  # canonical (realpath), no trailing slash
    uri: str  # offload_prefix + "/blobs" or "/spaces/<name>"


class Offloader:
    """Builds the hand-over response for an opened file, or says it cannot.

    `response` answers None when the file is not below a known tree (a home kept
    in S3, a file whose folder was moved out meanwhile, a name removed since our
    open); the caller then sends the file itself.
    """

    def __init__(
        self, mode: OffloadMode, trees: Iterable[_Tree], redirect_seconds: int = 0
    ) -> None:
        self.mode = mode
        self.trees = tuple(trees)
        self.redirect_seconds = redirect_seconds

    @classmethod
    def from_settings(cls, settings: Settings, blob_dir: Path | None) -> Offloader:
        """Know the blob folder (None when blobs live elsewhere) and every space."""
        prefix = settings.offload_prefix
        trees = [
            _Tree(os.path.realpath(s.path), f"{prefix}/{INTERNAL_SPACES}/{s.name}")
            for s in settings.spaces
        ]
        if blob_dir is not None:
            blobs_uri = f"{prefix}/{INTERNAL_BLOBS}"
            trees.append(_Tree(os.path.realpath(blob_dir), blobs_uri))
        return cls(settings.offload, trees, settings.s3_redirect_seconds)

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def response(self, handle: ReadHandle, info: FileInfo) -> Response | None:
        """Return the X-Accel-Redirect or X-Sendfile answer for `handle`, if any."""
        if not self.enabled:
            return None
        host_path = _path_of(handle.fd)
        if host_path is None:
            return None
        for tree in self.trees:
            if host_path.startswith(tree.host_path + "/"):
                rel = host_path[len(tree.host_path) + 1:]
                return self._hand_over(tree, rel, host_path, info)
        return None

    def redirect(self, handle: SignableReader, info: FileInfo) -> Response | None:
        """Return a 307 to a short-lived signed URL of an S3 blob, if set up.

        The store sends the bytes, with the type and disposition the app chose
        (active types stay attachments). It cannot add our other safety headers,
        but it answers from its own origin, never ours.
        """
        if not self.redirect_seconds:
            return None
        headers = content_headers(info)
        url = handle.presigned_url(
            self.redirect_seconds,
            headers["content-type"],
            headers["content-disposition"],
        )
        return Response(status_code=307, headers={
            "location": url,
            "cache-control": "private, no-store",
            "referrer-policy": "no-referrer",
        })

    def _hand_over(
        self, tree: _Tree, rel: str, host_path: str, info: FileInfo
    ) -> Response | None:
        # The app's validator travels along; nginx's internal location sends it
        # in place of its own, so a client sees one ETag whoever sent the bytes.
        headers = {**content_headers(info), "etag": info.etag}
        if self.mode == "nginx":
            # nginx un-escapes the URI before mapping it onto its alias folder.
            uri = tree.uri + "/" + quote(rel, safe="/", errors="surrogateescape")
            headers["x-accel-redirect"] = uri
        elif _SENDFILE_SAFE.fullmatch(host_path):
            headers["x-sendfile"] = host_path
        else:
            # X-Sendfile carries the path as it is: a name outside printable
            # ASCII (reachable through an allowed link), or with a '%' that
            # mod_xsendfile would unescape, is sent by the app instead.
            return None
        return Response(status_code=200, headers=headers)


def send_file(
    offloader: Offloader | None,
    handle: FileReader,
    info: FileInfo,
    request_headers: Mapping[str, str],
    method: str,
) -> Response:
    """Answer a download: handed to the front server when set up, else sent here.

    Takes ownership of `handle` either way. A blob with no descriptor (S3) is
    never handed to the front server, which cannot reach it; with
    `s3_redirect_seconds` set, its client is redirected to the store instead.
    """
    handed_over = None
    # Validators and Range are judged here first, as without offload: a 304 or
    # 416 is the app's own answer (and no share-link download), and what is
    # handed over is only what the app would have sent itself. Without an
    # offloader nothing here runs: FileResponse judges them once.
    if offloader is not None and answer_status(info, request_headers) in (200, 206):
        if isinstance(handle, ReadHandle):
            handed_over = offloader.response(handle, info)
        elif isinstance(handle, SignableReader):
            handed_over = offloader.redirect(handle, info)
    if handed_over is None:
        return FileResponse(handle, info, request_headers, method=method)
    handle.close()
    return handed_over


def _path_of(fd: int) -> str | None:
    """Return the canonical path of an open file, or None if it has no name now."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    if not path.startswith("/") or path.endswith(_DELETED_SUFFIX):
        return None
    return path


def nginx_config(
    settings: Settings,
    blob_dir: Path | None,
    *,
    listen: str,
    upstreams: Sequence[str],
    runtime_dir: Path,
    user: str | None = None,
) -> str:
    """Return a complete nginx.conf that fronts Strongroom and serves offloads.

    `listen` is nginx's address (host:port), `upstreams` the Strongroom
    instances (host:port each), `runtime_dir` a folder nginx may write (pid,
    logs, temporary files). Requests are proxied unbuffered, so uploads stream
    to the app as they arrive and its limits apply at once; downloads the app
    hands over are served by the `internal` locations of `nginx_locations`.
    """
    run = runtime_dir
    servers = "\n".join(f"        server {_plain(u)};" for u in upstreams)
    user_line = f"user {_plain(user)};\n" if user else ""
    locations = textwrap.indent(nginx_locations(settings, blob_dir), " " * 8)
    return f"""# Generated by `strongroom nginx-config`; see docs/deploy.md.
{user_line}worker_processes auto;
pid {_quoted(str(run / "nginx.pid"))};
# At "crit": nginx writes the request line with its errors, and a share
# link's URL is its secret (the app's own logs never hold one).
error_log {_quoted(str(run / "error.log"))} crit;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {_quoted(str(run / "client_body"))};
    proxy_temp_path {_quoted(str(run / "proxy"))};
    fastcgi_temp_path {_quoted(str(run / "fastcgi"))};
    uwsgi_temp_path {_quoted(str(run / "uwsgi"))};
    scgi_temp_path {_quoted(str(run / "scgi"))};
    server_tokens off;
    sendfile on;
    tcp_nopush on;
    # The app names every download's type; nginx never guesses one from a name.
    types {{ }}
    default_type application/octet-stream;

    upstream strongroom {{
{servers}
        keepalive 64;
    }}

    server {{
        listen {_plain(listen)};
        # The app enforces its own upload limit, while the body streams in.
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        # Room for the app's longest headers (an X-Accel-Redirect of a deep
        # non-ASCII path, tus's echoed Upload-Metadata): with nginx's 4 KiB
        # default, such an answer was a 502 that took the instance out.
        proxy_buffer_size 64k;
        proxy_buffers 8 64k;
        proxy_busy_buffers_size 128k;
        proxy_http_version 1.1;
        proxy_read_timeout 300s;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        # The app believes this only from `trusted_proxies` (set it to nginx's
        # address), and nginx overwrites whatever the client sent.
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;

        location / {{
            proxy_pass http://strongroom;
        }}

{locations}    }}
}}
"""


def nginx_locations(settings: Settings, blob_dir: Path | None) -> str:
    """Return the nginx `location` blocks that serve the offloaded files.

    Each location is `internal` (reachable only through our X-Accel-Redirect),
    refuses every symlink on the way (`disable_symlinks on`), and adds the
    safety headers that nginx does not copy from our answer.
    """
    offloader = Offloader.from_settings(settings, blob_dir)
    blocks = [_location(tree) for tree in offloader.trees]
    return "\n".join([*blocks, _CHANGED_LOCATION]) if blocks else ""


def _location(tree: _Tree) -> str:
    return f"""location {tree.uri}/ {{
    internal;
    alias {_quoted(tree.host_path + "/")};
    disable_symlinks on;
    # The app judged validators and Range already; nginx sends one range and
    # the app's ETag, never validators of its own.
    etag off;
    if_modified_since off;
    max_ranges 1;
    add_header ETag $upstream_http_etag always;
    # A file removed or swapped after the app's check: a problem+json 404.
    error_page 403 404 = @strongroom_changed;
    # nginx keeps our Content-Type and Content-Disposition; these it drops.
    add_header X-Content-Type-Options "nosniff" always;
    add_header Content-Security-Policy "sandbox; default-src 'none'" always;
    add_header Cross-Origin-Resource-Policy "same-origin" always;
    add_header Referrer-Policy "no-referrer" always;
}}
"""


# What an internal location answers when the file it was handed is gone or was
# swapped for a link after the app's check: the app's own kind of answer.
_CHANGED_LOCATION = """location @strongroom_changed {
    default_type application/problem+json;
    add_header X-Content-Type-Options "nosniff" always;
    add_header Content-Security-Policy "sandbox; default-src 'none'" always;
    add_header Cache-Control "no-store" always;
    return 404 '{"type":"about:blank#not_found","title":"Not Found","status":404,\
"code":"not_found","detail":"the file changed while it was being sent; try again"}';
}
"""


def _plain(text: str) -> str:
    """Refuse a bare nginx word (an address, a user) that could break the file."""
    if not text or any(c.isspace() or c in _NOT_PLAIN for c in text):
        raise ValueError(f"{text!r} is not a plain nginx value (host:port, a name)")
    return text


def _quoted(text: str) -> str:
    """Quote a path for an nginx configuration file, or refuse it.

    nginx has no escape for `$` (it always starts a variable), so a path holding
    one, a quote, a backslash or a control character is refused, not mangled.
    """
    if any(c in '"\\$' or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(
            f"{text!r} cannot be written into an nginx configuration; "
            "rename the folder or write that location by hand"
        )
    return f'"{text}"'
