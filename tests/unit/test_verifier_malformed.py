"""Issue 12 item 7: whatever a token's header and claims hold, Verifier.verify raises only
TokenError. Before: a kid that is a list or an object raised TypeError, a huge exp
OverflowError, odd scopes or pod claims KeyError/AttributeError in the caller's tool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskwarden.verifier import Claims, TokenError, Verifier
from tests.unit import _verifier_support as s

CLAIM_NAMES = [
    "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "taskwarden.dev/task",
    "scope", "scopes", "data_class", "intent", "pod", "act",
]  # fmt: skip
HEADER_NAMES = ["alg", "kid", "typ", "crit", "b64", "jku", "x5u", "cty"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63, 1e308])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def v(tmp_path_factory: pytest.TempPathFactory) -> Verifier:
    d: Path = tmp_path_factory.mktemp("verifier")
    return Verifier(
        jwks=s.write(d / "jwks.json", s.jwks()),
        revocations=s.write(d / "r.json", s.revocations("revoked-jti")),
        audience=s.AUDIENCE,
        clock=lambda: s.NOW + 1,
        cache_ttl=3600,
        max_stale=3600,
    )


def _header(**override: Any) -> dict[str, Any]:
    return {"alg": "ES256", "kid": s.signing_key().kid, "typ": "JWT", **override}


@pytest.mark.parametrize("kid", [["a", "b"], {"kid": "x"}, [], {}, 7, 1.5, True, None])
def test_a_kid_that_is_not_a_string_is_a_token_error(v: Verifier, kid: Any) -> None:
    with pytest.raises(TokenError) as err:
        v.verify(s.forge(_header(kid=kid), s.claims()))
    assert err.value.reason == "UnknownKey"


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("huge", [10**400, -(10**400), 10**309], ids=["1e400", "-1e400", "1e309"])
def test_a_huge_time_claim_is_a_token_error(v: Verifier, name: str, huge: int) -> None:
    with pytest.raises(TokenError) as err:
        v.verify(s.forge(_header(), s.claims(**{name: huge})))
    assert err.value.reason == "Malformed"


@pytest.mark.parametrize(
    "override",
    [
        {"scopes": ["github:read:*"]},
        {"scopes": [{"tool": "github"}]},
        {"scopes": [{"tool": "github", "actions": "read", "resources": ["*"]}]},
        {"scopes": [{"tool": 1, "actions": ["read"], "resources": ["*"]}]},
        {"pod": "agent-pod"},
        {"pod": {"name": ["agent-pod"], "uid": "u"}},
        {"act": "spiffe://cluster.local/ns/agents/sa/parent"},
        {"act": {"sub": 1}},
    ],
)
def test_a_signed_claim_of_the_wrong_shape_is_malformed(
    v: Verifier, override: dict[str, Any]
) -> None:
    with pytest.raises(TokenError) as err:
        v.verify(s.forge(_header(), s.claims(**override)))
    assert err.value.reason == "Malformed"


def test_the_reference_token_is_accepted(v: Verifier) -> None:
    claims = v.verify(s.token())
    assert claims.allows("github", "read", "repo:acme/widgets")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header_set=st.dictionaries(st.sampled_from(HEADER_NAMES) | st.text(max_size=4), json_values),
    header_drop=st.sets(st.sampled_from(HEADER_NAMES)),
    claims_set=st.dictionaries(st.sampled_from(CLAIM_NAMES) | st.text(max_size=6), json_values),
    claims_drop=st.sets(st.sampled_from(CLAIM_NAMES)),
    whole_payload=st.none() | json_values,
)
def test_arbitrary_header_and_claims_raise_only_token_error(
    v: Verifier,
    header_set: dict[str, Any],
    header_drop: set[str],
    claims_set: dict[str, Any],
    claims_drop: set[str],
    whole_payload: Any,
) -> None:
    header = {k: val for k, val in _header().items() if k not in header_drop} | header_set
    payload: Any = {k: val for k, val in s.claims().items() if k not in claims_drop} | claims_set
    if whole_payload is not None:
        payload = whole_payload
    try:
        result = v.verify(s.forge(header, payload))
    except TokenError:
        return
    assert isinstance(result, Claims)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_\-]{0,40}(\.[A-Za-z0-9_\-]{0,40}){0,4}"))
def test_arbitrary_strings_raise_only_token_error(v: Verifier, text: str) -> None:
    with pytest.raises(TokenError):
        v.verify(text)


@pytest.mark.parametrize("thing", [None, 7, b"a.b.c", ["a", "b", "c"], {"token": "x"}])
def test_a_token_that_is_not_a_string_is_a_token_error(v: Verifier, thing: Any) -> None:
    with pytest.raises(TokenError):
        v.verify(thing)
