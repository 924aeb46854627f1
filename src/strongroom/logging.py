"""Structured logging, set up by the entry points (the API app and the CLI) only.

Library code asks for a named logger and logs an event name with fields:

    log.warning("login_failed", extra={"user_id": 7, "reason": "bad password"})

which prints as `... WARNING strongroom.api login_failed user_id=7 reason='bad
password'` in text form, or as one JSON object per line in production.

As a safety net behind the rule that tokens and passwords are never logged, every
record passes `RedactingFilter` on its way out: fields named like a credential
are blanked, and JWTs, bearer credentials, argon2 hashes and `password=...`
pairs are cut out of messages, field values and tracebacks.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "redact",
]

REDACTED = "[redacted]"

# Attributes every LogRecord has; anything else on a record came from `extra`.
# uvicorn's `color_message` (its message again, with terminal colour codes) is
# left out too: the plain message is already on the line.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}

_SENSITIVE_KEY = re.compile(
    r"(?i)(^|_)(password|passwd|secret|token|authorization|cookie|jwt|api_key)s?($|_)"
)
_KEYS = "password|passwd|secret|access_token|refresh_token|token|authorization|cookie"
# Every pattern below starts with one of these words, so a text without any of
# them needs no redaction.
_TRIGGER = re.compile(rf"(?i)eyJ|bearer|basic|\$argon2|{_KEYS}")
# Whitespace, quotes and '=' would break key=value parsing; control characters
# (ESC, BEL, NUL, C1...) could rewrite the reader's terminal. repr() escapes them.
_NEEDS_QUOTES = re.compile(r"[\s'\"=\x00-\x1f\x7f-\x9f]")
_PATTERNS = [
    # A JWS in compact form: base64url JSON header ("eyJ" is '{"'), two dots.
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+"), rf"\1\2{REDACTED}"),
    (re.compile(r"\$argon2(?:id|i|d)\$[^\s\"']+"), REDACTED),
    # "password": "...", password='...' (quoted values may hold spaces) ...
    (
        re.compile(rf"(?i)\b({_KEYS})([\"']?\s*[=:]\s*)([\"'])(?:(?!\3).)*\3"),
        rf"\1\2\3{REDACTED}\3",
    ),
    # ... and password=..., token: ... unquoted, in query strings or prose.
    (
        re.compile(rf"(?i)\b({_KEYS})([\"']?\s*[=:]\s*)(?![\"'])[^\s&,;]+"),
        rf"\1\2{REDACTED}",
    ),
]


def configure_logging(
    log_format: Literal["text", "json"] = "text",
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
) -> None:
    """Send all logging to `stream` (stderr) in text or JSON form, redacted.

    Replaces any handler installed by an earlier call, so calling it twice (as
    tests do) does not print every line twice.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    handler.set_name("strongroom")

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "strongroom"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic narrates every migration context it opens; the outcome is our
    # own `schema_upgraded` line. Its details show at DEBUG.
    quiet = level > logging.DEBUG
    logging.getLogger("alembic").setLevel(logging.WARNING if quiet else logging.NOTSET)
    logging.captureWarnings(True)


def redact(text: str) -> str:
    """Return `text` with anything that looks like a credential replaced."""
    # One cheap scan first: almost every value (paths, route names, ids) holds
    # none of the words that start a credential, and then no pattern can match.
    if not _TRIGGER.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Blank credentials in a record's message, fields and traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact `record` in place; never drops it."""
        record.msg = redact(_message_of(record))
        record.args = None
        for key in _fields_of(record):
            value = record.__dict__[key]
            if _is_sensitive_key(key):
                record.__dict__[key] = REDACTED
            elif isinstance(value, str):
                record.__dict__[key] = redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger> <event> key=value ...`, one line per event."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record (plus its traceback, if any, on the lines below)."""
        fields = " ".join(
            f"{key}={_text_value(record.__dict__[key])}" for key in _fields_of(record)
        )
        line = f"{_timestamp(record)} {record.levelname} {record.name} "
        line += record.getMessage() + (f" {fields}" if fields else "")
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return f"{line}\n{record.exc_text}" if record.exc_text else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, the fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a single line of JSON."""
        entry: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update((key, record.__dict__[key]) for key in _fields_of(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def _fields_of(record: logging.LogRecord) -> list[str]:
    return [key for key in record.__dict__ if key not in _RECORD_ATTRS]


def _message_of(record: logging.LogRecord) -> str:
    # A record whose arguments do not fit its format must still be logged (and
    # redacted), not raise in the caller.
    try:
        return record.getMessage()
    except (TypeError, ValueError):
        return f"{record.msg} {record.args!r}"


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text_value(value: object) -> str:
    if isinstance(value, str):
        plain = value and not _NEEDS_QUOTES.search(value)
        return value if plain else repr(value)
    return str(value)


@functools.lru_cache(maxsize=512)
def _is_sensitive_key(key: str) -> bool:
    return _SENSITIVE_KEY.search(key) is not None
