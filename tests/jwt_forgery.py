"""Forged, altered and confused tokens for the cases of tests/data/jwt-attacks.json.

Shared by the token-layer tests (tests/auth/test_jwt_attacks.py) and the HTTP ones
(tests/api/test_jwt_attacks_api.py). `VARIANTS` maps each case id to named
builders; a builder takes a `Ctx` (a valid token and its key) and returns one
hostile token that must be refused. `OVER_HTTP` names the cases only a server
can answer.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from strongroom.auth.keys import KeySet, TokenKey, ed25519_key, hmac_key
from strongroom.auth.tokens import MAX_LEEWAY_SECONDS, TokenAuthority

CASES_FILE = Path(__file__).parent / "data" / "jwt-attacks.json"
CASES = {case["id"]: case for case in json.loads(CASES_FILE.read_text())}
SECRET = bytes(range(3, 67))
OLD_SECRET = bytes(range(7, 71))
RETIRED_SECRET = bytes(range(11, 75))
TTL = 900

# Cases about HTTP itself (headers, routes, users, login, share links), in
# tests/api; the share-link ones (SHR-*) in tests/api/test_shares_tokens.py.
OVER_HTTP = {
    "TRN-01", "TRN-03", "TRN-04", "KID-03", "CLM-07", "LIF-01", "LIF-02", "LIF-04",
    "TOK-01", "TOK-02", "TOK-04", "TOK-05", "ENC-01", "ENC-02", "ENC-04",
    "REF-01", "REF-02", "REF-04", "REF-05", "SHR-02", "SHR-03", "SHR-05",
}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class Ctx:
    """A valid token and the means to forge around it, for one key set."""

    authority: TokenAuthority
    key: TokenKey
    token: str
    header: dict[str, object]
    claims: dict[str, object]

    @property
    def parts(self) -> list[str]:
        return self.token.split(".")

    def forge(
        self,
        header: object = None,
        claims: object = None,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> str:
        """Encode header and claims (bytes are used as given) and sign them.

        `sign` defaults to the real key: a key-holder forgery, so the one flaw
        built in is the only reason to refuse.
        """
        head = self._bytes(self.header if header is None else header)
        body = self._bytes(self.claims if claims is None else claims)
        signing_input = f"{b64(head)}.{b64(body)}".encode()
        signature = (sign or self.key.sign)(signing_input)
        return f"{signing_input.decode()}.{b64(signature)}"

    def admin(self) -> dict[str, object]:
        """The claims with an admin's id and scope: what forgers want."""
        return {**self.claims, "sub": "1", "scope": "files:read files:write admin"}

    @staticmethod
    def _bytes(value: object) -> bytes:
        return value if isinstance(value, bytes) else compact(value)


def hs(key: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(key, data, "sha256").digest()


def unsigned(data: bytes) -> bytes:
    return b""


def zero(size: int) -> Callable[[bytes], bytes]:
    return lambda data: bytes(size)


def raw_header(ctx: Ctx, **members: object) -> bytes:
    """The token's header with `members` set; None removes a member."""
    header = {**ctx.header, **members}
    return compact({k: v for k, v in header.items() if v is not None})


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())
_ED = ed25519.Ed25519PrivateKey.generate()
P256_ORDER = bytes.fromhex(
    "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551"
)


def rsa_sign(data: bytes) -> bytes:
    return _RSA.sign(data, padding.PKCS1v15(), hashes.SHA256())


def ec_der_sign(data: bytes) -> bytes:
    return _EC.sign(data, ec.ECDSA(hashes.SHA256()))


def attacker_jwk(kind: str) -> dict[str, object]:
    if kind == "RSA":
        numbers = _RSA.public_key().public_numbers()
        return {"kty": "RSA", "e": "AQAB",
                "n": b64(numbers.n.to_bytes(256, "big"))}
    if kind == "EC":
        point = _EC.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": b64(point.x.to_bytes(32, "big")),
                "y": b64(point.y.to_bytes(32, "big"))}
    raw = _ED.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}


ATTACKER_SIGNERS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "RSA": ("RS256", rsa_sign),
    "EC": ("ES256", ec_der_sign),
    "OKP": ("EdDSA", _ED.sign),
}
WEAK_SECRETS = [b"secret", b"SECRET", b"changeme", b"password",
                b"your-256-bit-secret", b"jwt_secret", b"supersecret",
                b"09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
                b"strongroom", b"Strongroom"]
ODD_KIDS: dict[str, Callable[[Ctx], object]] = {
    "int-0": lambda c: 0,
    "float-inf": lambda c: 1e999,
    "null": lambda c: None,
    "true": lambda c: True,
    "array": lambda c: [c.key.kid],
    "nosql-object": lambda c: {"$ne": None},
    "10k-chars": lambda c: "k" * 10_000,
    "trailing-space": lambda c: f"{c.key.kid} ",
    "nul-suffix": lambda c: f"{c.key.kid}\x00../../dev/null",
    "percent-traversal": lambda c: f"{c.key.kid}%2f..%2f..%2fdev%2fnull",
    "homoglyph": lambda c: "\u0410" + c.key.kid[1:],
    "lowercased": lambda c: c.key.kid.lower() if c.key.kid.lower() != c.key.kid
    else c.key.kid.upper(),
}
PATH_KIDS = {
    "proc-aslr": "../../../../proc/sys/kernel/randomize_va_space",
    "hostname": "../../../../etc/hostname",
    "passwd": "../../../../etc/passwd",
    "static": "static/favicon.ico",
    "jwks": "../../.well-known/jwks.json",
}
COMMAND_KIDS = ["|sleep 10", "$(sleep 10)", "`sleep 10`",
                "; curl http://127.0.0.1:9/kid"]


def _exp_raw(raw: str) -> Callable[[Ctx], str]:
    def build(c: Ctx) -> str:
        body = compact({**c.claims, "exp": "PLACEHOLDER"})
        return c.forge(claims=body.replace(b'"PLACEHOLDER"', raw.encode()))
    return build


def _swap_segment(c: Ctx, index: int, segment: str) -> str:
    parts = c.parts
    parts[index] = segment
    return ".".join(parts)


def _noncanonical_last(signature: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return signature[:-1] + alphabet[alphabet.index(signature[-1]) ^ 1]


def _std_b64(raw: bytes) -> str:
    """Standard alphabet with padding; never equal to the canonical form."""
    text = base64.standard_b64encode(raw).decode()
    return text if text != b64(raw) else text + "=="


def _resign_std_header(c: Ctx) -> str:
    # Key-holder variant of ENC-05 (b): a signature over non-canonical header text.
    header = _std_b64(compact(c.header))
    signing_input = f"{header}.{c.parts[1]}".encode()
    return f"{header}.{c.parts[1]}.{b64(c.key.sign(signing_input))}"


def claims_at(c: Ctx, **offsets: int) -> dict[str, object]:
    """The claims with each named time set to now + offset (iat_us follows iat)."""
    now = int(time.time())
    claims = {**c.claims, **{name: now + offset for name, offset in offsets.items()}}
    if "iat" in offsets:
        claims["iat_us"] = (now + offsets["iat"]) * 10**6
    return claims


Variant = Callable[[Ctx], object]

VARIANTS: dict[str, dict[str, Variant]] = {
    **{
        case: {
            "empty-signature": lambda c, a=alg: c.forge(
                raw_header(c, alg=a), c.admin(), unsigned),
            "two-segments": lambda c, a=alg: c.forge(
                raw_header(c, alg=a), c.admin(), unsigned).rstrip("."),
        }
        for case, alg in (("ALG-01", "none"), ("ALG-02", "None"), ("ALG-04", "nOnE"))
    },
    "ALG-05": {
        "none-original-signature": lambda c: f"{b64(raw_header(c, alg='none'))}."
        f"{c.parts[1]}.{c.parts[2]}",
        **{
            f"alg-{name}": lambda c, v=value: f"{b64(raw_header(c, alg=v))}."
            f"{c.parts[1]}.{c.parts[2]}"
            for name, value in (("empty", ""), ("array", ["HS256"]), ("object", {}))
        },
        "alg-null": lambda c: f"{b64(compact({**c.header, 'alg': None}))}."
        f"{c.parts[1]}.{c.parts[2]}",
        "alg-deleted": lambda c: f"{b64(raw_header(c, alg=None))}."
        f"{c.parts[1]}.{c.parts[2]}",
        "alg-null-signed": lambda c: c.forge({**c.header, "alg": None}),
        "alg-deleted-signed": lambda c: c.forge(raw_header(c, alg=None)),
    },
    "ALG-07": {
        "other-claims-this-signature": lambda c: ".".join(
            [c.parts[0], other_token(c).split(".")[1], c.parts[2]]),
        "this-claims-other-signature": lambda c: ".".join(
            [c.parts[0], c.parts[1], other_token(c).split(".")[2]]),
    },
    "ALG-08": {
        "admin-claims-old-signature": lambda c: ".".join(
            [c.parts[0], b64(compact(c.admin())), c.parts[2]]),
        "same-claims-spaced-json": lambda c: ".".join(
            [c.parts[0], b64(json.dumps(c.claims).encode()), c.parts[2]]),
    },
    "ALG-10": {
        "HS384-real-secret": lambda c: c.forge(
            raw_header(c, alg="HS384"), sign=lambda d: hmac.new(
                SECRET, d, "sha384").digest()),
        "HS512-real-secret": lambda c: c.forge(
            raw_header(c, alg="HS512"), sign=lambda d: hmac.new(
                SECRET, d, "sha512").digest()),
        "other-alg-real-key": lambda c: c.forge(
            raw_header(c, alg="HS256" if c.key.algorithm == "EdDSA" else "EdDSA")),
        "HS256-keyed-with-public-key": lambda c: c.forge(
            raw_header(c, alg="HS256"), sign=hs(public_bytes(c))),
    },
    "ALG-11": {
        **{
            f"{alg}-{name}-{kid}": lambda c, a=alg, s=sign, k=kid: c.forge(
                raw_header(c, alg=a, kid=None if k == "nokid" else c.key.kid),
                c.admin(), s)
            for alg, size in (("ES256", 64), ("ES384", 96), ("ES512", 132))
            for name, sign in (("zeros", zero(size)),)
            for kid in ("kid", "nokid")
        },
        "ES256-r-s-n": lambda c: c.forge(
            raw_header(c, alg="ES256"), c.admin(), lambda d: P256_ORDER * 2),
        "ES256-r0-s1": lambda c: c.forge(
            raw_header(c, alg="ES256"), c.admin(),
            lambda d: bytes(32) + (1).to_bytes(32, "big")),
        "ES256-der": lambda c: c.forge(
            raw_header(c, alg="ES256"), c.admin(), ec_der_sign),
        "ES256-63-bytes": lambda c: c.forge(
            raw_header(c, alg="ES256"), c.admin(), zero(63)),
        "ES256-65-bytes": lambda c: c.forge(
            raw_header(c, alg="ES256"), c.admin(), zero(65)),
        "own-alg-zero-signature": lambda c: c.forge(
            None, c.admin(), zero(64 if c.key.algorithm == "EdDSA" else 32)),
    },
    "ALG-13": {
        repr(key): lambda c, k=key: c.forge(raw_header(c, alg="HS256"),
                                            c.admin(), hs(k))
        for key in (b"", b"\x00", b" ", b"null", b"undefined")
    },
    "ALG-14": {
        secret.decode()[:24]: lambda c, k=secret: c.forge(
            raw_header(c, alg="HS256"), c.admin(), hs(k))
        for secret in WEAK_SECRETS
    },
    "KID-02": {
        **{
            name: lambda c, k=kid: c.forge(
                raw_header(c, alg="HS256", kid=k), c.admin(), hs(b"2\n"))
            for name, kid in PATH_KIDS.items()
        },
        "aslr-no-newline": lambda c: c.forge(
            raw_header(c, alg="HS256", kid=PATH_KIDS["proc-aslr"]), c.admin(),
            hs(b"2")),
        "jwks-bytes": lambda c: c.forge(
            raw_header(c, alg="HS256", kid=PATH_KIDS["jwks"]), c.admin(),
            hs(json.dumps(c.authority.public_jwks()).encode())),
    },
    "KID-05": {
        f"{kid[:6]}-{signer}": lambda c, k=kid, s=signer: c.forge(
            raw_header(c, kid=k), c.admin(), hs(b"") if s == "empty" else None)
        for kid in COMMAND_KIDS
        for signer in ("empty", "real")
    },
    "KID-06": {
        f"{name}-{signer}": lambda c, f=make, s=signer: c.forge(
            compact({**c.header, "kid": f(c)}), c.admin(),
            hs(b"") if s == "empty" else None)
        for name, make in ODD_KIDS.items()
        for signer in ("empty", "real")
    },
    "KID-08": {
        "retired-key": lambda c: retired_token(c),
        "no-kid-two-keys-loaded": lambda c: c.forge(raw_header(c, kid=None)),
    },
    "KID-09": {
        "other-purpose-key": lambda c: other_purpose_token(c),
        "share-typ-access-key": lambda c: c.forge(raw_header(c, typ="share+jwt")),
        "plain-jwt-typ": lambda c: c.forge(raw_header(c, typ="JWT")),
        "no-typ": lambda c: c.forge(raw_header(c, typ=None)),
    },
    "HDR-02": {
        "x5u-rs256": lambda c: c.forge(
            raw_header(c, alg="RS256", x5u="http://127.0.0.1:9/chain.pem"),
            c.admin(), rsa_sign),
        "x5c-rs256": lambda c: c.forge(
            raw_header(c, alg="RS256", x5c=[b64(b"\x30\x82cert")]),
            c.admin(), rsa_sign),
        "x5u-real-key": lambda c: c.forge(
            raw_header(c, x5u="http://127.0.0.1:9/chain.pem")),
        "jku-real-key": lambda c: c.forge(
            raw_header(c, jku="http://127.0.0.1:9/jwks.json")),
    },
    "HDR-03": {
        f"{kind}-{kid}": lambda c, k=kind, i=kid: c.forge(
            raw_header(c, alg=ATTACKER_SIGNERS[k][0], jwk=attacker_jwk(k),
                       kid={"omitted": None, "own": "attacker-key-0001",
                            "server": c.key.kid}[i]),
            c.admin(), ATTACKER_SIGNERS[k][1])
        for kind in ATTACKER_SIGNERS
        for kid in ("omitted", "own", "server")
    },
    "HDR-05": {
        "jwe-dir": lambda c: ".".join(
            [b64(compact({"alg": "dir", "enc": "A256GCM"}))]
            + [b64(os.urandom(16)) for _ in range(4)]),
        "jwe-rsa-oaep-zip": lambda c: ".".join(
            [b64(compact({"alg": "RSA-OAEP", "enc": "A128GCM", "zip": "DEF"}))]
            + [b64(os.urandom(16)) for _ in range(4)]),
        "jws-zip-unsigned": lambda c: f"{b64(raw_header(c, zip='DEF'))}."
        f"{c.parts[1]}.{c.parts[2]}",
        "jws-zip-enc-signed": lambda c: c.forge(
            raw_header(c, zip="DEF", enc="A256GCM")),
        "crit-signed": lambda c: c.forge(raw_header(c, crit=["exp"])),
    },
    "HDR-06": {
        "alg-then-none-unsigned": lambda c: c.forge(dup_header(
            c, "alg", c.key.algorithm, "none"), c.admin(), unsigned),
        "none-then-alg-signed": lambda c: c.forge(dup_header(
            c, "alg", "none", c.key.algorithm)),
        "kid-retired-then-current": lambda c: c.forge(dup_header(
            c, "kid", "k_retired", c.key.kid)),
    },
    "CLM-01": {
        "natural-expiry": lambda c: natural_expiry(c),
        "exp-edited-unsigned": lambda c: ".".join(
            [c.parts[0], b64(compact(claims_at(c, exp=86400))), c.parts[2]]),
        "expired-past-leeway": lambda c: c.forge(
            claims=claims_at(c, exp=-(MAX_LEEWAY_SECONDS + 5), iat=-TTL)),
    },
    "CLM-02": {
        "nbf-in-an-hour": lambda c: c.forge(claims=claims_at(c, nbf=3600)),
        "nbf-past-leeway": lambda c: c.forge(
            claims=claims_at(c, nbf=MAX_LEEWAY_SECONDS + 5)),
    },
    "CLM-04": {
        **{
            f"no-{claim}": lambda c, n=claim: c.forge(
                claims={k: v for k, v in c.claims.items() if k != n})
            for claim in ("exp", "iat", "jti", "sub", "iss", "aud", "iat_us")
        },
        "exp-null": lambda c: c.forge(claims={**c.claims, "exp": None}),
    },
    "CLM-05": {
        **{
            f"aud-{name}": lambda c, v=value: c.forge(claims={**c.claims, "aud": v})
            for name, value in (
                ("other-service", "other-service"), ("empty", ""),
                ("list-with-extra", ["strongroom", "other-service"]),
                ("list-of-ours", ["strongroom"]), ("empty-list", []),
                ("integer", 7), ("share-audience", "strongroom-share"),
                ("case", "Strongroom"),
            )
        },
        "aud-edited-unsigned": lambda c: ".".join(
            [c.parts[0], b64(compact({**c.claims, "aud": "other"})), c.parts[2]]),
        "iss-other": lambda c: c.forge(claims={**c.claims, "iss": "someone-else"}),
        "iss-list": lambda c: c.forge(claims={**c.claims, "iss": [c.claims["iss"]]}),
    },
    "CLM-08": {
        "exp-string": _exp_raw('"9999999999"'),
        "exp-true": _exp_raw("true"),
        "exp-float": _exp_raw("1.5e9"),
        "exp-1e400": _exp_raw("1e400"),
        "exp-5000-digits": _exp_raw("9" * 5000),
        "exp-NaN": _exp_raw("NaN"),
        "exp-minus-1": _exp_raw("-1"),
        "iat-string": lambda c: c.forge(claims={**c.claims, "iat": "0"}),
    },
    "LIF-05": {
        "padding": lambda c: c.token + "=",
        "surplus-padding": lambda c: c.token + "==",
        "unused-bits": lambda c: _swap_segment(c, 2, _noncanonical_last(c.parts[2])),
        "standard-alphabet": lambda c: _swap_segment(
            c, 2, _std_b64(unb64(c.parts[2]))),
    },
    "ENC-05": {
        **{
            f"padding-on-segment-{i}": lambda c, n=i: _swap_segment(
                c, n, c.parts[n] + "=")
            for i in range(3)
        },
        "std-alphabet-header": lambda c: _swap_segment(
            c, 0, _std_b64(unb64(c.parts[0]))),
        "std-alphabet-signature": lambda c: _swap_segment(
            c, 2, _std_b64(unb64(c.parts[2]))),
        "bangs": lambda c: _swap_segment(
            c, 1, c.parts[1][:4] + "!!!!" + c.parts[1][4:]),
        "tilde": lambda c: _swap_segment(c, 1, c.parts[1] + "~"),
        "dot": lambda c: _swap_segment(c, 1, c.parts[1][:4] + "." + c.parts[1][4:]),
        "space": lambda c: _swap_segment(c, 1, c.parts[1][:4] + " " + c.parts[1][4:]),
        "unused-bits": lambda c: _swap_segment(c, 2, _noncanonical_last(c.parts[2])),
        "length-1-mod-4": lambda c: _swap_segment(
            c, 2, c.parts[2] + "A" * ((1 - len(c.parts[2])) % 4)),
        "std-header-resigned": _resign_std_header,
    },
}


def public_bytes(c: Ctx) -> bytes:
    """What a confused verifier would use as an HMAC key: the public key."""
    jwks = c.authority.public_jwks()["keys"]
    return json.dumps(jwks).encode() if jwks else c.key.kid.encode()


def other_token(c: Ctx) -> str:
    return c.authority.issue_access_token(43, TTL).value


def dup_header(c: Ctx, name: str, first: object, second: object) -> bytes:
    rest = {k: v for k, v in c.header.items() if k != name}
    pairs = [f'"{name}":{json.dumps(first)}', f'"{name}":{json.dumps(second)}']
    pairs += [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in rest.items()]
    return ("{" + ",".join(pairs) + "}").encode()


def natural_expiry(c: Ctx) -> str:
    """Issued TTL + leeway + 2 s ago: expired even with the largest leeway."""
    back = (TTL + MAX_LEEWAY_SECONDS + 2) * 10**9
    past = TokenAuthority(c.authority.keys, clock_ns=lambda: time.time_ns() - back)
    return past.issue_access_token(42, TTL).value


def retired_token(c: Ctx) -> str:
    """KID-08 (b): signed by a key that was dropped from the set after rotation."""
    retired = (
        KeySet.from_secret(RETIRED_SECRET)
        if c.key.algorithm == "HS256"
        else KeySet(ed25519_key(_RETIRED_ED, _RETIRED_ED.public_key()))
    )
    return TokenAuthority(retired).issue_access_token(42, TTL).value


def other_purpose_token(c: Ctx) -> str:
    """KID-09: access claims signed by another purpose's key (as a share key)."""
    share_keys = KeySet.from_secret(bytes(range(100, 164)))
    return TokenAuthority(share_keys).issue_access_token(42, TTL).value


def old_keys(algorithm: str) -> KeySet:
    if algorithm == "HS256":
        return KeySet.from_secret(OLD_SECRET)
    return KeySet(ed25519_key(_OLD_ED, _OLD_ED.public_key()))


_OLD_ED = ed25519.Ed25519PrivateKey.generate()
_ACTIVE_ED = ed25519.Ed25519PrivateKey.generate()
_RETIRED_ED = ed25519.Ed25519PrivateKey.generate()


def key_set(algorithm: str) -> KeySet:
    """The active key plus the old one of the same algorithm, verify-only."""
    if algorithm == "HS256":
        return KeySet(hmac_key(SECRET), [hmac_key(OLD_SECRET, can_sign=False)])
    return KeySet(ed25519_key(_ACTIVE_ED, _ACTIVE_ED.public_key()),
                  [ed25519_key(None, _OLD_ED.public_key())])


