"""Issue 12 item 7: made-up kids. Each unknown kid used to force a JWKS fetch (500 kids, 500
fetches) and was remembered forever. Now a forced refetch happens at most once per
refetch_cooldown, and nothing is remembered per kid."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from taskwarden.credentials import keys
from taskwarden.verifier import TokenError, Verifier
from tests.unit import _verifier_support as s


def _forged_kid(kid: str) -> str:
    return s.forge({"alg": "ES256", "kid": kid, "typ": "JWT"}, s.claims())


def test_five_hundred_made_up_kids_cost_one_refetch(tmp_path: Path) -> None:
    now = [s.NOW]
    with s.loopback() as server:
        url = server.serve_json("/jwks", s.jwks())
        v = Verifier(
            jwks=url,
            revocations=s.write(tmp_path / "r.json", s.revocations()),
            audience=s.AUDIENCE,
            refetch_cooldown=30,
            clock=lambda: now[0],
        )
        assert v.verify(s.token()).jti == "jti-reference"
        assert server.count("/jwks") == 1
        for i in range(500):
            with pytest.raises(TokenError) as err:
                v.verify(_forged_kid(f"made-up-{i}"))
            assert err.value.reason == "UnknownKey"
        assert server.count("/jwks") == 2  # the first unknown kid; the rest inside the cooldown
        assert not any(isinstance(value, set | dict) for value in vars(v).values())
        now[0] += 30
        with pytest.raises(TokenError):
            v.verify(_forged_kid("made-up-after-cooldown"))
        assert server.count("/jwks") == 3


def test_concurrent_unknown_kids_share_one_refetch(tmp_path: Path) -> None:
    with s.loopback() as server:
        v = Verifier(
            jwks=server.serve_json("/jwks", s.jwks()),
            revocations=s.write(tmp_path / "r.json", s.revocations()),
            audience=s.AUDIENCE,
            clock=lambda: s.NOW,
        )
        v.verify(s.token())
        errors: list[BaseException] = []

        def attack(i: int) -> None:
            try:
                v.verify(_forged_kid(f"thread-{i}"))
            except TokenError:
                pass
            except BaseException as e:  # anything else fails the test
                errors.append(e)

        threads = [threading.Thread(target=attack, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert server.count("/jwks") == 2


def test_a_rotated_key_is_still_picked_up_by_one_refetch(tmp_path: Path) -> None:
    with s.loopback() as server:
        url = server.serve_json("/jwks", s.jwks())
        v = Verifier(
            jwks=url,
            revocations=s.write(tmp_path / "r.json", s.revocations()),
            audience=s.AUDIENCE,
            clock=lambda: s.NOW,
        )
        v.verify(s.token())
        rotated = keys.generate_key(s.NOW)
        server.serve_json("/jwks", s.jwks(rotated))
        assert v.verify(s.token(key=rotated)).jti == "jti-reference"
        assert server.count("/jwks") == 2


def test_a_known_kid_with_a_bad_signature_forces_no_refetch(tmp_path: Path) -> None:
    with s.loopback() as server:
        v = Verifier(
            jwks=server.serve_json("/jwks", s.jwks()),
            revocations=s.write(tmp_path / "r.json", s.revocations()),
            audience=s.AUDIENCE,
            clock=lambda: s.NOW,
        )
        other = keys.generate_key(s.NOW)
        forged = s.forge({"alg": "ES256", "kid": s.signing_key().kid}, s.claims(), other)
        for kid_less in (forged, s.forge({"alg": "ES256"}, s.claims())):
            with pytest.raises(TokenError):
                v.verify(kid_less)
        assert server.count("/jwks") == 1
