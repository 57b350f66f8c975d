"""Verifying a Taskwarden credential: `verify` returns its claims or raises `TokenError`.

The code lives in the verifier SDK (``taskwarden_verifier.tokens``, which documents the
hardening in order), so that the operator checks every freshly signed token with exactly the
code tool owners run. Who calls it here: `signing` (every freshly signed token is verified
before it leaves) and the ``taskwarden verify`` CLI.
"""

from __future__ import annotations

from taskwarden_verifier.tokens import (
    DEFAULT_ALGORITHMS,
    MAX_TOKEN_LENGTH,
    Reason,
    TokenError,
    unverified_header,
    verify,
)

__all__ = [
    "DEFAULT_ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "Reason",
    "TokenError",
    "unverified_header",
    "verify",
]
