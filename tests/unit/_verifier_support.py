"""Shared material for the verifier attack tests: a key, tokens, documents, a loopback server."""

from __future__ import annotations

import base64
import functools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from taskwarden import timeutil
from taskwarden.credentials import keys, tokens

NOW = 1_800_000_000.0
ISSUER = "https://taskwarden.example"
AUDIENCE = "https://api.github.com"


def b64json(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@functools.cache
def signing_key() -> keys.SigningKey:
    return keys.generate_key(NOW - 100)


def jwks(*extra: keys.SigningKey) -> dict[str, Any]:
    return {"keys": [k.public_jwk() for k in (signing_key(), *extra)]}


def claims(**override: Any) -> dict[str, Any]:
    built = tokens.build_claims(
        issuer=ISSUER,
        spiffe_id="spiffe://cluster.local/ns/agents/sa/research-agent",
        audiences=[AUDIENCE],
        now=NOW,
        ttl=300,
        not_after=None,
        task={"namespace": "agents", "name": "triage-4711", "uid": "uid-1"},
        scopes=[{"tool": "github", "actions": ["read"], "resources": ["repo:acme/*"]}],
        data_class="internal",
        intent="triage issue 4711",
        pod={"name": "agent-pod", "uid": "pod-uid"},
        jti="jti-reference",
    )
    built.update(override)
    return built


def forge(header: Any, payload: Any, key: keys.SigningKey | None = None) -> str:
    """A compact JWS of exactly this header and payload, with a real ES256 signature."""
    key = key or signing_key()
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    sig = base64.urlsafe_b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return f"{signing_input}.{sig.rstrip(b'=').decode()}"


def token(key: keys.SigningKey | None = None, **override: Any) -> str:
    key = key or signing_key()
    return forge({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims(**override), key)


def revocations(*jtis: str, updated: float = NOW) -> dict[str, Any]:
    """The document exactly as the operator publishes it (RevocationList.to_configmap_data)."""
    return {
        "revoked": [{"jti": j, "exp": int(NOW) + 300} for j in jtis],
        "updatedAt": timeutil.rfc3339(updated),
    }


def write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@dataclass
class Loopback:
    """An HTTP server on 127.0.0.1 serving ``routes`` (path -> (status, headers, body))."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve_json(self, path: str, doc: Any) -> str:
        self.routes[path] = (200, {"Content-Type": "application/json"}, json.dumps(doc).encode())
        return self.url(path)

    def count(self, path: str) -> int:
        return sum(1 for hit in self.hits if hit == path)


@contextmanager
def loopback() -> Iterator[Loopback]:
    state = Loopback()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            status, headers, body = state.routes.get(self.path, (404, {}, b"not found"))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
