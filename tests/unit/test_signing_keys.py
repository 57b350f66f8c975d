"""Signing keys: RFC 7638 kids, JWKS shape, prepare/activate/retire rotation, Secret round trip."""

from __future__ import annotations

import base64
import hashlib
import json
import math

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from taskwarden.credentials import keys

T0 = 1_700_000_000.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def independent_thumbprint(key: keys.SigningKey) -> str:
    """RFC 7638 by hand: required members, lexicographic order, no whitespace, SHA-256."""
    public = key.public_key
    if isinstance(public, ec.EllipticCurvePublicKey):
        n = public.public_numbers()
        x, y = b64url(n.x.to_bytes(32, "big")), b64url(n.y.to_bytes(32, "big"))
        text = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        text = f'{{"crv":"Ed25519","kty":"OKP","x":"{b64url(raw)}"}}'
    return b64url(hashlib.sha256(text.encode()).digest())


# --- key IDs -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_kid_is_the_rfc7638_thumbprint_of_the_public_key(alg: str) -> None:
    key = keys.generate_key(T0, alg)
    assert key.kid == independent_thumbprint(key)
    assert len(key.kid) == 43  # 32 bytes of SHA-256, unpadded base64url


def test_thumbprint_matches_the_rfc8037_test_vector() -> None:
    # RFC 8037 appendix A.3
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert keys.jwk_thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    # Extra members (kid, alg, use) must not change it.
    assert keys.jwk_thumbprint({**jwk, "kid": "x", "alg": "EdDSA", "use": "sig"}) == (
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    )


def test_kid_is_stable_across_reloads_and_differs_between_keys() -> None:
    key = keys.generate_key(T0)
    reloaded = keys.SigningKey(
        kid=key.kid, alg=key.alg, private_pem=key.private_pem, created_at=key.created_at
    )
    assert reloaded.kid == key.kid == reloaded.public_jwk()["kid"]
    assert keys.jwk_thumbprint(key.public_jwk()) == key.kid
    assert keys.generate_key(T0).kid != key.kid


def test_a_kid_that_is_not_the_thumbprint_is_refused() -> None:
    key = keys.generate_key(T0)
    other = keys.generate_key(T0)
    with pytest.raises(ValueError, match="thumbprint"):
        keys.SigningKey(kid=other.kid, alg="ES256", private_pem=key.private_pem, created_at=T0)


def test_an_alg_that_does_not_fit_the_key_is_refused() -> None:
    key = keys.generate_key(T0, "ES256")
    with pytest.raises(ValueError, match="Ed25519"):
        keys.SigningKey(kid=key.kid, alg="EdDSA", private_pem=key.private_pem, created_at=T0)
    with pytest.raises(ValueError, match="unsupported"):
        keys.SigningKey(kid=key.kid, alg="HS256", private_pem=key.private_pem, created_at=T0)
    with pytest.raises(ValueError, match="unsupported"):
        keys.generate_key(T0, "RS256")


def test_repr_never_shows_the_private_key() -> None:
    key = keys.generate_key(T0)
    assert "PRIVATE" not in repr(key)
    assert "PRIVATE" not in repr(keys.KeySet((key,)))


# --- JWKS ----------------------------------------------------------------------------------


def test_es256_public_jwk_shape() -> None:
    key = keys.generate_key(T0, "ES256")
    jwk = key.public_jwk()
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    assert len(base64.urlsafe_b64decode(jwk["x"] + "=")) == 32
    assert len(base64.urlsafe_b64decode(jwk["y"] + "=")) == 32
    assert jwk["kid"] == key.kid


def test_eddsa_public_jwk_shape() -> None:
    key = keys.generate_key(T0, "EdDSA")
    jwk = key.public_jwk()
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert isinstance(key.private_key, ed25519.Ed25519PrivateKey)


def test_jwks_lists_every_key_public_only_and_is_json() -> None:
    ks = keys.KeySet((keys.generate_key(T0), keys.generate_key(T0 + 1, "EdDSA")))
    document = json.loads(json.dumps(ks.jwks()))
    assert [k["kid"] for k in document["keys"]] == [k.kid for k in ks.keys]
    for jwk in document["keys"]:
        assert "d" not in jwk  # no private member ever published


def test_a_published_jwk_verifies_with_a_stock_jwt_library() -> None:
    """Tool owners use whatever JWT library they like; our JWK must load there."""
    for alg in ("ES256", "EdDSA"):
        key = keys.generate_key(T0, alg)
        token = jwt.encode({"sub": "x"}, key.private_key, algorithm=alg)
        public = jwt.PyJWK(key.public_jwk())
        assert jwt.decode(token, public, algorithms=[alg]) == {"sub": "x"}


# --- rotation ------------------------------------------------------------------------------

P, D, R = 1000.0, 100.0, 300.0  # rotation period, publish delay, retention


def rotate(ks: keys.KeySet, now: float) -> tuple[keys.KeySet, bool]:
    return ks.rotate(now, rotation_period=P, publish_delay=D, retain=R)


def test_rotation_timeline_prepare_activate_retire() -> None:
    ks, changed = rotate(keys.KeySet(), T0)
    assert changed and len(ks.keys) == 1
    (k1,) = ks.keys
    assert ks.active(T0, D) == k1  # the first key signs at once

    ks, changed = rotate(ks, T0 + P - D - 1)
    assert not changed and ks.keys == (k1,)

    ks, changed = rotate(ks, T0 + P - D)  # prepare: next key published, not yet signing
    assert changed and len(ks.keys) == 2
    k2 = ks.keys[1]
    assert k2.created_at == T0 + P - D
    assert [j["kid"] for j in ks.jwks()["keys"]] == [k1.kid, k2.kid]
    assert ks.active(T0 + P - D, D) == k1
    assert ks.active(T0 + P - 1, D) == k1

    assert ks.active(T0 + P, D) == k2  # activate: published for D seconds
    assert ks.retired_at(k1.kid, D) == T0 + P
    assert ks.retired_at(k2.kid, D) is None

    ks, changed = rotate(ks, T0 + P + R)  # retired k1 still published for R seconds
    assert not changed and ks.keys == (k1, k2)

    ks, changed = rotate(ks, T0 + P + R + 1)  # ... then dropped
    assert changed and ks.keys == (k2,)

    ks, changed = rotate(ks, k2.created_at + P - D)  # and the cycle repeats
    assert changed and ks.keys[0] == k2 and len(ks.keys) == 2
    assert ks.active(k2.created_at + P, D) == ks.keys[1]


def test_rotate_is_idempotent_at_the_same_instant() -> None:
    ks, _ = rotate(keys.KeySet(), T0)
    ks, _ = rotate(ks, T0 + P - D)
    again, changed = rotate(ks, T0 + P - D)
    assert not changed and again == ks


def test_rotate_keeps_the_algorithm_unless_told_otherwise() -> None:
    ks, _ = keys.KeySet().rotate(T0, rotation_period=P, publish_delay=D, retain=R, alg="EdDSA")
    assert ks.keys[0].alg == "EdDSA"
    ks, _ = rotate(ks, T0 + P)
    assert [k.alg for k in ks.keys] == ["EdDSA", "EdDSA"]
    ks, _ = ks.rotate(T0 + 2 * P, rotation_period=P, publish_delay=D, retain=R, alg="ES256")
    assert ks.keys[-1].alg == "ES256"


def test_after_a_long_outage_the_old_key_keeps_signing_until_the_new_one_is_published() -> None:
    ks, _ = rotate(keys.KeySet(), T0)
    (k1,) = ks.keys
    later = T0 + 10 * P
    ks, changed = rotate(ks, later)
    assert changed and ks.keys[0] == k1 and len(ks.keys) == 2
    assert ks.active(later, D) == k1  # verifiers have not seen the new key yet
    assert ks.active(later + D, D) == ks.keys[1]


def test_active_on_an_empty_set_is_an_error() -> None:
    with pytest.raises(ValueError, match="rotate"):
        keys.KeySet().active(T0)


@pytest.mark.parametrize(
    ("period", "delay", "retain"),
    [(100.0, 100.0, 10.0), (100.0, 51.0, 10.0), (100.0, -1.0, 10.0), (100.0, 1.0, -1.0),
     (math.inf, 1.0, 1.0), (100.0, 1.0, math.nan), (0.0, 0.0, 1.0)],
)  # fmt: skip
def test_rotate_refuses_an_impossible_schedule(period: float, delay: float, retain: float) -> None:
    with pytest.raises(ValueError):
        keys.KeySet().rotate(T0, rotation_period=period, publish_delay=delay, retain=retain)


def test_defaults_are_sane() -> None:
    assert keys.DEFAULT_ROTATION_PERIOD == 24 * 3600
    assert 0 < keys.DEFAULT_PUBLISH_DELAY < keys.DEFAULT_ROTATION_PERIOD
    assert keys.DEFAULT_RETAIN >= 10 * 60  # default credentialTTL cap is 10m


def test_key_set_sorts_keys_and_refuses_duplicate_kids() -> None:
    a, b = keys.generate_key(T0), keys.generate_key(T0 + 5)
    assert keys.KeySet((b, a)).keys == (a, b)
    with pytest.raises(ValueError, match="duplicate"):
        keys.KeySet((a, a))


@settings(max_examples=40, deadline=None)
@given(
    period=st.integers(min_value=60, max_value=5000),
    delay_fraction=st.floats(min_value=0.0, max_value=0.5),
    retain=st.integers(min_value=0, max_value=10000),
    ttl_fraction=st.floats(min_value=0.0, max_value=1.0),
    steps=st.lists(st.integers(min_value=1, max_value=400), min_size=20, max_size=120),
)
def test_rotation_invariants_over_a_simulated_clock(
    period: int,
    delay_fraction: float,
    retain: int,
    ttl_fraction: float,
    steps: list[int],
) -> None:
    """Whatever the schedule and tick pattern, with retain >= credential TTL:

    * every token signed by the active key stays verifiable (its kid published) until it expires;
    * the active key was published publish_delay before it signs (the bootstrap key excepted);
    * the set stays small.
    """
    delay = math.floor(period * delay_fraction)
    ttl = retain * ttl_fraction
    now = T0
    ks, _ = keys.KeySet().rotate(now, rotation_period=period, publish_delay=delay, retain=retain)
    bootstrap = ks.keys[0].kid
    outstanding: list[tuple[str, float]] = []
    for step in steps:
        now += step
        ks, _ = ks.rotate(now, rotation_period=period, publish_delay=delay, retain=retain)
        published = {k.kid for k in ks.keys}
        outstanding = [(kid, exp) for kid, exp in outstanding if exp > now]
        for kid, _exp in outstanding:
            assert kid in published, "a key was dropped while a token it signed was still valid"
        signer = ks.active(now, delay)
        assert signer.kid in published
        if signer.kid != bootstrap:
            assert now - signer.created_at >= delay
        outstanding.append((signer.kid, now + ttl))
        # active + at most one waiting + the retired ones still inside the retention window
        assert len(ks.keys) <= 3 + retain // (period - delay)
        assert sum(1 for k in ks.keys if now - k.created_at < delay) <= 1


# --- Secret round trip ---------------------------------------------------------------------


def test_secret_data_round_trips_exactly() -> None:
    ks = keys.KeySet(
        (
            keys.generate_key(T0 + 0.25),
            keys.generate_key(T0 + 50, "EdDSA"),
            keys.generate_key(T0 + 100),
        )
    )
    data = ks.to_secret_data()
    assert set(data) == {"keys.json"}
    assert all(isinstance(v, str) for v in data.values())
    back = keys.KeySet.from_secret_data(data)
    assert back == ks
    assert [k.created_at for k in back.keys] == [T0 + 0.25, T0 + 50, T0 + 100]
    assert back.jwks() == ks.jwks()
    assert back.to_secret_data() == data
    # The restored keys still sign what the original keys verify.
    token = jwt.encode({"a": 1}, back.keys[0].private_key, algorithm="ES256")
    assert jwt.decode(token, ks.keys[0].public_key, algorithms=["ES256"]) == {"a": 1}


def test_an_empty_key_set_round_trips() -> None:
    assert keys.KeySet.from_secret_data(keys.KeySet().to_secret_data()) == keys.KeySet()


def _doc(**entry_overrides: object) -> dict[str, str]:
    key = keys.generate_key(T0)
    entry: dict[str, object] = {
        "kid": key.kid,
        "alg": key.alg,
        "createdAt": key.created_at,
        "privateKeyPem": key.private_pem.decode(),
    }
    entry.update(entry_overrides)
    return {"keys.json": json.dumps({"version": 1, "keys": [entry]})}


def _other_kid() -> str:
    return keys.generate_key(T0).kid


def _ed_pem() -> str:
    return keys.generate_key(T0, "EdDSA").private_pem.decode()


def _p384_pem() -> str:
    private = ec.generate_private_key(ec.SECP384R1())
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


MALFORMED = {
    "missing entry": lambda: {},
    "not json": lambda: {"keys.json": "{nope"},
    "not an object": lambda: {"keys.json": "[]"},
    "wrong version": lambda: {"keys.json": json.dumps({"version": 9, "keys": []})},
    "keys not a list": lambda: {"keys.json": json.dumps({"version": 1, "keys": {}})},
    "entry not an object": lambda: {"keys.json": json.dumps({"version": 1, "keys": [1]})},
    "missing kid": lambda: _doc(kid=None),
    "bad created_at": lambda: _doc(createdAt="yesterday"),
    "bool created_at": lambda: _doc(createdAt=True),
    "missing pem": lambda: _doc(privateKeyPem=None),
    "garbage pem": lambda: _doc(privateKeyPem="-----BEGIN PRIVATE KEY-----\nAAAA\n"),
    "kid of another key": lambda: _doc(kid=_other_kid()),
    "alg mismatch": lambda: _doc(privateKeyPem=_ed_pem()),
    "wrong curve": lambda: _doc(privateKeyPem=_p384_pem()),
    "unsupported alg": lambda: _doc(alg="HS256"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_secret_data_is_a_clear_value_error(case: str) -> None:
    data = MALFORMED[case]()
    with pytest.raises(ValueError) as excinfo:
        keys.KeySet.from_secret_data(data)
    message = str(excinfo.value)
    assert "keys.json" in message
    assert "PRIVATE KEY" not in message  # never echo key material
    for line in _pem_body_lines(data):
        assert line not in message


def _pem_body_lines(data: dict[str, str]) -> list[str]:
    try:
        entries = json.loads(data["keys.json"])["keys"]
    except (KeyError, ValueError, TypeError):
        return []
    pems = [e.get("privateKeyPem") for e in entries if isinstance(e, dict)]
    return [
        line
        for pem in pems
        if isinstance(pem, str)
        for line in pem.splitlines()
        if line and not line.startswith("-----")
    ]


def test_duplicate_kids_in_secret_data_are_refused() -> None:
    key = keys.generate_key(T0)
    entry = {
        "kid": key.kid,
        "alg": key.alg,
        "createdAt": key.created_at,
        "privateKeyPem": key.private_pem.decode(),
    }
    data = {"keys.json": json.dumps({"version": 1, "keys": [entry, entry]})}
    with pytest.raises(ValueError, match="duplicate"):
        keys.KeySet.from_secret_data(data)


# --- base64url -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["AB=", "A", "AB C", "A+B/", "QR", "AAF"])
def test_b64url_decode_refuses_non_canonical_input(text: str) -> None:
    # "QR" and "AAE" differ from the canonical "QQ"/"AAE" only in the unused low bits.
    with pytest.raises(ValueError):
        keys.b64url_decode(text)


@given(st.binary(max_size=200))
def test_b64url_round_trips(data: bytes) -> None:
    assert keys.b64url_decode(keys.b64url_encode(data)) == data
