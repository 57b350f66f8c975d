"""The CLI and the verifier library on real issued tokens: valid, revoked, expired."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from taskwarden import controlplane, timeutil
from taskwarden.credentials import tokens
from taskwarden.verifier import ScopeError, Verifier
from tests.integration import helpers as h

AUD = "https://api.github.com"


def cli(cluster: controlplane.ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    return subprocess.run(
        [sys.executable, "-m", "taskwarden", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def issued(active_task: Callable[..., h.Task]) -> str:
    return active_task("cli", actions=("read", "comment")).token()


def test_get_and_describe_show_phase_expiry_and_decision(
    cluster: controlplane.ControlPlane, namespace: str, issued: str
) -> None:
    out = cli(cluster, "get", "-n", namespace)
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "PHASE", "AGENT", "EXPIRES"]
    assert row.split()[:3] == ["cli", "Active", "agent"]
    assert "agents" in row  # the deciding policy
    out = cli(cluster, "describe", "cli", "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert "Phase:        Active" in out.stdout
    assert f"spiffe://cluster.local/ns/{namespace}/sa/agent" in out.stdout
    assert "Issued" in out.stdout
    assert issued not in out.stdout
    missing = cli(cluster, "describe", "nope", "-n", namespace)
    assert missing.returncode == 3 and "not found" in missing.stderr


def test_verify_valid_then_revoked(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    issued: str,
    operator_namespace: str,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(issued)
    ok = cli(cluster, "verify", str(token_file), "--audience", AUD)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("VALID")
    assert issued not in ok.stdout
    wrong = cli(cluster, "verify", str(token_file), "--audience", "https://other")
    assert wrong.returncode == 1 and "WrongAudience" in wrong.stdout

    jti = h.get(api, namespace, "agenttasks", "cli")["status"]["credential"]["jti"]
    rev = cli(cluster, "revoke", "cli", "-n", namespace, "--reason", "incident 42")
    assert rev.returncode == 0, rev.stderr
    st = h.wait_phase(api, namespace, "cli", "Revoked")["status"]
    assert st["reason"] == "RevokedByUser" and "incident 42" in st["message"]
    h.wait_for(lambda: jti in h.revoked_jtis(api, operator_namespace), what="jti listed")
    bad = cli(cluster, "verify", str(token_file), "--audience", AUD)
    assert bad.returncode == 1 and "Revoked" in bad.stdout


def test_verify_reports_expired_token(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    tmp_path: Path,
    active_task: Callable[..., h.Task],
) -> None:
    brief = active_task("brief", ttl="10s", credential_ttl="10s")
    token = brief.token()
    brief.wait("Expired", timeout=20)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    out = cli(cluster, "verify", str(token_file), "--audience", AUD)
    assert out.returncode == 1 and "Expired" in out.stdout, out.stderr


def test_verifier_library_from_files_checks_scopes_and_revocation(
    api: client.ApiClient,
    namespace: str,
    issued: str,
    operator_namespace: str,
    tmp_path: Path,
) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(h.jwks(api, operator_namespace)))
    rev_file = tmp_path / "revocations.json"
    rev_file.write_text(json.dumps({"revoked": [], "updatedAt": timeutil.rfc3339(time.time())}))
    v = Verifier(jwks=jwks_file, revocations=rev_file, audience=AUD, cache_ttl=0)
    claims = v.verify(issued)
    assert claims.task == "cli" and claims.namespace == namespace
    assert claims.allows("github", "comment", "repo:acme/widgets")
    claims.require("github", "read", "repo:acme/widgets")
    with pytest.raises(ScopeError):
        claims.require("github", "delete", "repo:acme/widgets")
    with pytest.raises(ScopeError):
        claims.require("github", "read", "repo:acme/other")
    entry = {"jti": claims.jti, "exp": claims.expires_at}
    rev_file.write_text(
        json.dumps({"revoked": [entry], "updatedAt": timeutil.rfc3339(time.time())})
    )
    with pytest.raises(tokens.TokenError) as err:
        v.verify(issued)
    assert err.value.reason == "Revoked"


def test_verifier_fails_closed_without_revocation_list(
    api: client.ApiClient, issued: str, operator_namespace: str, tmp_path: Path
) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(h.jwks(api, operator_namespace)))
    v = Verifier(jwks=jwks_file, revocations=tmp_path / "missing.json", audience=AUD)
    with pytest.raises(tokens.TokenError):
        v.verify(issued)
    now = [time.time()]
    rev_file = tmp_path / "revocations.json"
    rev_file.write_text(json.dumps({"revoked": [], "updatedAt": timeutil.rfc3339(now[0])}))
    stale = Verifier(
        jwks=jwks_file,
        revocations=rev_file,
        audience=AUD,
        cache_ttl=10,
        max_stale=60,
        clock=lambda: now[0],
    )
    stale.verify(issued)
    rev_file.unlink()  # the publisher goes away; after max_stale every token is refused
    now[0] += 120
    with pytest.raises(tokens.TokenError) as err:
        stale.verify(issued)
    assert "failing closed" in str(err.value.message)


def test_verifier_fetches_jwks_and_revocations_over_https(
    api: client.ApiClient,
    issued: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    tmp_path: Path,
) -> None:
    import base64

    tls = client.CoreV1Api(api).read_namespaced_secret("taskwarden-webhook-tls", operator_namespace)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(tls.data["ca.crt"]))
    base = f"https://127.0.0.1:{operator.public_port}"
    v = Verifier(
        jwks=f"{base}/.well-known/jwks.json",
        revocations=f"{base}/revocations",
        audience=AUD,
        ca_file=str(ca),
    )
    assert v.verify(issued).task == "cli"
