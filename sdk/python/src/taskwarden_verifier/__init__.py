"""Taskwarden verifier SDK: check a Taskwarden task token offline in a tool, with nothing but
pyjwt and cryptography installed (no kopf, no Kubernetes client).

    from taskwarden_verifier import Verifier          # threads / WSGI
    from taskwarden_verifier.aio import AsyncVerifier  # asyncio: the [aiohttp] extra

Modules: ``verifier`` (Verifier, Claims, the shared Rules), ``aio`` (AsyncVerifier),
``sources`` (where keys and the revocation list come from), ``tokens`` (the token check the
operator itself uses), ``globs`` (scope resource patterns), ``contract`` (constants shared with
the operator). docs/token-format.md in the Taskwarden repository describes the token.
"""

from __future__ import annotations

from taskwarden_verifier.tokens import Reason, TokenError
from taskwarden_verifier.verifier import (
    Claims,
    RevocationSnapshot,
    Rules,
    ScopeError,
    ScopeGrant,
    SourceUnavailable,
    Verifier,
)

__version__ = "0.1.0"
__all__ = [
    "Claims",
    "Reason",
    "RevocationSnapshot",
    "Rules",
    "ScopeError",
    "ScopeGrant",
    "SourceUnavailable",
    "TokenError",
    "Verifier",
]
