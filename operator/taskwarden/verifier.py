"""Verifier library for tool owners, as the operator ships it: a re-export of the verifier SDK
(``taskwarden_verifier``, the distribution ``taskwarden-verifier`` in sdk/python, which needs
only pyjwt and cryptography). The code lives there once; this module keeps
``from taskwarden.verifier import Verifier`` working inside the operator's environment.

    from taskwarden.verifier import Verifier
    v = Verifier(jwks="https://taskwarden.taskwarden-system.svc/.well-known/jwks.json",
                 revocations="https://taskwarden.taskwarden-system.svc/revocations",
                 audience="https://api.github.com", ca_file="/etc/taskwarden/ca.crt")
    claims = v.verify(token)                      # raises tokens.TokenError
    claims.require("github", "comment", "repo:acme/widgets")   # raises ScopeError

``taskwarden_verifier.verifier`` documents the sources it accepts and how it fails closed.
"""

from __future__ import annotations

from taskwarden_verifier.verifier import (
    MAX_DOCUMENT_BYTES,
    UNAVAILABLE_REASON,
    Claims,
    RevocationSnapshot,
    Rules,
    ScopeError,
    ScopeGrant,
    SourceUnavailable,
    TokenError,
    Verifier,
    check,
    check_source,
    claims_from,
    parse_jwks,
    parse_revocations,
    read_source,
)

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "UNAVAILABLE_REASON",
    "Claims",
    "RevocationSnapshot",
    "Rules",
    "ScopeError",
    "ScopeGrant",
    "SourceUnavailable",
    "TokenError",
    "Verifier",
    "check",
    "check_source",
    "claims_from",
    "parse_jwks",
    "parse_revocations",
    "read_source",
]
