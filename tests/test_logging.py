"""Structured logging: text and JSON lines, and the redaction safety net."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from strongroom.logging import RedactingFilter, configure_logging

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlLWJ5dGVz"
ARGON2 = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Where configured logging writes; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger("strongroom.test")


def test_text_lines_carry_the_event_and_its_fields(
    output: io.StringIO, log: logging.Logger
) -> None:
    configure_logging("text", stream=output)

    log.warning("login_failed", extra={"user_id": 7, "reason": "bad password"})

    line = output.getvalue().strip()
    assert line.endswith(
        "WARNING strongroom.test login_failed user_id=7 reason='bad password'"
    )
    assert line[:4].isdigit() and "Z " in line


@pytest.mark.parametrize("form", ["text", "json"])
def test_uvicorns_coloured_copy_of_the_message_is_left_out(
    output: io.StringIO, form: str
) -> None:
    configure_logging(form, stream=output)

    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"},
    )

    line = output.getvalue()
    assert "Started server process [42]" in line
    assert "color_message" not in line and "\x1b" not in line and "[36m" not in line


def test_alembics_narration_shows_only_at_debug(output: io.StringIO) -> None:
    configure_logging("text", stream=output)
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    logging.getLogger("alembic.runtime.migration").warning("something is off")
    configure_logging("text", level=logging.DEBUG, stream=output)
    logging.getLogger("alembic.runtime.migration").info("Running upgrade")

    lines = output.getvalue()
    assert "Context impl" not in lines
    assert "something is off" in lines and "Running upgrade" in lines


def test_json_lines_are_one_object_each(
    output: io.StringIO, log: logging.Logger
) -> None:
    configure_logging("json", stream=output)

    log.info(
        "file_downloaded", extra={"space": "docs", "rel_path": "a b.pdf", "bytes": 5}
    )
    log.info("second")

    first, second = (json.loads(line) for line in output.getvalue().splitlines())
    assert first["event"] == "file_downloaded" and first["level"] == "info"
    assert (first["space"], first["rel_path"], first["bytes"]) == ("docs", "a b.pdf", 5)
    assert first["logger"] == "strongroom.test" and first["ts"].endswith("Z")
    assert second["event"] == "second"


def test_configuring_twice_does_not_double_lines(
    output: io.StringIO, log: logging.Logger
) -> None:
    configure_logging("text", stream=output)
    configure_logging("text", stream=output)

    log.warning("once")

    assert output.getvalue().count("once") == 1


def test_level_hides_debug_by_default(output: io.StringIO, log: logging.Logger) -> None:
    configure_logging("text", stream=output)

    log.debug("path_walk_step")

    assert output.getvalue() == ""


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize(
    ("message", "args", "extra", "secret"),
    [
        ("auth_header %s", (f"Bearer {JWT}",), {}, JWT),
        ("header", (), {"authorization": "Bearer abc.def"}, "abc.def"),
        ("login", (), {"password": "hunter2-horse"}, "hunter2-horse"),
        ("login", (), {"new_password": "hunter2-horse"}, "hunter2-horse"),
        ("token_issued", (), {"access_token": JWT}, JWT),
        ("token_seen", (), {"value": JWT}, JWT),
        ("form %s", ("username=bob&password=hunter2-horse",), {}, "hunter2-horse"),
        ("body %s", ('{"password": "hunter two"}',), {}, "hunter two"),
        ("row", (), {"stored": ARGON2}, "c2FsdHNhbHQ"),
        ("cookie", (), {"header": "Cookie: session=abcdef123"}, "abcdef123"),
    ],
    ids=[
        "bearer-in-args",
        "authorization-field",
        "password-field",
        "suffixed-password-field",
        "token-field",
        "jwt-in-any-field",
        "password-in-form",
        "password-in-json",
        "argon2-hash",
        "cookie",
    ],
)
def test_credentials_never_reach_the_output(
    output: io.StringIO,
    log: logging.Logger,
    log_format: str,
    message: str,
    args: tuple[object, ...],
    extra: dict[str, object],
    secret: str,
) -> None:
    configure_logging(log_format, stream=output)  # type: ignore[arg-type]

    log.warning(message, *args, extra=extra)

    assert secret not in output.getvalue()
    assert "[redacted]" in output.getvalue()


def test_tracebacks_are_redacted_too(output: io.StringIO, log: logging.Logger) -> None:
    configure_logging("text", stream=output)

    try:
        raise ValueError(f"could not parse {JWT}")
    except ValueError:
        log.exception("request_crashed")

    assert "ValueError" in output.getvalue() and JWT not in output.getvalue()


def test_ordinary_words_about_tokens_are_kept(
    output: io.StringIO, log: logging.Logger
) -> None:
    configure_logging("text", stream=output)

    log.warning("token_expired", extra={"user_id": 3, "reason": "token has expired"})

    assert "token_expired user_id=3 reason='token has expired'" in output.getvalue()


def test_a_record_with_mismatched_arguments_is_kept_not_raised() -> None:
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "two %s %s", ("a",), None
    )

    kept = RedactingFilter().filter(record)

    assert kept and "two %s %s" in record.getMessage()
