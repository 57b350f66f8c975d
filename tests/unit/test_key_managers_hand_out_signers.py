"""Key managers hand out signers: callers get a kid, an algorithm, a public JWK and `sign`, never
a private key; memory and Secret backends behave the same (SPIRE's key manager shape)."""

from __future__ import annotations

from typing import Any

import pytest

from taskwarden import config, publishing
from taskwarden.credentials import keymanager, keys, signing, tokens

NOW = 1_700_000_000.0
ISSUER = "https://taskwarden.taskwarden-system.svc"
AUDIENCE = "https://api.github.com"
SETTINGS = config.KeySettings(rotation_period=3600.0, publish_delay=600.0, retain=1800.0)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def claims(now: float, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "issuer": ISSUER,
        "spiffe_id": "spiffe://cluster.local/ns/agents/sa/research-agent",
        "audiences": [AUDIENCE],
        "now": now,
        "ttl": 300,
        "not_after": None,
        "task": {"namespace": "agents", "name": "triage", "uid": "uid-1"},
        "scopes": [{"tool": "github", "actions": ["read"], "resources": ["repo:acme/w"]}],
        "data_class": "internal",
        "intent": "triage",
        "pod": None,
    }
    arguments.update(overrides)
    return tokens.build_claims(**arguments)


def secret_backend(clock: Clock) -> publishing.KeyManager:
    """The Secret backend with its keys loaded as `ensure()` would leave them (no API here)."""
    manager = publishing.KeyManager(None, "taskwarden-system", SETTINGS, clock=clock)  # type: ignore[arg-type]  # no API call is made
    manager.keyset, _ = keys.KeySet().rotate(
        clock(),
        rotation_period=SETTINGS.rotation_period,
        publish_delay=SETTINGS.publish_delay,
        retain=SETTINGS.retain,
    )
    return manager


def memory_backend(clock: Clock) -> keymanager.MemoryKeyManager:
    return keymanager.MemoryKeyManager(SETTINGS, clock=clock)


BACKENDS = [memory_backend, secret_backend]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_signer_signs_what_verifies_against_the_published_jwks(backend: Any) -> None:
    clock = Clock()
    manager: keymanager.KeyManager = backend(clock)
    signer = manager.signer()
    token = signer.sign(claims(clock()), clock())

    assert tokens.unverified_header(token) == {"alg": "ES256", "kid": signer.kid, "typ": "JWT"}
    assert signer.algorithm == "ES256"
    assert signer.public_jwk() in manager.jwks()["keys"]
    assert signer.kid == keys.jwk_thumbprint(signer.public_jwk())
    got = tokens.verify(token, manager.jwks(), now=clock() + 1, audience=AUDIENCE, issuer=ISSUER)
    assert got["sub"].endswith("/sa/research-agent")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_signer_never_exposes_its_private_key(backend: Any) -> None:
    signer = backend(Clock()).signer()
    public = [name for name in dir(signer) if not name.startswith("_")]
    assert sorted(public) == ["algorithm", "kid", "public_jwk", "sign"]
    assert "PRIVATE" not in repr(signer) and "d" not in signer.public_jwk()


def test_a_signer_refuses_a_token_verifiers_could_not_check() -> None:
    ks, _ = keys.KeySet().rotate(NOW)
    other, _ = keys.KeySet().rotate(NOW)
    signer = signing.KeySigner(ks.active(NOW), other.jwks())  # its key is not published
    with pytest.raises(tokens.TokenError) as err:
        signer.sign(claims(NOW), NOW)
    assert err.value.reason is tokens.Reason.UNKNOWN_KEY


def test_a_signer_refuses_claims_that_are_already_expired() -> None:
    signer = keymanager.MemoryKeyManager(SETTINGS, clock=Clock()).signer()
    with pytest.raises(tokens.TokenError) as err:
        signer.sign(claims(NOW), NOW + 3600)
    assert err.value.reason is tokens.Reason.EXPIRED


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_rotate_on_the_same_schedule(backend: Any) -> None:
    """The next key is published publish_delay before it signs; the old one stays published."""
    clock = Clock()
    manager = backend(clock)
    first = manager.signer()
    old_token = first.sign(claims(clock()), clock())

    clock.now = NOW + SETTINGS.rotation_period - SETTINGS.publish_delay
    if isinstance(manager, keymanager.MemoryKeyManager):
        assert manager.rotate() is True
    else:
        manager.keyset, changed = manager.keyset.rotate(
            clock(),
            rotation_period=SETTINGS.rotation_period,
            publish_delay=SETTINGS.publish_delay,
            retain=SETTINGS.retain,
        )
        assert changed
    assert len(manager.jwks()["keys"]) == 2
    assert manager.signer().kid == first.kid  # published, not yet signing

    clock.now = NOW + SETTINGS.rotation_period
    second = manager.signer()
    assert second.kid != first.kid
    tokens.verify(old_token, manager.jwks(), now=NOW + 1, audience=AUDIENCE)


def test_the_memory_backend_makes_its_first_key_on_demand() -> None:
    manager = keymanager.MemoryKeyManager(clock=Clock())
    assert manager.kids() == ()
    signer = manager.signer()
    assert manager.kids() == (signer.kid,)
    assert manager.rotate() is False  # nothing due yet


def test_the_legacy_sign_path_still_matches_the_signer() -> None:
    """`tokens.sign(claims, key, jwks)` keeps working for callers that still hold a key."""
    manager = secret_backend(Clock())
    c = claims(NOW)
    legacy = tokens.sign(c, manager.active(), manager.jwks(), now=NOW)
    assert tokens.unverified_header(legacy)["kid"] == manager.signer().kid
    assert tokens.verify(legacy, manager.jwks(), now=NOW) == c
