"""Task credentials: build the claims, sign them, verify what was signed, verify any token.

The work lives in three modules; this one keeps the names callers have always used
(``tokens.build_claims``, ``tokens.sign``, ``tokens.verify``, ``tokens.TokenError``...):

- `claims`: the contract's claims (`build_claims`, `actor`, `describe_claims`).
- `signing`: `Signer` (what key managers hand out) and `sign`, which verifies what it signed.
- `verification`: `verify`, `TokenError` and its `Reason`.
"""

from __future__ import annotations

from taskwarden.credentials.claims import (
    JTI_BYTES,
    MAX_ACT_DEPTH,
    MAX_INTENT_LENGTH,
    REQUIRED_CLAIMS,
    SPIFFE_PREFIX,
    TASK_CLAIM,
    actor,
    actor_from_claims,
    build_claims,
    delegation_depth,
    describe_claims,
    new_jti,
)
from taskwarden.credentials.signing import KeySigner, Signer, sign
from taskwarden.credentials.verification import (
    DEFAULT_ALGORITHMS,
    MAX_TOKEN_LENGTH,
    Reason,
    TokenError,
    unverified_header,
    verify,
)

__all__ = [
    "DEFAULT_ALGORITHMS",
    "JTI_BYTES",
    "MAX_ACT_DEPTH",
    "MAX_INTENT_LENGTH",
    "MAX_TOKEN_LENGTH",
    "REQUIRED_CLAIMS",
    "SPIFFE_PREFIX",
    "TASK_CLAIM",
    "KeySigner",
    "Reason",
    "Signer",
    "TokenError",
    "actor",
    "actor_from_claims",
    "build_claims",
    "delegation_depth",
    "describe_claims",
    "new_jti",
    "sign",
    "unverified_header",
    "verify",
]
