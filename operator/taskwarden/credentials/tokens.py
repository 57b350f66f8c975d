"""Task credentials: build the claims, sign them, verify what was signed, verify any token.

What for: a Taskwarden credential is a JWT-SVID-compatible JWS (ES256 by default, EdDSA
optional) whose claims are fixed by the product contract (see docs/ token format). This module
is the single place that knows those claims.

Who calls it: the issuing service (``build_claims`` -> ``sign``, which refuses to return a
token that does not verify against the published JWKS, the way SPIRE's CA checks every JWT-SVID
with its credential validator), the ``taskwarden verify`` CLI and tool owners' code
(``verify``), and logging/audit code (``describe_claims``: never log the token itself).

Pure: no kopf, no Kubernetes client; time comes in as ``now`` (unix seconds), and pyjwt's own
clock checks are switched off so that ``now`` is the only clock.

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
import secrets
from collections.abc import Container, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from taskwarden.credentials import keys as keys_mod

TASK_CLAIM: Final = "taskwarden.dev/task"
REQUIRED_CLAIMS: Final[tuple[str, ...]] = (
    "iss",
    "sub",
    "aud",
    "iat",
    "nbf",
    "exp",
    "jti",
    TASK_CLAIM,
    "scope",
    "scopes",
    "data_class",
    "intent",
)
DATA_CLASSES: Final[tuple[str, ...]] = ("public", "internal", "confidential", "restricted")
DEFAULT_ALGORITHMS: Final[tuple[str, ...]] = (keys_mod.ES256, keys_mod.EDDSA)
JTI_BYTES: Final = 16
"""Random bytes in a jti (128 bits, from ``secrets``); 22 base64url characters."""
MAX_TOKEN_LENGTH: Final = 64 * 1024
"""Longer strings are refused before any parsing (cheap denial-of-service guard)."""
MAX_ACT_DEPTH: Final = 16
"""Deepest accepted RFC 8693 actor chain; delegation.maxDepth is far smaller in practice."""
MAX_INTENT_LENGTH: Final = 256
SPIFFE_PREFIX: Final = "spiffe://"


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


class TokenError(Exception):
    """A token was refused (by ``verify``) or a freshly signed one failed its check (``sign``).

    ``reason`` is a :class:`Reason` (a str). The message never contains the token.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason
        self.message: str = message


# --------------------------------------------------------------------------------------------
# Claims


def _string_list(value: object, what: str) -> list[str]:
    # A bare str is a Sequence[str] too; refuse it so "read" never becomes ["r","e","a","d"].
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a list of strings")
    items = list(value)
    if not items:
        raise ValueError(f"{what} must not be empty")
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{what} must contain only non-empty strings")
    return items


def _token_part(value: str, what: str, *, colon_ok: bool) -> str:
    # Scope triples are space-separated and colon-joined: keep them parseable.
    if any(ch.isspace() for ch in value):
        raise ValueError(f"{what} {value!r} must not contain whitespace")
    if not colon_ok and ":" in value:
        raise ValueError(f"{what} {value!r} must not contain ':'")
    return value


def _task_claim(task: Mapping[str, str], what: str = "task") -> dict[str, str]:
    if not isinstance(task, Mapping):
        raise ValueError(f"{what} must be a mapping with namespace, name and uid")
    out: dict[str, str] = {}
    for name in ("namespace", "name", "uid"):
        value = task.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{what}.{name} must be a non-empty string")
        out[name] = value
    return out


def _spiffe_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.startswith(SPIFFE_PREFIX):
        raise ValueError(f"{what} must be a SPIFFE ID (spiffe://...)")
    return value


def actor(
    *, spiffe_id: str, task: Mapping[str, str], parent_act: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The RFC 8693 ``act`` claim for a token delegated by the task (``spiffe_id``, ``task``).

    ``parent_act`` is that parent's own ``act`` (if it was itself delegated), nested as the
    prior actor. Called by the issuing service when a task has ``delegatedFrom``.
    """
    claim: dict[str, Any] = {"sub": _spiffe_id(spiffe_id, "act.sub"), TASK_CLAIM: _task_claim(task)}
    if parent_act is not None:
        claim["act"] = _actor_claim(parent_act, depth=2)
    return claim


def actor_from_claims(parent_claims: Mapping[str, Any]) -> dict[str, Any]:
    """The ``act`` claim for a child token, taken from the parent token's verified claims."""
    return actor(
        spiffe_id=parent_claims["sub"],
        task=parent_claims[TASK_CLAIM],
        parent_act=parent_claims.get("act"),
    )


def _actor_claim(act: Mapping[str, Any], depth: int = 1) -> dict[str, Any]:
    """Validate and copy an actor chain; only sub, the task claim and a nested act."""
    if depth > MAX_ACT_DEPTH:
        raise ValueError(f"act chain deeper than {MAX_ACT_DEPTH}")
    if not isinstance(act, Mapping):
        raise ValueError("act must be a mapping")
    unknown = set(act) - {"sub", TASK_CLAIM, "act"}
    if unknown:
        raise ValueError(f"act has unsupported members: {', '.join(sorted(unknown))}")
    claim: dict[str, Any] = {"sub": _spiffe_id(act.get("sub"), "act.sub")}
    if TASK_CLAIM in act:
        claim[TASK_CLAIM] = _task_claim(act[TASK_CLAIM], f"act.{TASK_CLAIM}")
    if act.get("act") is not None:
        claim["act"] = _actor_claim(act["act"], depth + 1)
    return claim


def delegation_depth(claims: Mapping[str, Any]) -> int:
    """How many actors are in the chain: 0 for a direct token, 1 for a child, and so on."""
    depth = 0
    act = claims.get("act")
    while isinstance(act, Mapping):
        depth += 1
        act = act.get("act")
    return depth


def new_jti() -> str:
    """A fresh token ID: 128 random bits from ``secrets``, base64url without padding."""
    return keys_mod.b64url_encode(secrets.token_bytes(JTI_BYTES))


def build_claims(
    *,
    issuer: str,
    spiffe_id: str,
    audiences: Sequence[str],
    now: float,
    ttl: float,
    not_after: float | None,
    task: Mapping[str, str],
    scopes: Sequence[Mapping[str, Any]],
    data_class: str,
    intent: str,
    pod: Mapping[str, str] | None,
    act: Mapping[str, Any] | None = None,
    jti: str | None = None,
) -> dict[str, Any]:
    """The claims of one credential, exactly as the contract lists them.

    ``iat = nbf = floor(now)``; ``exp = floor(min(now + ttl, not_after))`` (whole seconds, so
    exp never passes ``not_after``, the task's or parent's expiry). ``scope`` is the
    space-separated ``tool:action:resource`` triples in request order without duplicates,
    ``scopes`` the structured list. ``pod`` is omitted when None (no pod binding); ``act`` only
    for delegated tasks (build it with :func:`actor`). ``jti`` defaults to :func:`new_jti`.

    Raises ValueError on inputs that would make a malformed or already-expired token.
    Called by the issuing service, once per issue and rotation.
    """
    if not isinstance(issuer, str) or not issuer:
        raise ValueError("issuer must be a non-empty string")
    for name, value in (("now", now), ("ttl", ttl)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number of seconds")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite")
    if ttl <= 0:
        raise ValueError("ttl must be > 0")
    if not_after is not None and not math.isfinite(not_after):
        raise ValueError("not_after must be finite")
    issued = math.floor(now)
    expires = math.floor(now + ttl if not_after is None else min(now + ttl, not_after))
    if expires <= issued:
        raise ValueError("the credential would already be expired (not_after <= now)")

    auds = list(dict.fromkeys(_string_list(audiences, "audiences")))

    if isinstance(scopes, str | bytes) or not isinstance(scopes, Sequence) or not scopes:
        raise ValueError("scopes must be a non-empty list")
    structured: list[dict[str, Any]] = []
    triples: list[str] = []
    for index, scope in enumerate(scopes):
        where = f"scopes[{index}]"
        if not isinstance(scope, Mapping):
            raise ValueError(f"{where} must be a mapping with tool, actions and resources")
        tool = scope.get("tool")
        if not isinstance(tool, str) or not tool:
            raise ValueError(f"{where}.tool must be a non-empty string")
        _token_part(tool, f"{where}.tool", colon_ok=False)
        actions = _string_list(scope.get("actions"), f"{where}.actions")
        resources = _string_list(scope.get("resources"), f"{where}.resources")
        for action in actions:
            _token_part(action, f"{where}.actions", colon_ok=False)
        for resource in resources:
            _token_part(resource, f"{where}.resources", colon_ok=True)
        structured.append({"tool": tool, "actions": actions, "resources": resources})
        triples.extend(f"{tool}:{a}:{r}" for a in actions for r in resources)

    if data_class not in DATA_CLASSES:
        raise ValueError(f"data_class must be one of {', '.join(DATA_CLASSES)}")
    if not isinstance(intent, str) or not intent:
        raise ValueError("intent must be a non-empty string")
    if len(intent) > MAX_INTENT_LENGTH:
        raise ValueError(f"intent must be at most {MAX_INTENT_LENGTH} characters")
    if jti is None:
        jti = new_jti()
    elif not isinstance(jti, str) or not jti:
        raise ValueError("jti must be a non-empty string")

    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": _spiffe_id(spiffe_id, "spiffe_id"),
        "aud": auds,
        "iat": issued,
        "nbf": issued,
        "exp": expires,
        "jti": jti,
        TASK_CLAIM: _task_claim(task),
        "scope": " ".join(dict.fromkeys(triples)),
        "scopes": structured,
        "data_class": data_class,
        "intent": intent,
    }
    if pod is not None:
        if not isinstance(pod, Mapping):
            raise ValueError("pod must be a mapping with name and uid")
        pod_claim: dict[str, str] = {}
        for name in ("name", "uid"):
            member = pod.get(name)
            if not isinstance(member, str) or not member:
                raise ValueError(f"pod.{name} must be a non-empty string")
            pod_claim[name] = member
        claims["pod"] = pod_claim
    if act is not None:
        claims["act"] = _actor_claim(act)
    return claims


# --------------------------------------------------------------------------------------------
# Signing


def sign(
    claims: Mapping[str, Any],
    key: keys_mod.SigningKey,
    jwks: Mapping[str, Any],
    *,
    now: float | None = None,
) -> str:
    """Sign ``claims`` with ``key`` (header ``kid``, ``typ: JWT``), then verify the result.

    The check runs :func:`verify` against ``jwks`` (what verifiers see) at ``now``, default the
    token's ``iat``, with the token's own issuer and first audience, and requires the claims to
    come back unchanged. So a token signed by an unpublished key, with a broken claim set or
    already expired never leaves this function: it raises :class:`TokenError` instead.
    Called by the issuing service right before the token goes into a Secret.
    """
    if now is None:
        iat = claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            raise TokenError(Reason.MISSING_CLAIM, "claims have no numeric iat to check against")
        now = float(iat)
    audience = claims.get("aud")
    if isinstance(audience, list) and audience:
        audience = audience[0]
    issuer = claims.get("iss")
    try:
        token = jwt.encode(
            dict(claims),
            key.private_key,
            algorithm=key.alg,
            headers={"kid": key.kid, "typ": "JWT"},
        )
    except (TypeError, ValueError) as exc:
        raise TokenError(
            Reason.MALFORMED, f"claims could not be encoded ({type(exc).__name__})"
        ) from None
    try:
        verified = verify(
            token,
            jwks,
            now=now,
            audience=audience if isinstance(audience, str) else None,
            issuer=issuer if isinstance(issuer, str) else None,
            algorithms=(key.alg,),
        )
    except TokenError as exc:
        raise TokenError(
            exc.reason, f"freshly signed token (kid {key.kid}) failed verification: {exc.message}"
        ) from None
    if verified != json.loads(json.dumps(dict(claims))):
        raise TokenError(
            Reason.MALFORMED, f"freshly signed token (kid {key.kid}) did not round-trip its claims"
        )
    return token


# --------------------------------------------------------------------------------------------
# Verification


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
            decoded.append(keys_mod.b64url_decode(part))
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
    unsupported = allowed - keys_mod.SUPPORTED_ALGORITHMS
    if unsupported:
        # A caller asking for HS256/none is a bug, not a token problem.
        raise ValueError(
            f"algorithms {sorted(unsupported)} are not supported; "
            f"only {sorted(keys_mod.SUPPORTED_ALGORITHMS)} can be allowed"
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
def _public_key(alg: str, crv: str, x: str, y: str | None) -> keys_mod.PublicKey:
    """Build the public key for ``alg`` from JWK members; ValueError if it is not one."""
    if alg == keys_mod.ES256:
        if crv != "P-256" or y is None:
            raise ValueError("ES256 needs an EC P-256 JWK")
        xb, yb = keys_mod.b64url_decode(x), keys_mod.b64url_decode(y)
        if len(xb) != 32 or len(yb) != 32:
            raise ValueError("EC P-256 coordinates must be 32 bytes")
        # from_encoded_point checks that the point is on the curve.
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xb + yb)
    if alg == keys_mod.EDDSA:
        if crv != "Ed25519" or y is not None:
            raise ValueError("EdDSA needs an OKP Ed25519 JWK")
        return ed25519.Ed25519PublicKey.from_public_bytes(keys_mod.b64url_decode(x))
    raise ValueError(f"unsupported alg {alg!r}")


def _key_for(jwk: Mapping[str, Any], alg: str, kid: str) -> keys_mod.PublicKey:
    kty, crv, x, y = jwk.get("kty"), jwk.get("crv"), jwk.get("x"), jwk.get("y")
    expected_kty = "EC" if alg == keys_mod.ES256 else "OKP"
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
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError(Reason.MALFORMED, f"claim {name!r} must be a number")
    return float(value)


def _check_claims(
    claims: Mapping[str, Any],
    *,
    now: float,
    audience: str | None,
    issuer: str | None,
    revoked: Container[str],
    leeway: float,
) -> None:
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
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
    task = claims[TASK_CLAIM]
    if not isinstance(task, dict) or not all(
        isinstance(task.get(name), str) for name in ("namespace", "name", "uid")
    ):
        raise TokenError(Reason.MALFORMED, f"claim {TASK_CLAIM!r} needs namespace, name, uid")
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


def describe_claims(claims: Mapping[str, Any], *, kid: str | None = None) -> dict[str, Any]:
    """A safe summary of a token for logs, audit and the CLI: jti, kid, sub, aud, exp, scope.

    Contains no token and no signature. ``kid`` comes from the signing key or
    :func:`unverified_header`; it is included only when given.
    """
    summary: dict[str, Any] = {"jti": claims.get("jti")}
    if kid is not None:
        summary["kid"] = kid
    summary.update(
        {
            "sub": claims.get("sub"),
            "aud": claims.get("aud"),
            "exp": claims.get("exp"),
            "scope": claims.get("scope"),
        }
    )
    task = claims.get(TASK_CLAIM)
    if isinstance(task, Mapping):
        summary["task"] = f"{task.get('namespace')}/{task.get('name')}"
    return summary
