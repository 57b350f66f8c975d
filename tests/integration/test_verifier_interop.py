"""Issue 14, verifier SDK interop, against the LIVE operator over HTTPS: stock verifiers accept a
task token with what the operator publishes, py-spiffe's JwtSvid.parse_and_validate with the
OIDC JWKS as the trust domain's JWT bundle, and pyjwt's PyJWKClient against
/.well-known/jwks.json, as does the SDK's AsyncVerifier. Neither stock library knows the
revocation list: after a revocation they still accept the token and only a Taskwarden verifier
(which reads /revocations) refuses it, which is what docs/token-format.md tells tool owners."""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from kubernetes import client
from spiffe import JwtBundle, JwtSvid, SpiffeId, TrustDomain

from taskwarden_verifier import TokenError
from taskwarden_verifier.aio import AsyncVerifier
from tests.integration import helpers as h

AUD = "https://api.github.com"


@pytest.fixture
def ca(api: client.ApiClient, operator_namespace: str, tmp_path: Path) -> Path:
    tls = client.CoreV1Api(api).read_namespaced_secret("taskwarden-webhook-tls", operator_namespace)
    path = tmp_path / "ca.crt"
    path.write_bytes(base64.b64decode(tls.data["ca.crt"]))
    return path


def _stock_verdicts(token: str, base: str, ca: Path) -> dict[str, str]:
    ctx = ssl.create_default_context(cafile=str(ca))
    # pyjwt: keys by kid from the JWKS URL, every standard check on (exp, aud, iss).
    key = jwt.PyJWKClient(
        f"{base}/.well-known/jwks.json", ssl_context=ctx
    ).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key, algorithms=["ES256", "EdDSA"], audience=AUD, issuer=base)
    # py-spiffe: the JWKS is the JWT bundle of the subject's trust domain.
    with urllib.request.urlopen(f"{base}/.well-known/jwks.json", context=ctx, timeout=10) as r:
        bundle_bytes = r.read()
    domain = SpiffeId(claims["sub"]).trust_domain
    bundle = JwtBundle.parse(TrustDomain(str(domain)), bundle_bytes)
    svid = JwtSvid.parse_and_validate(token, bundle, {AUD})
    return {"pyjwt": claims["jti"], "py-spiffe": str(svid.spiffe_id)}


def _taskwarden_verdict(token: str, base: str, ca: Path) -> str:
    async def run() -> str:
        async with AsyncVerifier(
            jwks=f"{base}/.well-known/jwks.json",
            revocations=f"{base}/revocations",
            audience=AUD,
            issuer=base,
            ca_file=str(ca),
        ) as v:
            try:
                return f"ok:{(await v.verify(token)).task}"
            except TokenError as e:
                return str(e.reason)

    return asyncio.run(run())


def test_stock_verifiers_accept_a_live_task_token(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: Callable[..., h.Task],
    ca: Path,
) -> None:
    task = active_task("interop")
    token = task.token()
    base = f"https://127.0.0.1:{operator.public_port}"
    sub = jwt.decode(token, options={"verify_signature": False})["sub"]
    assert sub.startswith("spiffe://")
    assert _stock_verdicts(token, base, ca) == {"pyjwt": task.jti, "py-spiffe": sub}
    assert _taskwarden_verdict(token, base, ca) == "ok:interop"

    # Revoke (delete the task): the stock libraries still accept, a Taskwarden verifier refuses.
    h.custom(api).delete_namespaced_custom_object(
        h.GROUP, h.VERSION, task.namespace, "agenttasks", task.name
    )
    h.wait_for(
        lambda: _taskwarden_verdict(token, base, ca) == "Revoked",
        timeout=30,
        interval=0.5,
        what="the live /revocations lists the token",
    )
    assert _stock_verdicts(token, base, ca) == {"pyjwt": task.jti, "py-spiffe": sub}
