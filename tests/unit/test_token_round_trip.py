"""Tokens: every contract claim survives build -> sign -> verify; delegation; sign's self-check."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from taskwarden.credentials import keys, revocation, tokens

NOW = 1_700_000_000.25
ISSUER = "https://taskwarden.taskwarden-system.svc"
SPIFFE = "spiffe://cluster.local/ns/agents/sa/research-agent"
AUDIENCE = "https://api.github.com"
TASK = {"namespace": "agents", "name": "triage-4711", "uid": "0b7c-uid"}
POD = {"name": "research-agent-7d9f-abcde", "uid": "pod-uid-1"}
SCOPES: list[dict[str, Any]] = [
    {"tool": "github", "actions": ["read", "comment"], "resources": ["repo:acme/widgets"]},
    {"tool": "jira", "actions": ["read"], "resources": ["project:OPS", "project:DEV"]},
]


def key_set(alg: str = "ES256") -> keys.KeySet:
    ks, _ = keys.KeySet().rotate(NOW - 10, alg=alg)
    return ks


def claims(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "issuer": ISSUER,
        "spiffe_id": SPIFFE,
        "audiences": [AUDIENCE, "https://tools.example"],
        "now": NOW,
        "ttl": 300,
        "not_after": NOW + 1800,
        "task": TASK,
        "scopes": SCOPES,
        "data_class": "internal",
        "intent": "triage issue 4711",
        "pod": POD,
    }
    arguments.update(overrides)
    return tokens.build_claims(**arguments)


def b64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def test_every_contract_claim_round_trips() -> None:
    ks = key_set()
    key = ks.active(NOW)
    token = tokens.sign(claims(), key, ks.jwks())
    got = tokens.verify(token, ks.jwks(), now=NOW + 1, audience=AUDIENCE, issuer=ISSUER)

    assert set(got) == {
        "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "taskwarden.dev/task",
        "scope", "scopes", "data_class", "intent", "pod",
    }  # fmt: skip
    assert got["iss"] == ISSUER
    assert got["sub"] == SPIFFE
    assert got["aud"] == [AUDIENCE, "https://tools.example"]
    assert got["iat"] == got["nbf"] == 1_700_000_000
    assert got["exp"] == 1_700_000_300
    assert isinstance(got["iat"], int) and isinstance(got["exp"], int)
    assert got["taskwarden.dev/task"] == TASK
    assert got["scope"] == (
        "github:read:repo:acme/widgets github:comment:repo:acme/widgets "
        "jira:read:project:OPS jira:read:project:DEV"
    )
    assert got["scopes"] == SCOPES
    assert got["data_class"] == "internal"
    assert got["intent"] == "triage issue 4711"
    assert got["pod"] == POD
    assert "act" not in got
    jti = got["jti"]
    assert len(keys.b64url_decode(jti)) >= 16  # >= 128 random bits, base64url

    header = b64json(token.split(".")[0])
    assert header == {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    assert tokens.unverified_header(token)["kid"] == key.kid


def test_eddsa_tokens_round_trip() -> None:
    ks = key_set("EdDSA")
    key = ks.active(NOW)
    token = tokens.sign(claims(), key, ks.jwks())
    assert b64json(token.split(".")[0])["alg"] == "EdDSA"
    assert tokens.verify(token, ks.jwks(), now=NOW, audience=AUDIENCE)["sub"] == SPIFFE


def test_a_stock_jwt_library_accepts_our_token_with_the_published_jwks() -> None:
    ks = key_set()
    token = tokens.sign(claims(), ks.active(NOW), ks.jwks())
    jwk_set = jwt.PyJWKSet.from_dict(ks.jwks())
    kid = jwt.get_unverified_header(token)["kid"]
    decoded = jwt.decode(
        token,
        jwk_set[kid],
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert decoded["sub"] == SPIFFE


def test_jti_is_fresh_random_and_128_bits() -> None:
    jtis = {claims()["jti"] for _ in range(2000)}
    assert len(jtis) == 2000
    for jti in list(jtis)[:50]:
        assert len(keys.b64url_decode(jti)) == 16
    assert claims(jti="fixed-for-test")["jti"] == "fixed-for-test"


def test_exp_is_clamped_to_not_after() -> None:
    assert claims(ttl=300, not_after=1_700_000_120.9)["exp"] == 1_700_000_120
    assert claims(ttl=300, not_after=None)["exp"] == 1_700_000_300
    with pytest.raises(ValueError, match="expired"):
        claims(ttl=300, not_after=NOW - 1)


def test_scope_triples_are_deduplicated_in_order_and_pod_is_optional() -> None:
    built = claims(
        scopes=[
            {"tool": "github", "actions": ["read", "read"], "resources": ["repo:a/*"]},
            {"tool": "github", "actions": ["read"], "resources": ["repo:a/*"]},
        ],
        pod=None,
        audiences=["a", "a"],
    )
    assert built["scope"] == "github:read:repo:a/*"
    assert built["aud"] == ["a"]
    assert "pod" not in built


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"scopes": [{"tool": "gh", "actions": "read", "resources": ["r"]}]}, "actions"),
        ({"scopes": [{"tool": "gh", "actions": ["read"], "resources": ["a b"]}]}, "whitespace"),
        ({"scopes": [{"tool": "g:h", "actions": ["read"], "resources": ["r"]}]}, "':'"),
        ({"scopes": [{"tool": "gh", "actions": ["re:ad"], "resources": ["r"]}]}, "':'"),
        ({"scopes": [{"tool": "gh", "actions": [], "resources": ["r"]}]}, "empty"),
        ({"scopes": []}, "scopes"),
        ({"audiences": []}, "audiences"),
        ({"audiences": "https://x"}, "audiences"),
        ({"data_class": "secret"}, "data_class"),
        ({"intent": "x" * 257}, "intent"),
        ({"intent": ""}, "intent"),
        ({"spiffe_id": "research-agent"}, "SPIFFE"),
        ({"task": {"namespace": "a", "name": "b"}}, "uid"),
        ({"pod": {"name": "p"}}, "pod.uid"),
        ({"ttl": 0}, "ttl"),
        ({"issuer": ""}, "issuer"),
        ({"act": {"sub": "not-spiffe"}}, "act.sub"),
        ({"act": {"sub": SPIFFE, "evil": 1}}, "unsupported"),
    ],
)
def test_build_claims_refuses_inputs_that_would_make_a_bad_token(
    override: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        claims(**override)


def test_delegated_tokens_carry_the_actor_chain() -> None:
    ks = key_set()
    key = ks.active(NOW)
    parent_task = {"namespace": "agents", "name": "parent", "uid": "p-uid"}
    parent_sub = "spiffe://cluster.local/ns/agents/sa/orchestrator"
    parent = claims(spiffe_id=parent_sub, task=parent_task)
    assert tokens.delegation_depth(parent) == 0

    child_task = {"namespace": "agents", "name": "child", "uid": "c-uid"}
    child = claims(task=child_task, act=tokens.actor(spiffe_id=parent_sub, task=parent_task))
    child_token = tokens.sign(child, key, ks.jwks())
    child_got = tokens.verify(child_token, ks.jwks(), now=NOW, audience=AUDIENCE)
    assert child_got["act"] == {"sub": parent_sub, "taskwarden.dev/task": parent_task}
    assert tokens.delegation_depth(child_got) == 1

    grandchild_sub = "spiffe://cluster.local/ns/agents/sa/helper"
    grandchild = claims(
        spiffe_id=grandchild_sub,
        task={"namespace": "agents", "name": "grandchild", "uid": "g-uid"},
        act=tokens.actor_from_claims(child_got),
    )
    got = tokens.verify(tokens.sign(grandchild, key, ks.jwks()), ks.jwks(), now=NOW)
    assert got["sub"] == grandchild_sub
    assert got["act"] == {
        "sub": SPIFFE,
        "taskwarden.dev/task": child_task,
        "act": {"sub": parent_sub, "taskwarden.dev/task": parent_task},
    }
    assert tokens.delegation_depth(got) == 2


def test_actor_chains_have_a_depth_limit() -> None:
    act: dict[str, Any] = {"sub": SPIFFE}
    for _ in range(tokens.MAX_ACT_DEPTH):
        act = {"sub": SPIFFE, "act": act}
    with pytest.raises(ValueError, match="deeper"):
        claims(act=act)


def test_a_token_from_a_retired_key_verifies_while_the_key_is_published() -> None:
    period, delay, retain = 1000.0, 100.0, 600.0
    ks, _ = keys.KeySet().rotate(NOW, rotation_period=period, publish_delay=delay, retain=retain)
    old = ks.active(NOW, delay)
    ks, _ = ks.rotate(NOW + period - delay, rotation_period=period, publish_delay=delay,
                      retain=retain)  # fmt: skip
    signed_at = NOW + period - 1  # the last second the old key signs
    ks, _ = ks.rotate(signed_at, rotation_period=period, publish_delay=delay, retain=retain)
    assert ks.active(signed_at, delay) == old and len(ks.keys) == 2
    token = tokens.sign(claims(now=signed_at, ttl=retain, not_after=None), old, ks.jwks())

    later = signed_at + retain - 1  # still valid; the old key retired at NOW + period
    ks, _ = ks.rotate(later, rotation_period=period, publish_delay=delay, retain=retain)
    assert ks.active(later, delay) != old
    assert tokens.verify(token, ks.jwks(), now=later)["jti"]

    ks, _ = ks.rotate(NOW + period + retain + 1, rotation_period=period, publish_delay=delay,
                      retain=retain)  # fmt: skip
    assert ks.get(old.kid) is None


def test_sign_refuses_a_key_that_is_not_published() -> None:
    ks = key_set()
    unpublished = keys.generate_key(NOW)
    with pytest.raises(tokens.TokenError) as excinfo:
        tokens.sign(claims(), unpublished, ks.jwks())
    assert excinfo.value.reason == tokens.Reason.UNKNOWN_KEY
    assert "eyJ" not in str(excinfo.value)  # no token in the message


def test_sign_refuses_incomplete_or_dead_claims() -> None:
    ks = key_set()
    key = ks.active(NOW)
    incomplete = claims()
    del incomplete["intent"]
    with pytest.raises(tokens.TokenError) as excinfo:
        tokens.sign(incomplete, key, ks.jwks())
    assert excinfo.value.reason == "MissingClaim"

    dead = {**claims(), "exp": int(NOW) - 1}
    with pytest.raises(tokens.TokenError) as excinfo:
        tokens.sign(dead, key, ks.jwks())
    assert excinfo.value.reason == "Expired"

    with pytest.raises(tokens.TokenError) as excinfo:
        tokens.sign({**claims(), "iat": "now"}, key, ks.jwks())
    assert excinfo.value.reason == "MissingClaim"

    with pytest.raises(tokens.TokenError) as excinfo:
        tokens.sign({**claims(), "extra": object()}, key, ks.jwks())
    assert excinfo.value.reason == "Malformed"


def test_describe_claims_is_a_safe_summary() -> None:
    ks = key_set()
    key = ks.active(NOW)
    built = claims()
    token = tokens.sign(built, key, ks.jwks())
    summary = tokens.describe_claims(built, kid=key.kid)
    assert summary == {
        "jti": built["jti"],
        "kid": key.kid,
        "sub": SPIFFE,
        "aud": built["aud"],
        "exp": built["exp"],
        "scope": built["scope"],
        "task": "agents/triage-4711",
    }
    text = json.dumps(summary)
    assert token not in text
    assert token.split(".")[2] not in text
    assert "kid" not in tokens.describe_claims(built)


def test_a_revocation_list_is_accepted_as_the_revoked_container() -> None:
    ks = key_set()
    built = claims()
    token = tokens.sign(built, ks.active(NOW), ks.jwks())
    revoked = revocation.RevocationList()
    assert tokens.verify(token, ks.jwks(), now=NOW, revoked=revoked)
    revoked.add(built["jti"], built["exp"])
    with pytest.raises(tokens.TokenError) as excinfo:
        tokens.verify(token, ks.jwks(), now=NOW, revoked=revoked)
    assert excinfo.value.reason == "Revoked"
