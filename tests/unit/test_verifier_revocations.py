"""Issue 12 item 7: the revocation list. A document the verifier does not recognise must never
read as "nothing revoked", and the list's age is its own updatedAt, so that a file (or a copy
nobody refreshes any more) goes stale and every token is then refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from taskwarden import verifier
from taskwarden.credentials.revocation import RevocationList
from taskwarden.verifier import SourceUnavailable, TokenError, Verifier
from tests.unit import _verifier_support as s

JTI = "jti-reference"


def _v(rev: Path, clock: list[float] | None = None, **kw: Any) -> Verifier:
    now = clock or [s.NOW]
    return Verifier(
        jwks=s.write(rev.parent / "jwks.json", s.jwks()),
        revocations=rev,
        audience=s.AUDIENCE,
        clock=lambda: now[0],
        **kw,
    )


def _configmap(doc: dict[str, Any]) -> dict[str, Any]:
    """ConfigMap taskwarden-revocations as `kubectl get configmap -o json` prints it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "taskwarden-revocations",
            "namespace": "taskwarden-system",
            "resourceVersion": "4711",
        },
        "data": {"revocations.json": json.dumps(doc)},
    }


UNRECOGNISED: dict[str, Any] = {
    "empty object": {},
    "misspelt revoked": {"revokd": [{"jti": JTI, "exp": 1}], "updatedAt": "2027-01-15T08:00:00Z"},
    "misspelt updatedAt": {"revoked": [{"jti": JTI, "exp": 1}], "updated_at": "2027-01-15T08:00Z"},
    "no updatedAt": {"revoked": [{"jti": JTI, "exp": 1}]},
    "unknown extra member": {**s.revocations(JTI), "revokedAll": True},
    "revoked is not a list": {"revoked": {JTI: 1}, "updatedAt": s.revocations()["updatedAt"]},
    "entry with misspelt jti": {**s.revocations(), "revoked": [{"jit": JTI, "exp": 1}]},
    "entry that is a string": {**s.revocations(), "revoked": [JTI]},
    "updatedAt not a timestamp": {**s.revocations(JTI), "updatedAt": "yesterday"},
    "updatedAt a number": {**s.revocations(JTI), "updatedAt": s.NOW},
    "a list": [{"jti": JTI, "exp": 1}],
    "null": None,
    "a ConfigMap without the key": {**_configmap({}), "data": {"revocation.json": "{}"}},
    "a ConfigMap of the wrong kind": {**_configmap(s.revocations(JTI)), "kind": "Secret"},
    "a ConfigMap holding {}": _configmap({}),
    "data with an extra key": {"revocations.json": json.dumps(s.revocations()), "x": "{}"},
    "data holding {}": {"revocations.json": "{}"},
    "the JWKS instead": s.jwks(),
}


@pytest.mark.parametrize("doc", UNRECOGNISED.values(), ids=UNRECOGNISED.keys())
def test_an_unrecognised_document_is_unavailable_not_empty(tmp_path: Path, doc: Any) -> None:
    v = _v(s.write(tmp_path / "revocations.json", doc))
    with pytest.raises(SourceUnavailable) as err:
        v.verify(s.token())
    assert err.value.source == "revocations" and "UNAVAILABLE" in err.value.message
    with pytest.raises(ValueError):
        verifier.parse_revocations(json.dumps(doc).encode())


@pytest.mark.parametrize("text", ["", "not json", '{"revoked": [], "updatedAt": NaN}', "[" * 5000])
def test_garbage_bytes_are_unavailable(tmp_path: Path, text: str) -> None:
    with pytest.raises(SourceUnavailable):
        _v(s.write(tmp_path / "revocations.json", text)).verify(s.token())


def _published(jtis: tuple[str, ...]) -> dict[str, Any]:
    """What the operator itself writes: RevocationList.to_configmap_data, parsed once."""
    rl = RevocationList()
    for jti in jtis:
        rl.add(jti, s.NOW + 300)
    return json.loads(rl.to_configmap_data(s.NOW)["revocations.json"])


FORMATS = {
    "the /revocations body or mounted file": lambda doc: doc,
    "the ConfigMap's data": lambda doc: {"revocations.json": json.dumps(doc)},
    "the whole ConfigMap (kubectl get -o json)": _configmap,
}


@pytest.mark.parametrize("shape", FORMATS.values(), ids=FORMATS.keys())
def test_the_formats_the_operator_publishes_are_read(tmp_path: Path, shape: Any) -> None:
    rev = tmp_path / "revocations.json"
    v = _v(s.write(rev, shape(_published(()))), cache_ttl=0)
    assert v.verify(s.token()).jti == JTI
    s.write(rev, shape(_published(("other", JTI))))
    with pytest.raises(TokenError) as err:
        v.verify(s.token())
    assert err.value.reason == "Revoked" and not isinstance(err.value, SourceUnavailable)


def test_a_file_goes_stale_by_its_updated_at_although_it_is_reread(tmp_path: Path) -> None:
    """Before: the age was the fetch time, so a file re-read every minute never went stale."""
    now = [s.NOW]
    v = _v(s.write(tmp_path / "r.json", s.revocations()), now, cache_ttl=0, max_stale=300)
    assert v.verify(s.token(exp=int(s.NOW) + 3600)).jti == JTI
    now[0] += 301  # the file is read again on every call, but nobody rewrote it
    with pytest.raises(SourceUnavailable) as err:
        v.verify(s.token(exp=int(s.NOW) + 3600))
    assert "updatedAt" in err.value.message and "failing closed" in err.value.message


def test_a_freshly_fetched_but_old_list_is_stale(tmp_path: Path) -> None:
    old = s.write(tmp_path / "r.json", s.revocations(updated=s.NOW - 301))
    with pytest.raises(SourceUnavailable):
        _v(old, max_stale=300).verify(s.token())


def test_a_list_dated_far_in_the_future_is_not_trusted_forever(tmp_path: Path) -> None:
    future = s.write(tmp_path / "r.json", s.revocations(updated=s.NOW + 86400 * 365))
    with pytest.raises(SourceUnavailable):
        _v(future, max_stale=300).verify(s.token())


def test_a_bad_refresh_keeps_the_last_good_copy_which_still_ages(tmp_path: Path) -> None:
    now = [s.NOW]
    rev = s.write(tmp_path / "r.json", s.revocations(JTI))
    v = _v(rev, now, cache_ttl=10, max_stale=300)
    with pytest.raises(TokenError) as err:
        v.verify(s.token())
    assert err.value.reason == "Revoked"
    s.write(rev, {})  # an unrecognised refresh must not clear the revocation
    now[0] += 20
    with pytest.raises(TokenError) as err:
        v.verify(s.token())
    assert err.value.reason == "Revoked" and not isinstance(err.value, SourceUnavailable)
    now[0] += 300
    with pytest.raises(SourceUnavailable):
        v.verify(s.token())


def test_an_unreadable_list_is_unavailable_and_says_so(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable) as err:
        _v(tmp_path / "missing.json").verify(s.token())
    assert "revocation list UNAVAILABLE" in err.value.message
    assert "is revoked" not in err.value.message


def test_a_revocation_list_served_over_loopback_http(tmp_path: Path) -> None:
    with s.loopback() as server:
        v = Verifier(
            jwks=server.serve_json("/.well-known/jwks.json", s.jwks()),
            revocations=server.serve_json("/revocations", s.revocations(JTI)),
            audience=s.AUDIENCE,
            clock=lambda: s.NOW,
        )
        with pytest.raises(TokenError) as err:
            v.verify(s.token())
        assert err.value.reason == "Revoked"
        server.routes["/revocations"] = (403, {}, b"forbidden")
        fresh = Verifier(
            jwks=server.url("/.well-known/jwks.json"),
            revocations=server.url("/revocations"),
            audience=s.AUDIENCE,
            clock=lambda: s.NOW,
        )
        with pytest.raises(SourceUnavailable):
            fresh.verify(s.token())
