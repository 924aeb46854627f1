"""Access tokens: issue, verify, and every forged or confused token refused.

The refusal cases follow ../shared/cases/jwt-attacks.json (ids in brackets); the
tokens are built here by hand, with `hmac` where a key holder is simulated.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from strongroom.auth.keys import (
    MIN_SECRET_BYTES,
    SECRET_FILE_NAME,
    KeySet,
    load_or_create_secret,
)
from strongroom.auth.tokens import MAX_TOKEN_BYTES, TokenAuthority
from strongroom.errors import AuthError, ConfigError

SECRET = bytes(range(64))
OTHER_SECRET = bytes(range(1, 65))
KID = KeySet.from_secret(SECRET).active.kid


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def forge(
    header: object,
    payload: object,
    key: bytes | None = SECRET,
    digest: str = "sha256",
) -> str:
    """Build a JWS by hand; `bytes` header or payload are used exactly as given."""
    head = header if isinstance(header, bytes) else compact(header)
    body = payload if isinstance(payload, bytes) else compact(payload)
    signing_input = f"{b64(head)}.{b64(body)}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), digest).digest()
    )
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture
def authority() -> TokenAuthority:
    return TokenAuthority(KeySet.from_secret(SECRET))


@pytest.fixture
def token(authority: TokenAuthority) -> str:
    return authority.issue_access_token(42, 900).value


@pytest.fixture
def claims(token: str) -> dict[str, object]:
    """The payload of a fresh valid token, to edit and re-sign."""
    return json.loads(unb64(token.split(".")[1]))


HEADER = {"alg": "HS256", "typ": "at+jwt", "kid": KID}


def refused(authority: TokenAuthority, token: object) -> str:
    """Verify `token`, expect AuthError, and return its message."""
    with pytest.raises(AuthError) as caught:
        authority.verify_access_token(token)  # type: ignore[arg-type]
    return str(caught.value)


# Issuing and verifying


def test_issued_token_verifies_to_its_claims(authority: TokenAuthority) -> None:
    issued = authority.issue_access_token(42, 900)

    verified = authority.verify_access_token(issued.value)

    assert verified == issued.claims
    assert verified.user_id == 42 and issued.expires_in == 900
    assert verified.expires_at - verified.issued_at < timedelta(seconds=900)
    assert verified.expires_at - verified.issued_at > timedelta(seconds=899)


def test_issued_token_has_the_at_jwt_header_and_string_subject(token: str) -> None:
    header, payload, _ = (unb64(part) for part in token.split("."))

    assert json.loads(header) == HEADER
    body = json.loads(payload)
    assert body["sub"] == "42" and body["aud"] == "strongroom"
    assert body["exp"] - body["iat"] == 900
    assert body["iss"] == "strongroom-auth"
    assert set(body) == {
        "sub", "aud", "iss", "iat", "exp", "jti", "iat_us", "sid", "scope"
    }


def test_each_token_gets_its_own_id(authority: TokenAuthority) -> None:
    ids = {authority.issue_access_token(1, 60).claims.token_id for _ in range(20)}

    assert len(ids) == 20


def test_token_repr_leaves_out_the_value(authority: TokenAuthority) -> None:
    issued = authority.issue_access_token(1, 60)

    assert issued.value not in repr(issued)


@pytest.mark.parametrize(("user_id", "ttl"), [(0, 60), (1, 0), (-1, 60)])
def test_issue_refuses_nonsense_arguments(
    authority: TokenAuthority, user_id: int, ttl: int
) -> None:
    with pytest.raises(ValueError):
        authority.issue_access_token(user_id, ttl)


def test_expired_token_is_refused() -> None:
    """[CLM-01] A token past its exp, with no leeway."""
    an_hour_ago = time.time_ns() - 3600 * 10**9
    issuer = TokenAuthority(KeySet.from_secret(SECRET), clock_ns=lambda: an_hour_ago)
    stale = issuer.issue_access_token(42, 60).value

    assert "expired" in refused(TokenAuthority(KeySet.from_secret(SECRET)), stale)


def test_token_issued_in_the_future_is_refused() -> None:
    later = time.time_ns() + 3600 * 10**9
    issuer = TokenAuthority(KeySet.from_secret(SECRET), clock_ns=lambda: later)
    early = issuer.issue_access_token(42, 7200).value

    assert "not valid yet" in refused(TokenAuthority(KeySet.from_secret(SECRET)), early)


def test_token_signed_with_another_secret_is_refused(token: str) -> None:
    other = TokenAuthority(KeySet.from_secret(OTHER_SECRET))

    assert "unknown key" in refused(other, token)


# Revocation by time


def test_password_change_revokes_tokens_from_the_same_second(
    authority: TokenAuthority,
) -> None:
    """[LIF-02] iat has whole seconds; iat_us orders a token and a revocation."""
    verified = authority.verify_access_token(authority.issue_access_token(7, 60).value)

    assert verified.is_revoked_by(verified.issued_at + timedelta(microseconds=1))
    assert not verified.is_revoked_by(verified.issued_at)
    assert not verified.is_revoked_by(verified.issued_at - timedelta(seconds=5))


# Algorithm and header attacks


@pytest.mark.parametrize(
    "alg",
    ["none", "None", "nOnE", "", None, ["HS256"], {}, "HS512", "hs256", "RS256"],
    ids=repr,
)
def test_header_with_another_alg_is_refused_unsigned(
    authority: TokenAuthority, claims: dict[str, object], alg: object
) -> None:
    """[ALG-01, ALG-02, ALG-04, ALG-05] Unsecured and type-confused alg values."""
    header = {"alg": alg, "typ": "at+jwt", "kid": KID}

    refused(authority, forge(header, claims, key=None))
    refused(authority, forge(header, claims, key=None).rstrip("."))
    refused(authority, forge(header, claims, key=SECRET))


def test_header_without_alg_is_refused(
    authority: TokenAuthority, claims: dict[str, object]
) -> None:
    refused(authority, forge({"typ": "at+jwt", "kid": KID}, claims))


def test_alg_none_with_the_original_signature_is_refused(
    authority: TokenAuthority, token: str
) -> None:
    """[ALG-05]"""
    _, payload, signature = token.split(".")
    none_header = b64(compact({**HEADER, "alg": "none"}))

    refused(authority, f"{none_header}.{payload}.{signature}")


@pytest.mark.parametrize(("alg", "digest"), [("HS384", "sha384"), ("HS512", "sha512")])
def test_other_hmac_algorithms_with_the_real_secret_are_refused(
    authority: TokenAuthority, claims: dict[str, object], alg: str, digest: str
) -> None:
    """[ALG-10] The key is bound to HS256 alone."""
    refused(authority, forge({**HEADER, "alg": alg}, claims, digest=digest))


@pytest.mark.parametrize(
    "key",
    [b"", b"\x00", b" ", b"null", b"undefined", b"secret", b"your-256-bit-secret"],
    ids=repr,
)
def test_tokens_signed_with_blank_or_sample_keys_are_refused(
    authority: TokenAuthority, claims: dict[str, object], key: bytes
) -> None:
    """[ALG-13, ALG-14]"""
    assert "signature" in refused(authority, forge(HEADER, claims, key=key))


@pytest.mark.parametrize(
    "extra",
    [
        {"kid": "../../../../etc/hostname"},
        {"kid": 0},
        {"kid": ["k1"]},
        {"jwk": {"kty": "oct", "k": "AAAA"}},
        {"x5u": "http://127.0.0.1:9/cert.pem"},
        {"crit": ["exp"]},
        {"zip": "DEF"},
        {"enc": "A256GCM"},
    ],
    ids=lambda extra: next(iter(extra)),
)
def test_headers_with_extra_members_are_refused_even_when_signed(
    authority: TokenAuthority, claims: dict[str, object], extra: dict[str, object]
) -> None:
    """[KID-02..06, HDR-02, HDR-03, HDR-05] Only our exact header is accepted."""
    message = refused(authority, forge({**HEADER, **extra}, claims))

    assert "header" in message


def test_header_with_another_typ_is_refused(
    authority: TokenAuthority, claims: dict[str, object]
) -> None:
    """[KID-09] A token of another purpose (share+jwt, plain JWT) is no access token."""
    for typ in ("JWT", "share+jwt", "AT+JWT"):
        refused(authority, forge({**HEADER, "typ": typ}, claims))


@pytest.mark.parametrize(
    "raw_header",
    [
        b'{"alg":"HS256","alg":"none","typ":"at+jwt","kid":"%s"}' % KID.encode(),
        b'{"alg":"none","alg":"HS256","typ":"at+jwt","kid":"%s"}' % KID.encode(),
        b'{"alg":"HS256","typ":"at+jwt","typ":"at+jwt","kid":"%s"}' % KID.encode(),
        b'{"alg":"HS256","typ":"at+jwt","kid":"AAAAAAAAAAAAAAAA","kid":"%s"}'
        % KID.encode(),
    ],
    ids=["alg-then-none", "none-then-alg", "same-twice", "kid-twice"],
)
def test_duplicate_header_members_are_refused_even_when_signed(
    authority: TokenAuthority, claims: dict[str, object], raw_header: bytes
) -> None:
    """[HDR-06]"""
    refused(authority, forge(raw_header, claims))


def test_jwe_compact_form_is_refused(authority: TokenAuthority) -> None:
    """[HDR-05] Five segments: a JWE, never accepted."""
    header = b64(compact({"alg": "dir", "enc": "A256GCM"}))
    parts = [header] + [b64(os.urandom(16)) for _ in range(4)]

    refused(authority, ".".join(parts))


# Signature and payload tampering


def test_payload_edited_without_resigning_is_refused(
    authority: TokenAuthority, token: str, claims: dict[str, object]
) -> None:
    """[ALG-08]"""
    header, _, signature = token.split(".")
    edited = b64(compact({**claims, "sub": "1"}))

    assert "signature" in refused(authority, f"{header}.{edited}.{signature}")


def test_payload_reserialised_with_spaces_is_refused(
    authority: TokenAuthority, token: str, claims: dict[str, object]
) -> None:
    """[ALG-08] Same claims, other bytes: the MAC covers the bytes."""
    header, _, signature = token.split(".")
    spaced = b64(json.dumps(claims, separators=(", ", ": ")).encode())

    refused(authority, f"{header}.{spaced}.{signature}")


def test_signature_of_another_token_is_refused(authority: TokenAuthority) -> None:
    """[ALG-07]"""
    first = authority.issue_access_token(1, 60).value.split(".")
    second = authority.issue_access_token(2, 60).value.split(".")

    refused(authority, f"{first[0]}.{second[1]}.{first[2]}")
    refused(authority, f"{second[0]}.{second[1]}.{first[2]}")


# Claims


@pytest.mark.parametrize(
    "claim", ["exp", "iat", "sub", "jti", "aud", "iss", "iat_us"]
)
def test_token_without_a_required_claim_is_refused(
    authority: TokenAuthority, claims: dict[str, object], claim: str
) -> None:
    """[CLM-04] Even correctly signed."""
    del claims[claim]

    assert claim in refused(authority, forge(HEADER, claims))


@pytest.mark.parametrize(
    "aud",
    ["other-service", "", ["strongroom", "other-service"], ["strongroom"], [], 7, None],
    ids=repr,
)
def test_token_for_another_audience_is_refused(
    authority: TokenAuthority, claims: dict[str, object], aud: object
) -> None:
    """[CLM-05] Exactly one string audience, ours."""
    refused(authority, forge(HEADER, {**claims, "aud": aud}))


@pytest.mark.parametrize(
    "sub",
    [1, "", "alice", "../1", "1' OR '1'='1", "01", "-1", "1.0", " 1", "9" * 20, None],
    ids=repr,
)
def test_token_whose_subject_is_no_user_id_is_refused(
    authority: TokenAuthority, claims: dict[str, object], sub: object
) -> None:
    """[CLM-07]"""
    refused(authority, forge(HEADER, {**claims, "sub": sub}))


@pytest.mark.parametrize(
    ("claim", "raw"),
    [
        ("exp", '"9999999999"'),
        ("exp", "true"),
        ("exp", "1.5e9"),
        ("exp", "1e400"),
        ("exp", "9" * 5000),
        ("exp", "NaN"),
        ("exp", "Infinity"),
        ("exp", "-1"),
        ("exp", "null"),
        ("exp", str(2**64)),
        ("iat", '"0"'),
        ("iat_us", "1.5"),
        ("nbf", '"0"'),
    ],
    ids=lambda value: value if len(value) < 20 else f"{len(value)}-digits",
)
def test_time_claims_of_the_wrong_type_are_refused(
    authority: TokenAuthority, claims: dict[str, object], claim: str, raw: str
) -> None:
    """[CLM-08] Strict JSON integers only; built as raw bytes, signed for real."""
    body = compact({**claims, claim: "PLACEHOLDER"})
    body = body.replace(b'"PLACEHOLDER"', raw.encode())

    refused(authority, forge(HEADER, body))


def test_token_not_valid_before_a_future_nbf_is_refused(
    authority: TokenAuthority, claims: dict[str, object]
) -> None:
    """[CLM-02]"""
    refused(authority, forge(HEADER, {**claims, "nbf": int(time.time()) + 3600}))


def test_payload_that_is_not_an_object_is_refused(authority: TokenAuthority) -> None:
    for payload in (b"[]", b'"x"', b"42", b"null"):
        refused(authority, forge(HEADER, payload))


# Encoding attacks


@pytest.mark.parametrize(
    "size", [MAX_TOKEN_BYTES + 1, 100_000, 1_000_000], ids=["cap+1", "100KB", "1MB"]
)
def test_oversized_token_is_refused_before_decoding(
    authority: TokenAuthority, size: int
) -> None:
    """[ENC-01]"""
    huge = b64(b"A" * size)

    started = time.perf_counter()
    message = refused(authority, f"{huge}.{huge}.{huge}")
    elapsed = time.perf_counter() - started

    assert "too long" in message and elapsed < 0.5


@pytest.mark.parametrize("depth", [1000, 3000, 20000])
def test_deeply_nested_header_is_refused_without_crashing(
    authority: TokenAuthority, claims: dict[str, object], depth: int
) -> None:
    """[ENC-02] RecursionError must become AuthError; 20000 bypasses the size cap."""
    header = b'{"alg":"HS256","x":' + b"[" * depth + b"]" * depth + b"}"
    token = forge(header, claims)

    if len(token) <= MAX_TOKEN_BYTES:
        refused(authority, token)
    else:
        with pytest.raises(AuthError):
            authority._verify_unbounded(token)  # past the size gate, on purpose


@pytest.mark.parametrize(
    "raw_header",
    [
        b'{"alg":"HS256","kid":"\xc3\x28"}',
        '{"alg":"HS256","typ":"at+jwt"}'.encode("utf-16"),
        '{"alg":"HS256","typ":"at+jwt"}'.encode("utf-32"),
        b'\xef\xbb\xbf{"alg":"HS256","typ":"at+jwt"}',
        b'{"alg":"HS256","typ":"at+jwt","kid":"\\ud800"}',
    ],
    ids=["bad-utf8", "utf16", "utf32", "bom", "lone-surrogate"],
)
def test_header_that_is_not_strict_utf8_json_is_refused(
    authority: TokenAuthority, claims: dict[str, object], raw_header: bytes
) -> None:
    """[ENC-04]"""
    refused(authority, forge(raw_header, claims))


def test_payload_in_utf16_is_refused_even_when_signed(
    authority: TokenAuthority, claims: dict[str, object]
) -> None:
    """[ENC-04] Python's json would read it; JWT JSON is UTF-8 only."""
    refused(authority, forge(HEADER, json.dumps(claims).encode("utf-16")))


def test_non_ascii_characters_in_the_token_are_refused(
    authority: TokenAuthority, token: str
) -> None:
    refused(authority, token[:10] + "é" + token[10:])


def test_token_that_is_not_a_string_is_refused(
    authority: TokenAuthority, token: str
) -> None:
    refused(authority, token.encode())
    refused(authority, None)


def mutations_of(token: str) -> dict[str, str]:
    """[ENC-05, LIF-05] Strings that lenient base64 decoders read as `token`."""
    header, payload, signature = token.split(".")
    last = signature[-1]
    sibling = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # HS256 signatures are 43 characters: the last one carries 2 unused bits.
    noncanonical = sibling[sibling.index(last) ^ 1]
    one_mod_4 = signature + "A" * ((1 - len(signature)) % 4)
    return {
        "padding-on-signature": f"{token}=",
        "double-padding": f"{token}==",
        "padding-on-header": f"{header}=.{payload}.{signature}",
        "padding-on-payload": f"{header}.{payload}==.{signature}",
        "standard-alphabet": token.replace("-", "+").replace("_", "/") + "+/",
        "space-inside": f"{header}.{payload[:5]} {payload[5:]}.{signature}",
        "bangs-inside": f"{header}.{payload}.{signature[:5]}!!!!{signature[5:]}",
        "tilde-inside": f"{header[:3]}~{header[3:]}.{payload}.{signature}",
        "extra-dot": f"{header}..{payload}.{signature}",
        "newline": f"{token}\n",
        "unused-bits": f"{header}.{payload}.{signature[:-1]}{noncanonical}",
        "length-1-mod-4": f"{header}.{payload}.{one_mod_4}",
        "two-segments": f"{header}.{payload}",
        "four-segments": f"{token}.{signature}",
    }


@pytest.mark.parametrize("mutation", sorted(mutations_of("a.b.c")))
def test_non_canonical_base64url_is_refused(
    authority: TokenAuthority, token: str, mutation: str
) -> None:
    refused(authority, mutations_of(token)[mutation])


# The signing secret


def test_authority_refuses_a_short_secret() -> None:
    """[ALG-13] Start-up stops with a weak HS key."""
    with pytest.raises(ConfigError, match="at least 32"):
        KeySet.from_secret(b"x" * (MIN_SECRET_BYTES - 1))


def test_first_start_creates_a_private_random_secret(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path)

    path = tmp_path / SECRET_FILE_NAME
    assert len(secret) >= MIN_SECRET_BYTES and path.read_bytes() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [SECRET_FILE_NAME]


def test_later_starts_read_the_same_secret(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path)

    assert load_or_create_secret(tmp_path) == first


def test_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    secrets_seen: list[bytes] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        secrets_seen.append(load_or_create_secret(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(secrets_seen)) == 1 and len(secrets_seen) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == [SECRET_FILE_NAME]


def write_secret(folder: Path, content: bytes, mode: int = 0o600) -> Path:
    path = folder / SECRET_FILE_NAME
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_a_secret_readable_by_others_stops_start_up(tmp_path: Path, mode: int) -> None:
    write_secret(tmp_path, secrets.token_bytes(64), mode)

    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_secret(tmp_path)


def test_a_short_secret_stops_start_up(tmp_path: Path) -> None:
    write_secret(tmp_path, secrets.token_bytes(MIN_SECRET_BYTES - 1))

    with pytest.raises(ConfigError, match="at least 32"):
        load_or_create_secret(tmp_path)


def test_an_empty_secret_file_stops_start_up(tmp_path: Path) -> None:
    write_secret(tmp_path, b"")

    with pytest.raises(ConfigError, match="delete the file"):
        load_or_create_secret(tmp_path)


def test_a_repeated_pattern_secret_stops_start_up(tmp_path: Path) -> None:
    write_secret(tmp_path, b"changeme" * 8)

    with pytest.raises(ConfigError, match="repeated pattern"):
        load_or_create_secret(tmp_path)


def test_a_hex_secret_written_by_an_operator_is_accepted(tmp_path: Path) -> None:
    write_secret(tmp_path, secrets.token_hex(32).encode())

    assert len(load_or_create_secret(tmp_path)) == 64


def test_a_symlinked_secret_stops_start_up(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(secrets.token_bytes(64))
    elsewhere.chmod(0o600)
    (tmp_path / SECRET_FILE_NAME).symlink_to(elsewhere)

    with pytest.raises(ConfigError, match="symlink"):
        load_or_create_secret(tmp_path)


def test_a_directory_in_place_of_the_secret_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE_NAME).mkdir(mode=0o700)

    with pytest.raises(ConfigError):
        load_or_create_secret(tmp_path)


@pytest.mark.skipif(
    os.geteuid() != 0, reason="chown needs root (issue #2 CI runs as root)"
)
def test_a_secret_owned_by_another_user_stops_start_up(tmp_path: Path) -> None:
    path = write_secret(tmp_path, secrets.token_bytes(64))
    os.chown(path, 65534, 65534)

    with pytest.raises(ConfigError, match="another user"):
        load_or_create_secret(tmp_path)


def test_a_missing_data_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be created"):
        load_or_create_secret(tmp_path / "missing")
