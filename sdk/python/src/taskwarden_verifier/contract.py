"""What the operator and every verifier agree on: the signing algorithms, the one spelling of
base64url, the names of the claims a Taskwarden token must carry, and the RFC 3339 timestamps
the operator writes. The operator imports these from here (``credentials.keys``,
``credentials.claims``, ``timeutil``), so the two sides cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from typing import Final, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ES256: Final = "ES256"
EDDSA: Final = "EdDSA"
SUPPORTED_ALGORITHMS: Final[frozenset[str]] = frozenset({ES256, EDDSA})
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

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
MAX_ACT_DEPTH: Final = 16
"""Deepest accepted RFC 8693 actor chain: a task at delegation depth d carries d actors, and
`policy.delegation.MAX_DEPTH` (the CRD's largest maxDepth, 16) must fit."""

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2). Used for JWK members and key IDs."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strictly decode unpadded base64url; raise ValueError on anything non-canonical.

    Python's decoder ignores stray characters and the unused low bits of the last character,
    so two different strings can decode to the same bytes. Tokens and JWKs must have exactly one
    spelling, so we re-encode and compare. Used for JWKs and for every token segment.
    """
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not unpadded base64url") from None
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def parse_rfc3339(value: str) -> float:
    """Parse an RFC 3339 timestamp (Z or offset, optional fraction) to unix seconds."""
    v = value.strip()
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    return dt.datetime.fromisoformat(v).timestamp()
