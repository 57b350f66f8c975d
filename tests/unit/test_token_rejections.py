"""Tokens that must be refused, each with its reason, and never echoed in the error."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from taskwarden.credentials import keys, tokens

NOW = 1_700_000_000.0
ISSUER = "https://taskwarden.example"
AUDIENCE = "https://api.github.com"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def material(alg: str = "ES256") -> tuple[keys.KeySet, str, dict[str, Any]]:
    """Two published keys of ``alg`` (first one signs), a valid token and its claims."""
    return _material(alg)


@functools.cache
def _material(alg: str) -> tuple[keys.KeySet, str, dict[str, Any]]:
    ks = keys.KeySet((keys.generate_key(NOW - 100, alg), keys.generate_key(NOW - 50, alg)))
    built = tokens.build_claims(
        issuer=ISSUER,
        spiffe_id="spiffe://cluster.local/ns/agents/sa/research-agent",
        audiences=[AUDIENCE],
        now=NOW,
        ttl=300,
        not_after=None,
        task={"namespace": "agents", "name": "triage-4711", "uid": "uid-1"},
        scopes=[{"tool": "github", "actions": ["read"], "resources": ["repo:acme/widgets"]}],
        data_class="internal",
        intent="triage issue 4711",
        pod={"name": "agent-pod", "uid": "pod-uid"},
    )
    token = tokens.sign(built, ks.keys[0], ks.jwks())
    return ks, token, built


def jwks(alg: str = "ES256") -> dict[str, Any]:
    return material(alg)[0].jwks()


def reject(token: Any, reason: str, jwk_set: dict[str, Any] | None = None, **kw: Any) -> None:
    kw.setdefault("now", NOW + 1)
    with pytest.raises(tokens.TokenError) as excinfo:
        tokens.verify(token, jwks() if jwk_set is None else jwk_set, **kw)
    assert excinfo.value.reason == reason, str(excinfo.value)
    if isinstance(token, str) and len(token) > 20:
        text = str(excinfo.value) + repr(excinfo.value.args)
        for part in token.split("."):
            if len(part) > 20:
                assert part not in text, "the error message leaks the token"


def test_the_reference_token_is_accepted() -> None:
    _, token, built = material()
    assert tokens.verify(token, jwks(), now=NOW + 1, audience=AUDIENCE, issuer=ISSUER) == built


# --- signature -----------------------------------------------------------------------------


def test_tampered_payload_is_refused() -> None:
    _, token, built = material()
    header, _, signature = token.split(".")
    widened = {**built, "scope": "github:admin:*", "exp": built["exp"] + 86400}
    reject(f"{header}.{b64json(widened)}.{signature}", "InvalidSignature")


def test_tampered_header_kid_swap_is_refused() -> None:
    ks, token, _ = material()
    header, payload, signature = token.split(".")
    swapped = {**json.loads(unb64(header)), "kid": ks.keys[1].kid}
    reject(f"{b64json(swapped)}.{payload}.{signature}", "InvalidSignature")


def test_a_token_signed_by_another_key_under_a_published_kid_is_refused() -> None:
    ks, _, built = material()
    attacker = keys.generate_key(NOW)
    forged = jwt.encode(
        built, attacker.private_key, algorithm="ES256", headers={"kid": ks.keys[0].kid}
    )
    reject(forged, "InvalidSignature")


def test_a_signature_from_a_different_token_is_refused() -> None:
    ks, token, built = material()
    other = tokens.sign({**built, "jti": "another"}, ks.keys[0], ks.jwks())
    reject(".".join([*token.split(".")[:2], other.split(".")[2]]), "InvalidSignature")


def test_an_empty_signature_is_refused() -> None:
    _, token, _ = material()
    header, payload, _ = token.split(".")
    reject(f"{header}.{payload}.", "InvalidSignature")


# --- algorithm confusion -------------------------------------------------------------------


def _unsigned(alg: str, kid: str, payload: dict[str, Any]) -> str:
    return f"{b64json({'alg': alg, 'kid': kid, 'typ': 'JWT'})}.{b64json(payload)}."


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_refused(alg: str) -> None:
    ks, _, built = material()
    reject(_unsigned(alg, ks.keys[0].kid, built), "AlgorithmNotAllowed")


def _hs256(kid: str, payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64json({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'})}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_hs256_signed_with_the_public_key_as_secret_is_refused() -> None:
    ks, _, built = material()
    key = ks.keys[0]
    secrets_an_attacker_knows = [
        key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(key.public_jwk()).encode(),
        json.dumps(ks.jwks()).encode(),
    ]
    for secret in secrets_an_attacker_knows:
        reject(_hs256(key.kid, built, secret), "AlgorithmNotAllowed")


def test_a_header_alg_that_differs_from_the_keys_alg_is_refused() -> None:
    _, token, _ = material()
    header, payload, signature = token.split(".")
    lying = {**json.loads(unb64(header)), "alg": "EdDSA"}
    reject(f"{b64json(lying)}.{payload}.{signature}", "AlgorithmNotAllowed")


def test_an_algorithm_outside_the_allow_list_is_refused() -> None:
    _, token, _ = material()
    reject(token, "AlgorithmNotAllowed", algorithms=("EdDSA",))


def test_a_jwk_without_alg_is_not_trusted() -> None:
    _, token, _ = material()
    stripped = {"keys": [{k: v for k, v in j.items() if k != "alg"} for j in jwks()["keys"]]}
    reject(token, "AlgorithmNotAllowed", jwk_set=stripped)


@pytest.mark.parametrize("allow", [("HS256",), ("ES256", "none"), ("RS256",), ()])
def test_allowing_anything_but_es256_or_eddsa_is_a_programming_error(
    allow: tuple[str, ...],
) -> None:
    _, token, _ = material()
    with pytest.raises(ValueError):
        tokens.verify(token, jwks(), now=NOW, algorithms=allow)


# --- keys ----------------------------------------------------------------------------------


def test_an_unknown_kid_is_refused() -> None:
    ks, token, _ = material()
    only_second = {"keys": [ks.keys[1].public_jwk()]}
    reject(token, "UnknownKey", jwk_set=only_second)
    reject(token, "UnknownKey", jwk_set={"keys": []})


def test_a_missing_kid_is_refused() -> None:
    _, token, _ = material()
    header, payload, signature = token.split(".")
    no_kid = {k: v for k, v in json.loads(unb64(header)).items() if k != "kid"}
    reject(f"{b64json(no_kid)}.{payload}.{signature}", "UnknownKey")


def test_a_duplicated_kid_in_the_jwks_is_refused() -> None:
    _, token, _ = material()
    doubled = {"keys": jwks()["keys"] + jwks()["keys"][:1]}
    reject(token, "UnknownKey", jwk_set=doubled)


def test_a_jwk_that_is_not_a_valid_point_is_refused() -> None:
    _, token, _ = material()
    first = dict(jwks()["keys"][0])
    first["y"] = b64(b"\x01" * 32)  # not on P-256
    reject(token, "UnknownKey", jwk_set={"keys": [first]})
    wrong_type = {**jwks()["keys"][0], "kty": "OKP"}
    reject(token, "UnknownKey", jwk_set={"keys": [wrong_type]})
    encryption_key = {**jwks()["keys"][0], "use": "enc"}
    reject(token, "UnknownKey", jwk_set={"keys": [encryption_key]})


def test_a_malformed_jwks_is_a_programming_error() -> None:
    _, token, _ = material()
    with pytest.raises(ValueError, match="JWK Set"):
        tokens.verify(token, {"nope": []}, now=NOW)


# --- time, audience, issuer, revocation ----------------------------------------------------


def test_expiry_is_checked_against_the_given_now() -> None:
    _, token, built = material()
    exp = built["exp"]
    assert tokens.verify(token, jwks(), now=exp - 1)
    reject(token, "Expired", now=exp)
    reject(token, "Expired", now=exp + 10_000)
    assert tokens.verify(token, jwks(), now=exp + 4, leeway=5)
    reject(token, "Expired", now=exp + 5, leeway=5)


def test_a_not_yet_valid_token_is_refused() -> None:
    _, token, built = material()
    assert tokens.verify(token, jwks(), now=built["nbf"])
    reject(token, "NotYetValid", now=built["nbf"] - 1)
    assert tokens.verify(token, jwks(), now=built["nbf"] - 1, leeway=1)


def test_nbf_is_checked_on_its_own() -> None:
    ks, _, built = material()
    later = {**built, "nbf": built["iat"] + 100}
    token = jwt.encode(later, ks.keys[0].private_key, algorithm="ES256",
                       headers={"kid": ks.keys[0].kid})  # fmt: skip
    reject(token, "NotYetValid", now=built["iat"] + 50)
    assert tokens.verify(token, jwks(), now=built["iat"] + 100)


def test_a_token_issued_in_the_future_is_refused() -> None:
    ks, _, built = material()
    odd = {**built, "iat": built["nbf"] + 100}
    token = jwt.encode(odd, ks.keys[0].private_key, algorithm="ES256",
                       headers={"kid": ks.keys[0].kid})  # fmt: skip
    reject(token, "NotYetValid", now=built["nbf"] + 50)


def test_the_wrong_audience_is_refused() -> None:
    _, token, _ = material()
    reject(token, "WrongAudience", audience="https://evil.example")
    reject(token, "WrongAudience", audience="https://api.github.com/")


def test_the_wrong_issuer_is_refused() -> None:
    _, token, _ = material()
    reject(token, "WrongIssuer", issuer="https://other-cluster.example")


def test_a_revoked_jti_is_refused() -> None:
    _, token, built = material()
    reject(token, "Revoked", revoked=frozenset({built["jti"]}))
    assert tokens.verify(token, jwks(), now=NOW, revoked={"other"})


# --- claims --------------------------------------------------------------------------------


def _signed(payload: Any) -> str:
    ks = material()[0]
    return jwt.encode(payload, ks.keys[0].private_key, algorithm="ES256",
                      headers={"kid": ks.keys[0].kid})  # fmt: skip


@pytest.mark.parametrize("claim", tokens.REQUIRED_CLAIMS)
def test_each_required_claim_is_required(claim: str) -> None:
    built = material()[2]
    reject(_signed({k: v for k, v in built.items() if k != claim}), "MissingClaim")


@pytest.mark.parametrize(
    ("claim", "value"),
    [("exp", "tomorrow"), ("exp", True), ("nbf", None), ("aud", 3), ("aud", []),
     ("sub", 7), ("jti", ""), ("taskwarden.dev/task", "agents/x"), ("scopes", "all")],
)  # fmt: skip
def test_claims_of_the_wrong_type_are_refused(claim: str, value: Any) -> None:
    built = material()[2]
    reject(_signed({**built, claim: value}), "Malformed")


def test_a_non_finite_exp_is_refused() -> None:
    ks = material()[0]
    payload = json.dumps({**material()[2], "exp": float("inf")}).encode()  # "Infinity"
    assert b"Infinity" in payload
    # Properly signed: the check must not rely on the signature failing.
    forged = jwt.api_jws.PyJWS().encode(
        payload, ks.keys[0].private_key, algorithm="ES256", headers={"kid": ks.keys[0].kid}
    )
    reject(forged, "Malformed")


# --- malformed strings ---------------------------------------------------------------------


def _noncanonical_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    last = signature[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # 64-byte signature -> 86 chars, the last one carries 4 unused bits: set one of them.
    twin = alphabet[alphabet.index(last) ^ 1]
    assert unb64(signature[:-1] + twin) == unb64(signature)
    return f"{header}.{payload}.{signature[:-1]}{twin}"


MALFORMED: dict[str, Callable[[str], Any]] = {
    "empty": lambda t: "",
    "one segment": lambda t: "abc",
    "two segments": lambda t: "a.b",
    "four segments": lambda t: t + ".x",
    "not base64": lambda t: "!!!." + t.split(".", 1)[1],
    "padded": lambda t: t + "==",
    "trailing newline": lambda t: t + "\n",
    "leading space": lambda t: " " + t,
    "bytes": lambda t: t.encode(),
    "none": lambda t: None,
    "header not json": lambda t: b64(b"{nope") + "." + t.split(".", 1)[1],
    "header a list": lambda t: b64(b"[]") + "." + t.split(".", 1)[1],
    "header NaN": lambda t: b64(b'{"alg":NaN}') + "." + t.split(".", 1)[1],
    "header crit": lambda t: (
        b64json({**json.loads(unb64(t.split(".")[0])), "crit": ["exp"]}) + "." + t.split(".", 1)[1]
    ),
    "header b64 false": lambda t: (
        b64json({**json.loads(unb64(t.split(".")[0])), "b64": False}) + "." + t.split(".", 1)[1]
    ),
    "header typ": lambda t: (
        b64json({**json.loads(unb64(t.split(".")[0])), "typ": "dpop+jwt"})
        + "."
        + t.split(".", 1)[1]
    ),
    "non-canonical signature": _noncanonical_signature,
    "too long": lambda t: t + "A" * tokens.MAX_TOKEN_LENGTH,
    "non-ascii": lambda t: t[:10] + "é" + t[11:],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_token_strings_are_refused(case: str) -> None:
    _, token, _ = material()
    reject(MALFORMED[case](token), "Malformed")


def test_non_canonical_base64_is_caught_by_our_own_parser() -> None:
    """Not left to pyjwt: older pyjwt releases decode such segments leniently."""
    _, token, _ = material()
    with pytest.raises(tokens.TokenError) as excinfo:
        tokens.verify(_noncanonical_signature(token), jwks(), now=NOW)
    assert excinfo.value.message == "signature segment: non-canonical base64url"
    with pytest.raises(tokens.TokenError) as excinfo:
        tokens.verify(token + "==", jwks(), now=NOW)  # pyjwt accepts this padding
    assert excinfo.value.message == "signature segment: not unpadded base64url"


@pytest.mark.parametrize("extension", [{"crit": ["exp"]}, {"b64": False, "crit": ["b64"]}])
def test_jws_extensions_are_refused_before_the_signature_is_checked(
    extension: dict[str, Any],
) -> None:
    ks, _, built = material()
    key = ks.keys[0]
    payload = b"" if extension.get("b64") is False else json.dumps(built).encode()
    header = {"alg": "ES256", "kid": key.kid, "typ": "JWT", **extension}
    signing_input = f"{b64json(header)}.{b64(payload)}"
    token = f"{signing_input}.{b64(b'x' * 64)}"
    with pytest.raises(tokens.TokenError) as excinfo:
        tokens.verify(token, jwks(), now=NOW)
    assert excinfo.value.reason == "Malformed"
    assert "unsupported header parameter" in excinfo.value.message


def test_a_validly_signed_non_json_payload_is_refused() -> None:
    ks = material()[0]
    token = jwt.api_jws.PyJWS().encode(
        b"not json", ks.keys[0].private_key, algorithm="ES256", headers={"kid": ks.keys[0].kid}
    )
    reject(token, "Malformed")
    array = jwt.api_jws.PyJWS().encode(
        b"[1,2]", ks.keys[0].private_key, algorithm="ES256", headers={"kid": ks.keys[0].kid}
    )
    reject(array, "Malformed")


# --- any single corrupted byte -------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(alg=st.sampled_from(["ES256", "EdDSA"]), data=st.data())
def test_any_single_flipped_byte_is_refused(alg: str, data: st.DataObject) -> None:
    ks, token, _ = material(alg)
    raw = bytearray(token.encode("ascii"))
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="index")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    raw[index] ^= mask
    corrupted = raw.decode("latin-1")
    with pytest.raises(tokens.TokenError):
        tokens.verify(corrupted, ks.jwks(), now=NOW + 1, audience=AUDIENCE, issuer=ISSUER)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_every_corruption_at_segment_edges_is_refused(alg: str) -> None:
    """Exhaustive where random flips rarely land: the last character of a segment carries
    unused bits, so a lenient decoder would map two spellings to the same signature."""
    ks, token, _ = material(alg)
    dots = [i for i, ch in enumerate(token) if ch == "."]
    edges = {0, 1, len(token) - 2, len(token) - 1}
    for dot in dots:
        edges.update({dot - 2, dot - 1, dot, dot + 1, dot + 2})
    raw = token.encode("ascii")
    for index in sorted(edges):
        for mask in range(1, 256):
            corrupted = bytearray(raw)
            corrupted[index] ^= mask
            with pytest.raises(tokens.TokenError):
                tokens.verify(corrupted.decode("latin-1"), ks.jwks(), now=NOW + 1)
