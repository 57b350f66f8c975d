"""Issue 14, verifier SDK: AsyncVerifier (asyncio, aiohttp) against a real loopback server. It
caches with a TTL, refetches for an unknown kid at most once per cooldown (the Rules it shares
with Verifier), and fails closed exactly like the sync Verifier: the same scenarios give the
same verdict, reason and exception class."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from taskwarden.credentials import keys
from taskwarden_verifier import SourceUnavailable, TokenError, Verifier, sources
from taskwarden_verifier.aio import AsyncVerifier
from tests.unit import _verifier_support as s

REVOKED = "jti-revoked"


def _forged_kid(kid: str) -> str:
    return s.forge({"alg": "ES256", "kid": kid, "typ": "JWT"}, s.claims())


def _verdict(call: Callable[[], Any]) -> tuple[str, ...]:
    try:
        claims = call()
    except TokenError as e:
        return (type(e).__name__, str(e.reason))
    return ("ok", claims.jti)


def _route(server: s.Loopback, path: str, status: int, body: bytes = b"", **headers: str) -> str:
    server.routes[path] = (status, headers, body)
    return server.url(path)


def _good(sv: s.Loopback, revoked: tuple[str, ...] = ()) -> tuple[str, str]:
    return sv.serve_json("/j", s.jwks()), sv.serve_json("/r", s.revocations(*revoked))


def _alg_none() -> str:
    return f"{s.b64json({'alg': 'none', 'kid': s.signing_key().kid})}.{s.b64json(s.claims())}."


# name -> (set up the server: returns (jwks url, revocations url), the token)
SCENARIOS: dict[str, tuple[Callable[[s.Loopback], tuple[str, str]], Callable[[], str]]] = {
    "valid": (
        _good,
        s.token,
    ),
    "revoked": (
        lambda sv: _good(sv, (REVOKED,)),
        lambda: s.token(jti=REVOKED),
    ),
    "wrong audience": (
        _good,
        lambda: s.token(aud=["https://other"]),
    ),
    "alg none": (
        _good,
        _alg_none,
    ),
    "kid is a list": (
        _good,
        lambda: s.forge({"alg": "ES256", "kid": ["a"]}, s.claims()),
    ),
    "unknown kid": (
        _good,
        lambda: _forged_kid("made-up"),
    ),
    "list is {}": (lambda sv: (sv.serve_json("/j", s.jwks()), sv.serve_json("/r", {})), s.token),
    "list is stale": (
        lambda sv: (
            sv.serve_json("/j", s.jwks()),
            sv.serve_json("/r", s.revocations(updated=s.NOW - 3600)),
        ),
        s.token,
    ),
    "list from the future": (
        lambda sv: (
            sv.serve_json("/j", s.jwks()),
            sv.serve_json("/r", s.revocations(updated=s.NOW + 3600)),
        ),
        s.token,
    ),
    "list answers 404": (lambda sv: (sv.serve_json("/j", s.jwks()), sv.url("/none")), s.token),
    "list redirects": (
        lambda sv: (
            sv.serve_json("/j", s.jwks()),
            _route(sv, "/moved", 302, Location=sv.serve_json("/r", s.revocations())),
        ),
        s.token,
    ),
    "list too large": (
        lambda sv: (
            sv.serve_json("/j", s.jwks()),
            _route(sv, "/big", 200, b" " * (sources.MAX_DOCUMENT_BYTES + 1)),
        ),
        s.token,
    ),
    "jwks is not a JWKS": (
        lambda sv: (sv.serve_json("/j", {"kid": "x"}), sv.serve_json("/r", s.revocations())),
        s.token,
    ),
    "jwks answers 500": (
        lambda sv: (_route(sv, "/j", 500), sv.serve_json("/r", s.revocations())),
        s.token,
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_async_and_sync_verifiers_give_the_same_verdict(scenario: str) -> None:
    setup, make_token = SCENARIOS[scenario]
    with s.loopback() as server:
        jwks, revocations = setup(server)
        token = make_token()
        settings: dict[str, Any] = {
            "jwks": jwks,
            "revocations": revocations,
            "audience": s.AUDIENCE,
            "clock": lambda: s.NOW,
        }
        sync = _verdict(lambda: Verifier(**settings).verify(token))

        async def run() -> tuple[str, ...]:
            async with AsyncVerifier(**settings) as v:
                try:
                    claims = await v.verify(token)
                except TokenError as e:
                    return (type(e).__name__, str(e.reason))
                return ("ok", claims.jti)

        assert asyncio.run(run()) == sync
    expected_ok = scenario == "valid"
    assert (sync[0] == "ok") == expected_ok
    if scenario.startswith(("list", "jwks")):
        assert sync[0] == SourceUnavailable.__name__


def test_the_jwks_is_cached_for_the_ttl_and_a_bad_refresh_keeps_the_last_good_copy(
    tmp_path: Path,
) -> None:
    now = [s.NOW]
    with s.loopback() as server:
        jwks = server.serve_json("/jwks", s.jwks())
        revs = server.serve_json("/revocations", s.revocations())

        async def run() -> None:
            async with AsyncVerifier(
                jwks=jwks, revocations=revs, audience=s.AUDIENCE, cache_ttl=60, clock=lambda: now[0]
            ) as v:
                for _ in range(5):
                    assert (await v.verify(s.token())).jti == "jti-reference"
                assert server.count("/jwks") == 1 and server.count("/revocations") == 1
                now[0] += 61
                server.routes["/jwks"] = (500, {}, b"down")
                assert (await v.verify(s.token())).jti == "jti-reference"  # last good copy
                assert server.count("/jwks") == 2
                # The list keeps ageing by its updatedAt while its refreshes fail: 503, not 200.
                server.routes["/revocations"] = (500, {}, b"down")
                now[0] += 300
                with pytest.raises(SourceUnavailable):
                    await v.verify(s.token())

        asyncio.run(run())


def test_made_up_kids_cost_one_refetch_per_cooldown_even_when_concurrent() -> None:
    now = [s.NOW]
    with s.loopback() as server:
        jwks = server.serve_json("/jwks", s.jwks())
        revs = server.serve_json("/revocations", s.revocations())

        async def run() -> None:
            async with AsyncVerifier(
                jwks=jwks, revocations=revs, audience=s.AUDIENCE, clock=lambda: now[0]
            ) as v:
                await v.verify(s.token())
                results = await asyncio.gather(
                    *(v.verify(_forged_kid(f"made-up-{i}")) for i in range(200)),
                    return_exceptions=True,
                )
                assert all(isinstance(r, TokenError) and r.reason == "UnknownKey" for r in results)
                assert server.count("/jwks") == 2
                now[0] += 30
                with pytest.raises(TokenError):
                    await v.verify(_forged_kid("after-the-cooldown"))
                assert server.count("/jwks") == 3
                rotated = keys.generate_key(s.NOW)
                server.serve_json("/jwks", s.jwks(rotated))
                now[0] += 30
                assert (await v.verify(s.token(key=rotated))).jti == "jti-reference"
                assert server.count("/jwks") == 4

        asyncio.run(run())


def test_sources_a_man_in_the_middle_could_answer_are_refused() -> None:
    for source in ("http://example.com/jwks.json", "ftp://127.0.0.1/jwks.json"):
        with pytest.raises(ValueError):
            AsyncVerifier(jwks=source, audience=s.AUDIENCE)
    with pytest.raises(ValueError):
        AsyncVerifier(jwks="/jwks.json", audience=s.AUDIENCE, max_stale=float("nan"))
