"""Signing credentials, and the interface through which callers sign: a `Signer`.

Following SPIRE's key manager, callers never hold a private key: they ask a key manager
(`keymanager.MemoryKeyManager` in memory, `publishing.KeyManager` backed by a Secret) for the
`Signer` of the key that signs now, and get a token back. A signer has an ID (``kid``, the RFC
7638 thumbprint), an ``algorithm`` and a ``public_jwk``; its ``sign`` verifies what it signed
against the published JWKS before returning it, the way SPIRE's CA checks every JWT-SVID with
its credential validator, so a token that would not verify never reaches a Secret.

`sign(claims, key, jwks, now=...)` is the same step for callers that still hold a
`keys.SigningKey`. Pure: no kopf, no Kubernetes client; time comes in as ``now``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import jwt

from taskwarden.credentials import keys as keys_mod
from taskwarden.credentials import verification


class Signer(Protocol):
    """One signing key as callers see it: an ID, an algorithm, a public JWK and `sign`."""

    @property
    def kid(self) -> str:
        """The key ID written into each token header (RFC 7638 thumbprint)."""
        ...

    @property
    def algorithm(self) -> str:
        """The JWS ``alg``: ES256 or EdDSA."""
        ...

    def public_jwk(self) -> dict[str, str]:
        """The public JWK as published in the JWKS."""
        ...

    def sign(self, claims: Mapping[str, Any], now: float) -> str:
        """The signed token, verified at ``now`` against the published JWKS, else TokenError."""
        ...


class KeySigner:
    """A `Signer` over one in-memory `keys.SigningKey`, checking against a JWKS snapshot.

    Key managers hand these out; the private key stays inside (never an attribute a caller
    reads) and out of ``repr``.
    """

    def __init__(self, key: keys_mod.SigningKey, jwks: Mapping[str, Any]) -> None:
        self._key = key
        self._jwks = jwks

    def __repr__(self) -> str:
        return f"KeySigner(kid={self._key.kid!r}, algorithm={self._key.alg!r})"

    @property
    def kid(self) -> str:
        return self._key.kid

    @property
    def algorithm(self) -> str:
        return self._key.alg

    def public_jwk(self) -> dict[str, str]:
        return self._key.public_jwk()

    def sign(self, claims: Mapping[str, Any], now: float) -> str:
        return sign(claims, self._key, self._jwks, now=now)


def sign(
    claims: Mapping[str, Any],
    key: keys_mod.SigningKey,
    jwks: Mapping[str, Any],
    *,
    now: float | None = None,
) -> str:
    """Sign ``claims`` with ``key`` (header ``kid``, ``typ: JWT``), then verify the result.

    The check runs :func:`verification.verify` against ``jwks`` (what verifiers see) at
    ``now``, default the token's ``iat``, with the token's own issuer and first audience, and
    requires the claims to come back unchanged. So a token signed by an unpublished key, with
    a broken claim set or already expired never leaves this function: it raises
    :class:`verification.TokenError` instead.
    Called by the issuing service right before the token goes into a Secret.
    """
    if now is None:
        iat = claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            raise verification.TokenError(
                verification.Reason.MISSING_CLAIM, "claims have no numeric iat to check against"
            )
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
        raise verification.TokenError(
            verification.Reason.MALFORMED, f"claims could not be encoded ({type(exc).__name__})"
        ) from None
    try:
        verified = verification.verify(
            token,
            jwks,
            now=now,
            audience=audience if isinstance(audience, str) else None,
            issuer=issuer if isinstance(issuer, str) else None,
            algorithms=(key.alg,),
        )
    except verification.TokenError as exc:
        raise verification.TokenError(
            exc.reason, f"freshly signed token (kid {key.kid}) failed verification: {exc.message}"
        ) from None
    if verified != json.loads(json.dumps(dict(claims))):
        raise verification.TokenError(
            verification.Reason.MALFORMED,
            f"freshly signed token (kid {key.kid}) did not round-trip its claims",
        )
    return token
