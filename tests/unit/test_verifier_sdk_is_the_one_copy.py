"""Issue 14, verifier SDK: the operator runs the SDK's code, not a copy of it, so that what the
operator checks after signing is exactly what tool owners check."""

from __future__ import annotations

import taskwarden_verifier
from taskwarden import policy, timeutil, verifier, verifier_sources
from taskwarden.credentials import claims, keys, tokens
from taskwarden_verifier import contract, globs, sources
from taskwarden_verifier import verifier as sdk_verifier


def test_the_operator_re_exports_the_sdk_objects_themselves() -> None:
    assert verifier.Verifier is taskwarden_verifier.Verifier is sdk_verifier.Verifier
    assert verifier.Claims is taskwarden_verifier.Claims
    assert verifier.check is sdk_verifier.check
    assert verifier_sources.Cached is sources.Cached
    assert verifier_sources.parse_revocations is sources.parse_revocations
    assert tokens.verify is taskwarden_verifier.tokens.verify
    assert tokens.TokenError is taskwarden_verifier.TokenError
    assert policy.glob_match is globs.glob_match and policy.glob_covers is globs.glob_covers
    assert keys.b64url_decode is contract.b64url_decode
    assert timeutil.parse is contract.parse_rfc3339
    assert claims.REQUIRED_CLAIMS is contract.REQUIRED_CLAIMS
    assert keys.SUPPORTED_ALGORITHMS is contract.SUPPORTED_ALGORITHMS
