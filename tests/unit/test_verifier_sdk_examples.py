"""Issue 14, verifier SDK: the FastAPI dependency and the Flask decorator in sdk/python/examples,
run for real (FastAPI's TestClient, Flask's test client) against a loopback server publishing the
JWKS and the revocation list. A revoked token is 401, an unavailable or stale list is 503."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from taskwarden_verifier import Verifier
from taskwarden_verifier.aio import AsyncVerifier
from tests.unit import _verifier_support as s

EXAMPLES = Path(__file__).resolve().parents[2] / "sdk" / "python" / "examples"
REVOKED = "jti-revoked"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


Get = Callable[[str, dict[str, str]], tuple[int, dict[str, str]]]


@contextmanager
def fastapi_client(jwks: str, revocations: str) -> Iterator[Get]:
    v = AsyncVerifier(jwks=jwks, revocations=revocations, audience=s.AUDIENCE, clock=lambda: s.NOW)
    with TestClient(_example("fastapi_tool").make_app(v)) as client:

        def get(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
            r = client.get(path, headers=headers)
            return r.status_code, {k.lower(): v for k, v in r.headers.items()}

        yield get


@contextmanager
def flask_client(jwks: str, revocations: str) -> Iterator[Get]:
    v = Verifier(jwks=jwks, revocations=revocations, audience=s.AUDIENCE, clock=lambda: s.NOW)
    client = _example("flask_tool").make_app(v).test_client()

    def get(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        r = client.get(path, headers=headers)
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}

    yield get


CLIENTS = {"fastapi": fastapi_client, "flask": flask_client}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("framework", CLIENTS)
def test_a_valid_token_passes_and_a_revoked_one_is_401(framework: str) -> None:
    with s.loopback() as server:
        jwks = server.serve_json("/jwks", s.jwks())
        revs = server.serve_json("/revocations", s.revocations(REVOKED))
        with CLIENTS[framework](jwks, revs) as get:
            status, _ = get("/repos/acme/widgets/issues", _bearer(s.token()))
            assert status == 200
            status, headers = get("/repos/acme/widgets/issues", _bearer(s.token(jti=REVOKED)))
            assert status == 401
            assert headers["www-authenticate"].startswith("Bearer")
            assert get("/repos/acme/widgets/issues", {})[0] == 401
            assert get("/repos/acme/widgets/issues", _bearer("not-a-token"))[0] == 401
            assert get("/repos/other/widgets/issues", _bearer(s.token()))[0] == 403


def _route(server: s.Loopback, path: str, status: int, headers: dict[str, str]) -> str:
    server.routes[path] = (status, headers, b"")
    return server.url(path)


UNAVAILABLE: dict[str, Callable[[s.Loopback], str]] = {
    "list answers 500": lambda server: _route(server, "/missing", 500, {}),
    "list is not the list": lambda server: server.serve_json("/revocations", {}),
    "list is stale": lambda server: server.serve_json(
        "/revocations", s.revocations(updated=s.NOW - 3600)
    ),
    "list redirects": lambda server: _route(
        server, "/moved", 302, {"Location": server.url("/elsewhere")}
    ),
}


@pytest.mark.parametrize("case", UNAVAILABLE)
@pytest.mark.parametrize("framework", CLIENTS)
def test_an_unavailable_revocation_list_is_503(framework: str, case: str) -> None:
    with s.loopback() as server:
        jwks = server.serve_json("/jwks", s.jwks())
        server.serve_json("/elsewhere", s.revocations())
        with CLIENTS[framework](jwks, UNAVAILABLE[case](server)) as get:
            status, headers = get("/repos/acme/widgets/issues", _bearer(s.token()))
            assert status == 503
            assert headers["retry-after"] == "5"
