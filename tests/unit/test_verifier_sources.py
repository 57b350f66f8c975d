"""Issue 12 item 7: where the verifier fetches keys and revocations from. A man in the middle
on plain http:// could swap the keys or hide revocations, so http:// is loopback only, never
proxied, and no redirect is followed (https:// could otherwise be downgraded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskwarden import verifier
from taskwarden.verifier import SourceUnavailable, Verifier
from tests.unit import _verifier_support as s

REFUSED = [
    "http://taskwarden.taskwarden-system.svc/.well-known/jwks.json",
    "http://10.0.0.7:9443/.well-known/jwks.json",
    "http://0.0.0.0:9443/jwks.json",
    "http://localhost.attacker.example/jwks.json",
    "http://127.0.0.1.nip.io/jwks.json",
    "HTTP://evil.example/jwks.json",
    "ftp://127.0.0.1/jwks.json",
    "file:///etc/taskwarden/jwks.json",
]
ACCEPTED = [
    "https://taskwarden.taskwarden-system.svc/.well-known/jwks.json",
    "http://127.0.0.1:9443/.well-known/jwks.json",
    "http://127.8.9.10/jwks.json",
    "http://[::1]:9443/jwks.json",
    "http://localhost:9443/jwks.json",
    "/var/run/taskwarden/jwks.json",
]


@pytest.mark.parametrize("source", REFUSED)
def test_a_source_a_man_in_the_middle_could_answer_is_refused(source: str) -> None:
    with pytest.raises(ValueError):
        Verifier(jwks=source, audience=s.AUDIENCE)
    with pytest.raises(ValueError):
        Verifier(jwks="/jwks.json", revocations=source, audience=s.AUDIENCE)
    with pytest.raises(ValueError):
        verifier.read_source(source)  # what `taskwarden verify --jwks URL` uses


@pytest.mark.parametrize("source", ACCEPTED)
def test_https_loopback_http_and_files_are_accepted(source: str) -> None:
    Verifier(jwks=source, revocations=source, audience=s.AUDIENCE)


def test_a_redirect_is_not_followed(tmp_path: Path) -> None:
    """A redirect would let an https:// source hand us to plain http:// anywhere."""
    with s.loopback() as server:
        good = server.serve_json("/jwks-real", s.jwks())
        server.routes["/jwks"] = (302, {"Location": good}, b"")
        revs = s.write(tmp_path / "r.json", s.revocations())
        v = Verifier(
            jwks=server.url("/jwks"), revocations=revs, audience=s.AUDIENCE, clock=lambda: s.NOW
        )
        with pytest.raises(SourceUnavailable) as err:
            v.verify(s.token())
        assert err.value.source == "jwks" and "redirect" in err.value.message
        assert server.count("/jwks-real") == 0


def test_loopback_http_never_goes_through_a_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With http_proxy set, urllib would send a 'loopback' request over the network."""
    with s.loopback() as origin, s.loopback() as proxy:
        url = origin.serve_json("/jwks", s.jwks())
        proxy.routes[url] = (200, {}, b'{"keys": []}')  # what a hostile proxy would answer
        for name in ("http_proxy", "HTTP_PROXY"):
            monkeypatch.setenv(name, proxy.url(""))
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        revs = s.write(tmp_path / "r.json", s.revocations())
        v = Verifier(jwks=url, revocations=revs, audience=s.AUDIENCE, clock=lambda: s.NOW)
        assert v.verify(s.token()).jti == "jti-reference"
        assert proxy.hits == [] and origin.count("/jwks") == 1


def test_an_oversized_document_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "jwks.json"
    huge.write_bytes(b" " * (verifier.MAX_DOCUMENT_BYTES + 1) + b'{"keys": []}')
    with pytest.raises(ValueError):
        verifier.read_source(huge)
