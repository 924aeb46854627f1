"""Run the shared HTTP cases (tests/data/http-cases.json) against a live server.

Each case is laid out the way its `conventions` block says: setup files, folders
and links in the space `lab` (alice's read-write directory space, symlinks denied),
`outside_files` relative to P, and `other_spaces` seeded into our team/ops/bob
spaces, whose access the fixture's configuration already gives. The requests are
sent exactly as written, placeholders filled in, and every answer is judged by
`case_checks`.

The `home` variant sends the same request shapes to alice's database-mapped home
(the README asks for it): "/spaces/lab/" becomes "/spaces/home/", the setup files
are uploaded through the API, and links are left out because home has none.

Share links (/s/...) are judged like every other request, in `lab` and in
`home`: the case's `setup.shares` are made by alice through the API, in the
variant's space, when a request first names one (so a share with
`create_after_request` exists only once that request has been sent).
`{SHARE_FORGED_PATH:name:path}` has no path to change in our tokens, which name a
share row: it becomes the token of `name` pointed at a second share of `path`,
with `name`'s signature kept. `{SHARE_EXPIRED:name}` is signed with the server's
own share key for the same share, an hour past its end. Archive import counts
fully too; a case's `setup.config` (import limits, B38) has no setting to go to:
the limits are module constants for now.

The archive cases (tests/data/archive-cases.json) share this layout and these
rules; `load_cases` reads either file.

Requests marked `severity: should` are held to their expectations like the rest
(the product meets them); `should_not` items are advice and are not checked.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import forged_tokens
from case_bodies import build_body
from case_checks import Judged, SpaceProbe, World, judge_reply, judge_world
from live_server import API, LiveServer, Reply
from share_links import claims_of, forge, new_link, with_claims

__all__ = [
    "ARCHIVE_CASES_FILE",
    "CASES_FILE",
    "CaseRun",
    "Outcome",
    "Placeholders",
    "has_home_shape",
    "is_import",
    "is_share_link",
    "lay_out",
    "load_cases",
    "run_case",
    "seed_home",
]

CASES_FILE = Path(__file__).resolve().parents[1] / "data" / "http-cases.json"
ARCHIVE_CASES_FILE = CASES_FILE.with_name("archive-cases.json")
_IMPORT_ROUTE = re.compile(r"/api/v1/spaces/[^/?]+/import(/.*)?")
_PLACEHOLDER = re.compile(r"\{([A-Z][A-Z0-9_]*(?::[^{}]*)?|A\*\d+)\}")
_KNOWN_REQUEST_KEYS = {
    "method", "path", "headers", "body_kind", "body", "body_size", "body_pattern",
    "expect", "archive_members", "severity", "repeat", "multipart", "special",
    "compression", "format", "prepend_junk_bytes",
}
# Shown in reports: enough of a body to recognise it.
_EXCERPT_BYTES = 160


@dataclass
class Outcome:
    """What one case request got, and what it broke."""

    label: str
    status: int
    body: bytes
    violations: list[str] = field(default_factory=list)

    def report(self) -> str:
        """Describe the request, its answer and each violation, for a failure."""
        lines = [self.label, f"  answer: {self.status} {self.body[:_EXCERPT_BYTES]!r}"]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


@dataclass
class CaseRun:
    """The outcomes of one case's requests, and what the final state broke."""

    outcomes: dict[int, Outcome]
    final_violations: list[str]


def load_cases(path: Path = CASES_FILE) -> list[dict[str, Any]]:
    """Read the case list from the repository's copy of a case file."""
    cases: list[dict[str, Any]] = json.loads(path.read_text())["cases"]
    return cases


def is_share_link(request: Mapping[str, Any]) -> bool:
    """Tell whether a request goes to a share link."""
    return bool(request["path"].startswith("/s/"))


def is_import(request: Mapping[str, Any]) -> bool:
    """Tell whether a request goes to the archive import route."""
    return bool(_IMPORT_ROUTE.fullmatch(request["path"].split("?", 1)[0]))


def has_home_shape(request: Mapping[str, Any]) -> bool:
    """Tell whether a request has a `home` twin: it addresses `lab`, or a link
    (whose share is then made in home)."""
    return "/spaces/lab/" in request["path"] or is_share_link(request)


def run_case(server: LiveServer, case: Mapping[str, Any], variant: str) -> CaseRun:
    """Lay out `case`, send its requests (in `variant` lab or home), judge all."""
    setup = case["setup"]
    fill = Placeholders(server, setup.get("shares", []), variant)
    lay_out(server, setup, fill)
    if variant == "home":
        seed_home(server, setup)
    space = SpaceProbe(server, variant)
    files = {f["path"]: _file_bytes(f) for f in setup["files"]}
    world = World(server, space, files, setup["dirs"])
    sizes = {path: len(data) for path, data in files.items()}

    outcomes: dict[int, Outcome] = {}
    previous: Reply | None = None
    for index, request in enumerate(case["requests"]):
        if variant == "home" and not has_home_shape(request):
            continue
        expect = request.get("expect", case["expect"])
        outcome, previous = _send_and_judge(
            server, case["id"], index, request, expect, fill, variant, world, sizes,
            previous,
        )
        outcomes[index] = outcome
    final = judge_world(case["expect"]["must_not"], world)
    return CaseRun(outcomes, final)


def lay_out(
    server: LiveServer, setup: Mapping[str, Any], fill: Callable[[str], str]
) -> None:
    """Empty the tree, then create the setup's folders, files, links and spaces."""
    server.reset_tree()
    lab = server.parent / setup["space"]
    for rel_path in setup["dirs"]:
        _under(lab, rel_path).mkdir(parents=True, exist_ok=True)
    for entry in setup["files"]:
        _write(_under(lab, entry["path"]), _file_bytes(entry))
    for link in setup["symlinks"]:
        host_path = _under(lab, link["path"])
        host_path.parent.mkdir(parents=True, exist_ok=True)
        host_path.symlink_to(fill(link["target"]))
    for entry in setup["outside_files"]:
        _write(_under(server.parent, entry["path"]), _file_bytes(entry))
    for name, other in setup.get("other_spaces", {}).items():
        for entry in other.get("files", []):
            _write(_under(server.parent / name, entry["path"]), _file_bytes(entry))


def seed_home(server: LiveServer, setup: Mapping[str, Any]) -> None:
    """Empty alice's home, then upload the setup's folders and files into it."""
    server.reset_home("alice")
    for rel_path in setup["dirs"]:
        reply = server.request("POST", f"{API}/spaces/home/dirs/{rel_path}")
        assert reply.status == 201, (rel_path, reply.status, reply.body)
    for entry in setup["files"]:
        reply = server.put("home", entry["path"], _file_bytes(entry))
        assert reply.status in (200, 201), (entry["path"], reply.status, reply.body)


class Placeholders:
    """Values for {TOKEN}, {OUTSIDE_ABS...}, {JWT_*}, {SHARE*}, {RANGES_*}, {A*n}."""

    def __init__(
        self,
        server: LiveServer,
        shares: Sequence[Mapping[str, Any]] = (),
        variant: str = "lab",
    ) -> None:
        self.server = server
        self.secret = forged_tokens.server_secret(server.data_dir)
        self.share_paths = {share["name"]: share["path"] for share in shares}
        self.space = "home" if variant == "home" else "lab"
        self.links: dict[str, str] = {}
        outside = str(server.parent / "outside")
        self.fixed = {
            "TOKEN": server.tokens["alice"],
            "OUTSIDE_ABS": outside,
            "OUTSIDE_ABS_NOLEAD": outside.lstrip("/"),
            "OUTSIDE_ABS_PCT": outside.replace("/", "%2F"),
            "JWT_UNKNOWN_USER": forged_tokens.signed(
                forged_tokens.claims_for(forged_tokens.UNKNOWN_USER_ID), self.secret),
        }

    def __call__(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.value(m.group(1)), text)

    def value(self, name: str) -> str:
        """Return the value of one placeholder (without braces)."""
        if name in self.fixed:
            return self.fixed[name]
        if name.startswith("A*"):
            return "A" * int(name[2:])
        kind, _, arg = name.partition(":")
        if kind.startswith("SHARE"):
            return self._share(kind, *arg.split(":", 1))
        if kind.startswith("RANGES_"):
            count = int(arg)
            parts = (f"{2 * i}-{2 * i}" if kind == "RANGES_DISJOINT" else "0-"
                     for i in range(count))
            return "bytes=" + ",".join(parts)
        return self._jwt(kind, arg.split(":"))

    def _share(self, kind: str, name: str, forged_path: str = "") -> str:
        token = self._link(name).removeprefix("/s/")
        if kind == "SHARE":
            return token
        if kind == "SHARE_TAMPERED":
            head, _, signature = token.rpartition(".")
            return f"{head}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
        if kind == "SHARE_FORGED_PATH":
            other = claims_of(self._link(f"{name}->{forged_path}", forged_path))
            return with_claims(f"/s/{token}", shr=other["shr"]).removeprefix("/s/")
        if kind == "SHARE_EXPIRED":
            now = int(time.time())
            claims = {**claims_of(f"/s/{token}"), "iat": now - 7200,
                      "exp": now - 3600}
            return forge(self.server, claims).removeprefix("/s/")
        raise KeyError(f"unknown placeholder {kind!r}")

    def _link(self, name: str, rel_path: str | None = None) -> str:
        # Made on first use, so a share is created only once the requests
        # before its `create_after_request` point have been sent.
        if name not in self.links:
            self.links[name] = new_link(
                self.server, self.space, rel_path or self.share_paths[name])
        return self.links[name]

    def _jwt(self, kind: str, args: list[str]) -> str:
        token = self.server.tokens[args[0]]
        user_id = forged_tokens.user_id_of(token)
        if kind == "JWT_ALG_NONE":
            return forged_tokens.alg_none(token)
        if kind == "JWT_ALG_NONE_MIXEDCASE":
            return forged_tokens.alg_none(token, alg="None")
        if kind == "JWT_HS256_PUBKEY":
            # The server has no public key; anyone holding a token can read its
            # signing input, so that is the "public value" used as HMAC key.
            return forged_tokens.signed(
                forged_tokens.claims_for(user_id), token.rsplit(".", 1)[0].encode())
        if kind == "JWT_WRONG_KEY":
            return forged_tokens.signed(
                forged_tokens.claims_for(user_id), b"another-key-" * 4)
        if kind == "JWT_EXPIRED":
            return forged_tokens.expired(user_id, self.secret)
        if kind == "JWT_TAMPERED_SUB":
            other = forged_tokens.user_id_of(self.server.tokens[args[1]])
            return forged_tokens.tampered_sub(token, other)
        if kind == "JWT_SIG_REENCODED":
            return forged_tokens.reencoded_signature(token)
        raise KeyError(f"unknown placeholder {kind!r}")


def _send_and_judge(
    server: LiveServer,
    case_id: str,
    index: int,
    request: Mapping[str, Any],
    expect: Mapping[str, Any],
    fill: Callable[[str], str],
    variant: str,
    world: World,
    sizes: Mapping[str, int],
    previous: Reply | None,
) -> tuple[Outcome, Reply | None]:
    unknown = request.keys() - _KNOWN_REQUEST_KEYS
    if unknown:
        raise ValueError(f"{case_id}#{index}: unknown request keys {sorted(unknown)}")
    path = fill(request["path"])
    if variant == "home":
        path = path.replace("/spaces/lab/", "/spaces/home/")
    headers = {name: fill(value) for name, value in request["headers"].items()}
    body = build_body(request, fill)
    judged = Judged(request["method"], path, False, sizes, previous)
    reply = previous
    for _ in range(request.get("repeat", 1)):
        reply = server.request(request["method"], path, headers=headers, body=body,
                               token=None)
        judge_reply(reply, expect, judged)
    judged.violations += judge_world(expect["must_not"], world)
    assert reply is not None
    label = f"{case_id}#{index} [{variant}] {request['method']} {_short(path)}"
    violations = sorted(set(judged.violations), key=judged.violations.index)
    return Outcome(label, reply.status, reply.body, violations), reply


def _file_bytes(entry: Mapping[str, Any]) -> bytes:
    if entry.get("content") is not None:
        return str(entry["content"]).encode()
    unit = entry["pattern"].encode()
    return (unit * (entry["size"] // len(unit) + 1))[:entry["size"]]


def _under(top: Path, rel_path: str) -> Path:
    # Setup paths come from our own case file, but a slip must not write elsewhere.
    assert not rel_path.startswith("/") and ".." not in rel_path.split("/")
    return top / rel_path


def _write(host_path: Path, data: bytes) -> None:
    host_path.parent.mkdir(parents=True, exist_ok=True)
    host_path.write_bytes(data)


def _short(path: str) -> str:
    return path if len(path) <= 120 else f"{path[:100]}...({len(path)} chars)"
