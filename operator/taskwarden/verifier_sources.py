"""Where a verifier's trust comes from (the JWKS and the revocation list): a re-export of the
verifier SDK's ``taskwarden_verifier.sources``, which reads, recognises and caches them and
documents how it fails closed. Used by ``taskwarden verify``.
"""

from __future__ import annotations

from taskwarden_verifier.sources import (
    FETCH_ERRORS,
    FETCH_TIMEOUT,
    JWKS_KEY,
    MAX_DOCUMENT_BYTES,
    REVOCATIONS_KEY,
    Cached,
    RevocationSnapshot,
    check_source,
    parse_jwks,
    parse_revocations,
    read_source,
)

__all__ = [
    "FETCH_ERRORS",
    "FETCH_TIMEOUT",
    "JWKS_KEY",
    "MAX_DOCUMENT_BYTES",
    "REVOCATIONS_KEY",
    "Cached",
    "RevocationSnapshot",
    "check_source",
    "parse_jwks",
    "parse_revocations",
    "read_source",
]
