"""Secret-less delivery (`spec.delivery: exchange`, issue 12) on the real control plane.

The agent exchanges its pod-bound ServiceAccount token (real TokenRequest tokens, checked by the
apiserver's TokenReview) for its task token at the operator's /token endpoint (RFC 8693). Each
way of borrowing the task's token is tried and must be refused; and no Secret of the task ever
exists, watched for the task's whole life.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from kubernetes import client, watch

from taskwarden import agent, controlplane
from taskwarden.credentials import tokens
from tests.integration import helpers as h

EXCHANGE = {"delivery": "exchange"}


# --------------------------------------------------------------------------- helpers


def ca_of(api: client.ApiClient, operator_ns: str) -> str:
    s = client.CoreV1Api(api).read_namespaced_secret("taskwarden-webhook-tls", operator_ns)
    return base64.b64decode(s.data["ca.crt"]).decode()


def issuer(operator: h.OperatorProcess) -> str:
    return f"https://127.0.0.1:{operator.public_port}"  # the issuer: the public endpoints


def subject_token(
    api: client.ApiClient, ns: str, sa: str, pod: str | None, audience: str, seconds: int = 600
) -> str:
    """A real TokenRequest token for `audience`, bound to `pod` (as the kubelet projects it)."""
    spec: dict[str, Any] = {"expirationSeconds": seconds, "audiences": [audience]}
    if pod:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod}
    tr = client.CoreV1Api(api).create_namespaced_service_account_token(sa, ns, {"spec": spec})
    return str(tr.status.token)


def post(
    operator: h.OperatorProcess, ca: str, subject: str, resource: str, **form: str
) -> tuple[int, dict[str, Any]]:
    data = {
        "grant_type": agent.GRANT_TYPE,
        "subject_token": subject,
        "subject_token_type": agent.JWT_TYPE,
        "resource": resource,
        **form,
    }
    req = urllib.request.Request(
        issuer(operator) + "/token", data=urllib.parse.urlencode(data).encode()
    )
    ctx = ssl.create_default_context(cadata=ca)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=15) as r:
            return int(r.status), dict(json.loads(r.read()))
    except urllib.error.HTTPError as e:
        return int(e.code), dict(json.loads(e.read()))


def resource(ns: str, task: str) -> str:
    return f"taskwarden://{ns}/{task}"


def exchange_task(env: h.AgentEnv, name: str, **task: Any) -> dict[str, Any]:
    """Create an exchange-mode task and return it once Active (no Secret to wait for)."""
    extra = {**EXCHANGE, **task.pop("extra", {})}
    env.create_task(name, extra=extra, **task)
    return h.wait_phase(env.api, env.namespace, name, "Active", 30)


def refused(status: int, body: dict[str, Any], error: str) -> None:
    assert status in (400, 503), (status, body)
    assert body.get("error") == error, body
    assert "access_token" not in body


@pytest.fixture
def ca(api: client.ApiClient, operator: h.OperatorProcess, operator_namespace: str) -> str:
    return ca_of(api, operator_namespace)


# --------------------------------------------------------------------------- happy path


def test_exchange_gives_the_token_status_names_and_no_secret(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    operator_namespace: str,
    agent_env: Callable[..., h.AgentEnv],
    ca: str,
    tmp_path: Path,
) -> None:
    env = agent_env()
    task = exchange_task(env, "xchg")
    cred = task["status"]["credential"]
    assert cred["secretName"] == ""
    assert h.secret_or_none(api, env.namespace, "xchg-credential") is None

    # The agent helper, reading the file the kubelet would project into the pod.
    subject = tmp_path / "subject-token"
    subject.write_text(subject_token(api, env.namespace, env.sa, "agent-0", issuer(operator)))
    source = agent.TokenSource(
        issuer(operator) + "/token",
        str(subject),
        resource(env.namespace, "xchg"),
        context=ssl.create_default_context(cadata=ca),
    )
    token = source.token()
    assert source.token() == token  # cached until half its lifetime
    claims = tokens.verify(
        token,
        h.jwks(api, operator_namespace),
        issuer=issuer(operator),
        audience="https://api.github.com",
        now=time.time(),
    )
    assert claims["jti"] == cred["jti"]
    assert claims["pod"] == {"name": "agent-0", "uid": env.pod_uid}
    assert claims["taskwarden.dev/task"]["name"] == "xchg"
    assert h.secret_or_none(api, env.namespace, "xchg-credential") is None


# --------------------------------------------------------------------------- refusals


def test_another_pod_of_the_same_service_account_is_refused(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    ca: str,
) -> None:
    env = agent_env(pods=("agent-0", "agent-1"))
    exchange_task(env, "pinned", pod_name="agent-0")
    other = subject_token(api, env.namespace, env.sa, "agent-1", issuer(operator))
    status, body = post(operator, ca, other, resource(env.namespace, "pinned"))
    refused(status, body, "invalid_grant")
    assert "attested pod" in body["error_description"]
    # Control: the attested pod's own token is accepted.
    own = subject_token(api, env.namespace, env.sa, "agent-0", issuer(operator))
    assert post(operator, ca, own, resource(env.namespace, "pinned"))[0] == 200


def test_a_token_not_bound_to_a_pod_is_refused(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    ca: str,
) -> None:
    env = agent_env()
    exchange_task(env, "unbound")
    loose = subject_token(api, env.namespace, env.sa, None, issuer(operator))
    status, body = post(operator, ca, loose, resource(env.namespace, "unbound"))
    refused(status, body, "invalid_grant")
    assert "not bound to a pod" in body["error_description"]


def test_a_replaced_pod_is_refused(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    ca: str,
) -> None:
    env = agent_env()
    exchange_task(env, "replaced", pod_name="agent-0")
    old = subject_token(api, env.namespace, env.sa, "agent-0", issuer(operator))
    core = client.CoreV1Api(api)
    core.delete_namespaced_pod("agent-0", env.namespace, grace_period_seconds=0)
    h.wait_for(lambda: h.pod_or_none(api, env.namespace, "agent-0") is None, what="pod gone")
    h.pod(api, env.namespace, "agent-0", env.sa)  # same name, same account, new UID
    new = subject_token(api, env.namespace, env.sa, "agent-0", issuer(operator))
    for subject in (old, new):
        status, body = post(operator, ca, subject, resource(env.namespace, "replaced"))
        refused(status, body, "invalid_grant")


def test_the_wrong_audience_is_refused(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    ca: str,
) -> None:
    env = agent_env()
    exchange_task(env, "aud")
    for audience in ("https://kubernetes.default.svc.cluster.local", "https://elsewhere.example"):
        wrong = subject_token(api, env.namespace, env.sa, "agent-0", audience)
        status, body = post(operator, ca, wrong, resource(env.namespace, "aud"))
        refused(status, body, "invalid_grant")
    # Naming the task as `audience` instead of `resource` works the same way.
    right = subject_token(api, env.namespace, env.sa, "agent-0", issuer(operator))
    ok, answer = post(operator, ca, right, "", audience=resource(env.namespace, "aud"))
    assert ok == 200 and answer["issued_token_type"] == agent.JWT_TYPE


def test_an_expired_subject_token_is_refused(
    api: client.ApiClient,
    cluster: controlplane.ControlPlane,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    ca: str,
) -> None:
    """TokenRequest cannot ask for less than 600 s, so the test re-signs a real pod-bound token
    with the apiserver's own ServiceAccount signing key, moving only its times into the past.
    The same re-signing with current times is accepted: the refusal is the expiry's alone."""
    env = agent_env()
    exchange_task(env, "expired")
    real = subject_token(api, env.namespace, env.sa, "agent-0", issuer(operator))
    header = jwt.get_unverified_header(real)
    claims = jwt.decode(real, options={"verify_signature": False})
    key = (cluster.pki / "sa.key").read_text()

    def resign(iat: int, exp: int) -> str:
        body = {**claims, "iat": iat, "nbf": iat, "exp": exp}
        if "kubernetes.io" in body and "warnafter" in body["kubernetes.io"]:
            body["kubernetes.io"] = {**body["kubernetes.io"], "warnafter": iat + 1}
        return jwt.encode(body, key, algorithm=header["alg"], headers={"kid": header["kid"]})

    now = int(time.time())
    fresh = resign(now - 5, now + 600)
    assert post(operator, ca, fresh, resource(env.namespace, "expired"))[0] == 200
    stale = resign(now - 1200, now - 600)
    status, body = post(operator, ca, stale, resource(env.namespace, "expired"))
    refused(status, body, "invalid_grant")


def test_a_terminal_or_revoked_task_is_refused(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    operator_namespace: str,
    agent_env: Callable[..., h.AgentEnv],
    ca: str,
) -> None:
    env = agent_env()
    done = exchange_task(env, "done")
    gone = exchange_task(env, "gone")
    subject = subject_token(api, env.namespace, env.sa, "agent-0", issuer(operator))
    for name in ("done", "gone"):
        assert post(operator, ca, subject, resource(env.namespace, name))[0] == 200
    h.patch(api, env.namespace, "agenttasks", "done", {"spec": {"completed": True}})
    h.patch(
        api,
        env.namespace,
        "agenttasks",
        "gone",
        {"metadata": {"annotations": {"taskwarden.dev/revoke": "test"}}},
    )
    h.wait_phase(api, env.namespace, "done", "Completed", 20)
    h.wait_phase(api, env.namespace, "gone", "Revoked", 20)
    for name, body in (("done", done), ("gone", gone)):
        status, answer = post(operator, ca, subject, resource(env.namespace, name))
        refused(status, answer, "invalid_grant")
        jti = body["status"]["credential"]["jti"]
        h.wait_for(
            lambda jti=jti: jti in h.revoked_jtis(api, operator_namespace), what=f"{jti} listed"
        )


def test_another_namespaces_service_account_is_refused(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    agent_role: str,
    ca: str,
) -> None:
    env = agent_env()
    exchange_task(env, "mine")
    other_ns = f"other-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": other_ns}})
    try:
        h.pod(api, other_ns, "agent-0", env.sa)  # same account and pod names, other namespace
        foreign = subject_token(api, other_ns, env.sa, "agent-0", issuer(operator))
        status, body = post(operator, ca, foreign, resource(env.namespace, "mine"))
        refused(status, body, "invalid_target")
        # Nor can a secret-mode task or a task that does not exist be exchanged for.
        own = subject_token(api, env.namespace, env.sa, "agent-0", issuer(operator))
        status, body = post(operator, ca, own, resource(env.namespace, "nosuchtask"))
        refused(status, body, "invalid_target")
    finally:
        core.delete_namespace(other_ns)


def test_a_secret_mode_task_is_not_exchanged(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    active_task: Callable[..., h.Task],
    agent_env: Callable[..., h.AgentEnv],
    ca: str,
) -> None:
    task = active_task("mounted")
    own = subject_token(api, task.namespace, "agent", "agent-0", issuer(operator))
    status, body = post(operator, ca, own, resource(task.namespace, "mounted"))
    refused(status, body, "invalid_target")


# --------------------------------------------------------------------------- never a Secret


@pytest.fixture
def secret_events(api: client.ApiClient, namespace: str) -> Iterator[list[tuple[str, str]]]:
    """Every Secret event in the test namespace, watched from before the task exists."""
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    ready = threading.Event()

    def run() -> None:
        core = client.CoreV1Api(api)
        rv = core.list_namespaced_secret(namespace).metadata.resource_version
        ready.set()
        with contextlib.suppress(Exception):  # the stream ends when the test stops it
            for ev in w.stream(
                core.list_namespaced_secret, namespace, resource_version=rv, timeout_seconds=120
            ):
                seen.append((ev["type"], ev["object"].metadata.name))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(10)
    yield seen
    w.stop()


def test_exchange_mode_never_writes_a_secret(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    secret_events: list[tuple[str, str]],
    ca: str,
) -> None:
    env = agent_env()
    listed: list[list[str]] = []

    def secrets() -> None:
        items = client.CoreV1Api(api).list_namespaced_secret(env.namespace).items
        listed.append([s.metadata.name for s in items])

    # Short credentials, so that the life includes a rotation (half of 10 s).
    body = exchange_task(env, "life", credential_ttl="10s")
    secrets()
    subject = subject_token(api, env.namespace, env.sa, "agent-0", issuer(operator))
    assert post(operator, ca, subject, resource(env.namespace, "life"))[0] == 200
    first = body["status"]["credential"]["jti"]
    h.wait_for(
        lambda: (
            h.get(api, env.namespace, "agenttasks", "life")["status"]["credential"]["jti"] != first
        ),
        timeout=30,
        what="a rotation",
    )
    status, answer = post(operator, ca, subject, resource(env.namespace, "life"))
    assert status == 200
    rotated = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert rotated["jti"] != first  # rotation: the agent exchanges again
    secrets()
    h.patch(api, env.namespace, "agenttasks", "life", {"spec": {"completed": True}})
    h.wait_phase(api, env.namespace, "life", "Completed", 20)
    secrets()
    h.custom(api).delete_namespaced_custom_object(
        h.GROUP, h.VERSION, env.namespace, "agenttasks", "life"
    )

    def deleted() -> bool:
        try:
            h.get(api, env.namespace, "agenttasks", "life")
        except client.ApiException as e:
            return e.status == 404
        return False

    h.wait_for(deleted, what="task deleted", timeout=20)
    secrets()
    # Control: the watch sees Secrets (a canary written last arrives after everything before it).
    client.CoreV1Api(api).create_namespaced_secret(
        env.namespace, {"metadata": {"name": "canary"}, "stringData": {"k": "v"}}
    )
    h.wait_for(lambda: ("ADDED", "canary") in secret_events, what="the watch sees the canary")
    assert [n for (n,) in ((e[1],) for e in secret_events) if n.startswith("life")] == []
    assert all(not name.startswith("life") for names in listed for name in names)


# --------------------------------------------------------------------------- pod mutation


def test_exchange_mode_pods_get_a_projected_token_not_the_secret(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    webhooks: None,
) -> None:
    env = agent_env()
    exchange_task(env, "mounted-x")
    made = h.pod(
        api, env.namespace, "agent-x", env.sa, annotations={"taskwarden.dev/task": "mounted-x"}
    )
    volumes = made["spec"]["volumes"]
    mine = [v for v in volumes if v["name"] == "taskwarden-credential"]
    assert len(mine) == 1 and "secret" not in mine[0], mine
    source = mine[0]["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == issuer(operator)
    assert not any("secret" in v for v in volumes)
    env_vars = {e["name"]: e.get("value") for e in made["spec"]["containers"][0]["env"]}
    assert env_vars["TASKWARDEN_EXCHANGE_URL"] == issuer(operator) + "/token"
    assert env_vars["TASKWARDEN_TASK"] == resource(env.namespace, "mounted-x")
    assert "TASKWARDEN_TOKEN_FILE" not in env_vars


# --------------------------------------------------------------------------- policy


def test_a_policy_rule_may_require_exchange(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    secret_events: list[tuple[str, str]],
) -> None:
    pol = h.policy_body()
    pol["spec"]["rules"][0]["delivery"] = "exchange"
    env = agent_env(policy=pol)
    env.create_task("mounted")
    denied = h.wait_phase(api, env.namespace, "mounted", "Denied", 30)
    assert denied["status"]["reason"] == "ExchangeRequired", denied["status"]
    assert "requires spec.delivery: exchange" in denied["status"]["message"]
    exchange_task(env, "exchanged")
    assert [e for e in secret_events if e[1].endswith("-credential")] == []
