"""The case judge itself: each detector must fire on the fault it names.

A harness that never fails proves nothing, so every `must_not` detector the HTTP
cases lean on is shown a reply or a tree that breaks it, without a server.
"""

from __future__ import annotations

import http.client
import io
from pathlib import Path

import pytest
from case_checks import (
    Judged,
    SpaceProbe,
    World,
    disposition,
    effective_filename,
    judge_reply,
    judge_world,
)
from live_server import LiveServer, Reply

EXPECT_REFUSAL = {"status": [400, 403, 404], "must_not": []}


def reply(status: int = 200, body: bytes = b"", **headers: str) -> Reply:
    raw = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    message = http.client.parse_headers(io.BytesIO(raw.encode("latin-1") + b"\r\n"))
    return Reply(status, message, body, 0.01)


def verdict(answer: Reply, *must_not: str, path: str = "/x/files/a") -> list[str]:
    judged = Judged("GET", path, False, {"a": 10})
    judge_reply(answer, {**EXPECT_REFUSAL, "must_not": list(must_not)}, judged)
    return judged.violations


def test_a_quoted_semicolon_does_not_make_a_second_filename() -> None:
    value = ('inline; filename="report.txt_; filename=_run.bat"; '
             "filename*=UTF-8''report.txt%22%3B%20filename%3D%22run.bat")

    parsed = disposition(value)

    assert parsed is not None
    assert [name for name, _ in parsed[1]] == ["filename", "filename*"]
    assert effective_filename(parsed[1]) == 'report.txt"; filename="run.bat'


@pytest.mark.parametrize(
    ("header", "item"),
    [
        ('attachment; filename="a.txt"; filename="run.bat"',
         "Content-Disposition has more than one filename parameter"),
        ("attachment; filename=\"a.txt\"; filename*=UTF-8''run.bat",
         "Content-Disposition effective filename is run.bat"),
        ('attachment; filename="run.bat', "Content-Disposition has more than one "
         "filename parameter"),
    ],
    ids=["two-filenames", "filename-star-wins", "unterminated-quote"],
)
def test_disposition_detectors_fire(header: str, item: str) -> None:
    assert verdict(reply(403, content_disposition=header), item) == [
        f"must_not: {item}"]


@pytest.mark.parametrize(
    ("content_type", "disposition_value", "fires"),
    [("image/svg+xml", None, True), ("text/html; charset=utf-8", "inline", True),
     ("text/html", "attachment; filename=x.html", False), ("text/plain", None, False)],
    ids=["svg-bare", "html-inline", "html-attachment", "plain"],
)
def test_inline_active_content_detector(
    content_type: str, disposition_value: str | None, fires: bool
) -> None:
    headers = {"content_type": content_type}
    if disposition_value:
        headers["content_disposition"] = disposition_value

    found = verdict(reply(403, **headers), "inline active content")

    assert bool(found) is fires


def test_status_5xx_and_outside_secrets_are_always_violations() -> None:
    found = verdict(reply(502, b"...OUTSIDE-SECRET..."))

    assert found == ["status 502 is not one of [400, 403, 404]", "5xx: got 502",
                     "body contains OUTSIDE-SECRET"]


def test_body_larger_than_twice_the_file_is_caught() -> None:
    assert verdict(reply(403, b"x" * 21), "response body larger than 2x file size")


def test_world_sees_creation_change_and_removal_outside_the_space(
    tmp_path: Path,
) -> None:
    for name in ("lab", "outside", "team", "data"):
        (tmp_path / name).mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("OUTSIDE-SECRET")
    (tmp_path / "team" / "readme.txt").write_text("TEAM")
    server = LiveServer(tmp_path, 0, "none")
    world = World(server, SpaceProbe(server, "lab"), {}, [])

    (tmp_path / "outside" / "planted.txt").write_text("PWNED")
    (tmp_path / "outside" / "secret.txt").write_text("OUTSIDE-SECRET!")
    (tmp_path / "team" / "readme.txt").unlink()
    (tmp_path / "lab" / "inside.txt").write_text("fine")
    found = judge_world(
        ["file created outside space", "outside file modified: outside/secret.txt",
         "other space modified: team"], world)

    assert found == [
        "changed outside the space: outside/secret.txt",
        "created outside the space: outside/planted.txt",
        "removed outside the space: team/readme.txt",
        "must_not: file created outside space",
        "must_not: outside file modified: outside/secret.txt",
        "must_not: other space modified: team",
    ]


def test_world_sees_symlinks_and_staging_files_left_in_the_space(
    tmp_path: Path,
) -> None:
    for name in ("lab", "data"):
        (tmp_path / name).mkdir()
    server = LiveServer(tmp_path, 0, "none")
    world = World(server, SpaceProbe(server, "lab"), {}, [])

    (tmp_path / "lab" / "s").symlink_to("../outside/secret.txt")
    (tmp_path / "lab" / ".~sr-0123abcd").write_bytes(b"half")
    found = judge_world(["symlink exists in space", "temporary file left in space"],
                        world)

    assert found == ["must_not: symlink exists in space",
                     "must_not: temporary file left in space"]


def test_an_unknown_vocabulary_word_fails_loudly() -> None:
    with pytest.raises(ValueError, match="unknown must_not item"):
        verdict(reply(403), "response smells funny")
