"""Verifying a Taskwarden credential: `verify` returns its claims or raises `TokenError`.

Who calls it: the operator (``credentials.signing`` verifies every freshly signed token
before it leaves; the ``taskwarden verify`` CLI) and tool owners' code (through
``taskwarden_verifier.Verifier``). Pure: needs only pyjwt and cryptography; time comes in
as ``now`` (unix seconds), and pyjwt's own clock checks are switched off so that ``now`` is
the only clock.

Verification hardening, in order: size cap; exactly three segments of canonical unpadded
base64url (one spelling per token); a JSON-object header with no ``crit``/``b64`` extensions;
``alg`` in an allow-list that can only ever contain ES256/EdDSA (so "none" and HS256-with-the-
public-key are refused before any key is touched); ``kid`` found in the JWKS; the JWK's own
``alg`` equal to the header's; a public key built from the JWK by us, of the type that alg
needs; signature; required claims and their types; exp/nbf/iat against ``now`` with
``leeway``; issuer; audience; revocation by ``jti``.

A token's identity is its ``jti``, not its string: ECDSA signatures are malleable (``(r, s)``
and ``(r, n - s)`` both verify), so revocation and caches key on ``jti``.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Container, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from taskwarden_verifier import contract

DEFAULT_ALGORITHMS: Final[tuple[str, ...]] = (contract.ES256, contract.EDDSA)
MAX_TOKEN_LENGTH: Final = 64 * 1024
"""Longer strings are refused before any parsing (cheap denial-of-service guard)."""


class Reason(enum.StrEnum):
    """Why a token was refused (CamelCase, for status, audit, metrics labels and the CLI)."""

    INVALID_SIGNATURE = "InvalidSignature"
    UNKNOWN_KEY = "UnknownKey"
    ALGORITHM_NOT_ALLOWED = "AlgorithmNotAllowed"
    EXPIRED = "Expired"
    NOT_YET_VALID = "NotYetValid"
    WRONG_AUDIENCE = "WrongAudience"
    WRONG_ISSUER = "WrongIssuer"
    REVOKED = "Revoked"
    MALFORMED = "Malformed"
    MISSING_CLAIM = "MissingClaim"
    UNAVAILABLE = "Unavailable"
    """The JWKS or revocation list could not be used; not a verdict on the token (fail closed)."""


class TokenError(Exception):
    """A token was refused (by ``verify``) or a freshly signed one failed its check (``sign``).

    ``reason`` is a :class:`Reason` (a str). The message never contains the token.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason
        self.message: str = message


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)


def _segments(token: object) -> tuple[dict[str, Any], bytes]:
    """Check the compact form and return (header, payload bytes); Malformed on any flaw."""
    if not isinstance(token, str):
        raise TokenError(Reason.MALFORMED, "token must be a string")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError(Reason.MALFORMED, f"token longer than {MAX_TOKEN_LENGTH} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError(Reason.MALFORMED, "expected three dot-separated segments (JWS compact)")
    decoded: list[bytes] = []
    for name, part in zip(("header", "payload", "signature"), parts, strict=True):
        try:
            decoded.append(contract.b64url_decode(part))
        except ValueError as exc:
            raise TokenError(Reason.MALFORMED, f"{name} segment: {exc}") from None
    try:
        header = _json(decoded[0])
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TokenError(Reason.MALFORMED, "header is not valid JSON") from None
    if not isinstance(header, dict):
        raise TokenError(Reason.MALFORMED, "header must be a JSON object")
    # We implement no JWS extensions; RFC 7515 says to reject unknown critical ones, and b64
    # (RFC 7797) would change what the signature covers.
    for name in ("crit", "b64"):
        if name in header:
            raise TokenError(Reason.MALFORMED, f"unsupported header parameter {name!r}")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() not in ("JWT", "JOSE")):
        raise TokenError(Reason.MALFORMED, "header typ must be JWT")
    return header, decoded[1]


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, NOT verified: for showing the kid in the CLI or logs, never to trust."""
    header, _ = _segments(token)
    return header


def _allowed(algorithms: Sequence[str]) -> frozenset[str]:
    if isinstance(algorithms, str):
        algorithms = (algorithms,)
    allowed = frozenset(algorithms)
    unsupported = allowed - contract.SUPPORTED_ALGORITHMS
    if unsupported:
        # A caller asking for HS256/none is a bug, not a token problem.
        raise ValueError(
            f"algorithms {sorted(unsupported)} are not supported; "
            f"only {sorted(contract.SUPPORTED_ALGORITHMS)} can be allowed"
        )
    if not allowed:
        raise ValueError("algorithms must not be empty")
    return allowed


def _find_jwk(jwks: Mapping[str, Any], kid: str) -> Mapping[str, Any]:
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        raise ValueError("jwks must be a JWK Set: a mapping with a 'keys' list")
    found = [jwk for jwk in jwks["keys"] if isinstance(jwk, Mapping) and jwk.get("kid") == kid]
    if not found:
        raise TokenError(Reason.UNKNOWN_KEY, f"kid {kid!r} is not in the JWKS")
    if len(found) > 1:
        raise TokenError(Reason.UNKNOWN_KEY, f"kid {kid!r} appears more than once in the JWKS")
    return found[0]


@lru_cache(maxsize=64)
def _public_key(alg: str, crv: str, x: str, y: str | None) -> contract.PublicKey:
    """Build the public key for ``alg`` from JWK members; ValueError if it is not one."""
    if alg == contract.ES256:
        if crv != "P-256" or y is None:
            raise ValueError("ES256 needs an EC P-256 JWK")
        xb, yb = contract.b64url_decode(x), contract.b64url_decode(y)
        if len(xb) != 32 or len(yb) != 32:
            raise ValueError("EC P-256 coordinates must be 32 bytes")
        # from_encoded_point checks that the point is on the curve.
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xb + yb)
    if alg == contract.EDDSA:
        if crv != "Ed25519" or y is not None:
            raise ValueError("EdDSA needs an OKP Ed25519 JWK")
        return ed25519.Ed25519PublicKey.from_public_bytes(contract.b64url_decode(x))
    raise ValueError(f"unsupported alg {alg!r}")


def _key_for(jwk: Mapping[str, Any], alg: str, kid: str) -> contract.PublicKey:
    kty, crv, x, y = jwk.get("kty"), jwk.get("crv"), jwk.get("x"), jwk.get("y")
    expected_kty = "EC" if alg == contract.ES256 else "OKP"
    use = jwk.get("use")
    if (
        kty != expected_kty
        or not isinstance(crv, str)
        or not isinstance(x, str)
        or not (y is None or isinstance(y, str))
        or (use is not None and use != "sig")
    ):
        raise TokenError(Reason.UNKNOWN_KEY, f"the JWK for kid {kid!r} is not a usable {alg} key")
    try:
        return _public_key(alg, crv, x, y)
    except ValueError:
        raise TokenError(
            Reason.UNKNOWN_KEY, f"the JWK for kid {kid!r} is not a usable {alg} key"
        ) from None


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(Reason.MALFORMED, f"claim {name!r} must be a number")
    try:
        number = float(value)  # an int beyond ~1.8e308 raises OverflowError here
    except OverflowError:
        raise TokenError(Reason.MALFORMED, f"claim {name!r} is out of range") from None
    if not math.isfinite(number):
        raise TokenError(Reason.MALFORMED, f"claim {name!r} must be a number")
    return number


def _check_claims(
    claims: Mapping[str, Any],
    *,
    now: float,
    audience: str | None,
    issuer: str | None,
    revoked: Container[str],
    leeway: float,
) -> None:
    missing = [name for name in contract.REQUIRED_CLAIMS if name not in claims]
    if missing:
        raise TokenError(Reason.MISSING_CLAIM, f"missing claims: {', '.join(missing)}")
    for name in ("iss", "sub", "jti", "scope", "data_class", "intent"):
        if not isinstance(claims[name], str):
            raise TokenError(Reason.MALFORMED, f"claim {name!r} must be a string")
    if not claims["jti"]:
        raise TokenError(Reason.MALFORMED, "claim 'jti' must not be empty")
    aud = claims["aud"]
    auds = [aud] if isinstance(aud, str) else aud
    if not isinstance(auds, list) or not auds or not all(isinstance(a, str) for a in auds):
        raise TokenError(Reason.MALFORMED, "claim 'aud' must be a string or a list of strings")
    task = claims[contract.TASK_CLAIM]
    if not isinstance(task, dict) or not all(
        isinstance(task.get(name), str) for name in ("namespace", "name", "uid")
    ):
        raise TokenError(
            Reason.MALFORMED, f"claim {contract.TASK_CLAIM!r} needs namespace, name, uid"
        )
    if not isinstance(claims["scopes"], list):
        raise TokenError(Reason.MALFORMED, "claim 'scopes' must be a list")
    issued_at, not_before, expires = (
        _number(claims, "iat"),
        _number(claims, "nbf"),
        _number(claims, "exp"),
    )

    if now >= expires + leeway:
        raise TokenError(Reason.EXPIRED, f"expired at {expires:.0f} (now {now:.0f})")
    if now + leeway < not_before:
        raise TokenError(Reason.NOT_YET_VALID, f"not valid before {not_before:.0f} (now {now:.0f})")
    if now + leeway < issued_at:
        raise TokenError(
            Reason.NOT_YET_VALID, f"issued in the future ({issued_at:.0f}, now {now:.0f})"
        )
    if issuer is not None and claims["iss"] != issuer:
        raise TokenError(Reason.WRONG_ISSUER, f"issuer {claims['iss']!r} is not {issuer!r}")
    if audience is not None and audience not in auds:
        raise TokenError(Reason.WRONG_AUDIENCE, f"audience {audience!r} is not in {auds!r}")
    if claims["jti"] in revoked:
        raise TokenError(Reason.REVOKED, f"jti {claims['jti']} is revoked")


def verify(
    token: str,
    jwks: Mapping[str, Any],
    *,
    now: float,
    audience: str | None = None,
    issuer: str | None = None,
    revoked: Container[str] = frozenset(),
    leeway: float = 0.0,
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
) -> dict[str, Any]:
    """Verify ``token`` against the JWK Set ``jwks`` at ``now``; return its claims.

    Raises :class:`TokenError` (with a :class:`Reason`) for any token that must not be
    accepted, and ValueError for caller mistakes (a malformed JWKS, an allow-list naming
    anything but ES256/EdDSA, a negative leeway). ``audience`` and ``issuer`` are checked only
    when given: services that accept tokens must pass their own audience. ``revoked`` is any
    container of jti, e.g. a ``RevocationList``. ``leeway`` (seconds) widens exp/nbf/iat for
    clock skew. Called by ``sign``, the ``verify`` CLI and tool owners.
    """
    allowed = _allowed(algorithms)
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError("now must be a finite number of unix seconds")
    if not math.isfinite(leeway) or leeway < 0:
        raise ValueError("leeway must be a finite number of seconds >= 0")
    header, _payload = _segments(token)
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenError(Reason.MALFORMED, "header has no alg")
    if alg not in allowed:
        raise TokenError(Reason.ALGORITHM_NOT_ALLOWED, f"alg {alg!r} is not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError(Reason.UNKNOWN_KEY, "header has no kid")
    jwk = _find_jwk(jwks, kid)
    if jwk.get("alg") != alg:
        # The key decides the algorithm, not the token: this is what defeats alg confusion.
        raise TokenError(
            Reason.ALGORITHM_NOT_ALLOWED,
            f"kid {kid!r} is a {jwk.get('alg')!r} key, token says {alg!r}",
        )
    public_key = _key_for(jwk, alg, kid)
    try:
        # Signature only: every time/audience/issuer/subject check is done below, against `now`.
        claims = jwt.decode(
            token,
            key=public_key,
            algorithms=[alg],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
                "require": [],
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenError(
            Reason.INVALID_SIGNATURE, f"signature does not match kid {kid!r}"
        ) from None
    except jwt.InvalidAlgorithmError:
        raise TokenError(Reason.ALGORITHM_NOT_ALLOWED, f"alg {alg!r} is not allowed") from None
    except jwt.InvalidKeyError:
        raise TokenError(Reason.UNKNOWN_KEY, f"the key for kid {kid!r} is unusable") from None
    except (jwt.InvalidTokenError, ValueError, RecursionError) as exc:
        raise TokenError(Reason.MALFORMED, f"undecodable token ({type(exc).__name__})") from None
    if not isinstance(claims, dict):
        raise TokenError(Reason.MALFORMED, "payload must be a JSON object")
    _check_claims(claims, now=now, audience=audience, issuer=issuer, revoked=revoked, leeway=leeway)
    return claims
