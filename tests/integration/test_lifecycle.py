"""No credential outlives the reason it was granted: each revocation trigger, on the real API.

Every test asserts the Secret is gone, the jti is on the revocation list (when the token was
still valid), the phase and reason, the Event and the metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from kubernetes import client

from taskwarden import timeutil
from taskwarden.credentials import tokens
from tests.integration import helpers as h

ActiveTask = Callable[..., h.Task]


def _assert_revoked(
    api: client.ApiClient, ns: str, name: str, jti: str, operator_ns: str, *, listed: bool = True
) -> None:
    h.wait_for(
        lambda: h.secret_or_none(api, ns, f"{name}-credential") is None, what="secret deleted"
    )
    if listed:
        h.wait_for(lambda: jti in h.revoked_jtis(api, operator_ns), what=f"jti {jti} listed")


def _reasons(api: client.ApiClient, ns: str, name: str) -> list[str]:
    return [e.reason for e in h.events_for(api, ns, name)]


def test_completion_revokes_immediately(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: ActiveTask,
) -> None:
    before = operator.metric("taskwarden_credentials_revoked_total", reason="Completed")
    done = active_task("done", pod_name="agent-0")
    jti, token = done.jti, done.token()
    h.patch(
        h.as_user(api, f"system:serviceaccount:{namespace}:agent"),
        namespace,
        "agenttasks",
        "done",
        {"spec": {"completed": True}},
    )
    st = h.wait_phase(api, namespace, "done", "Completed")["status"]
    assert st["reason"] == "Completed"
    _assert_revoked(api, namespace, "done", jti, operator_namespace)
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "False"
    h.wait_for(lambda: "Completed" in _reasons(api, namespace, "done"), what="event")
    assert operator.metric("taskwarden_credentials_revoked_total", reason="Completed") == before + 1
    # The revoked token no longer verifies, though its signature and exp are still fine.
    jwks = h.jwks(api, operator_namespace)
    revoked = h.revoked_jtis(api, operator_namespace)
    with pytest.raises(tokens.TokenError) as err:
        tokens.verify(token, jwks, now=time.time(), revoked=revoked)
    assert err.value.reason == "Revoked"
    tokens.verify(token, jwks, now=time.time())  # ...which is what makes the list necessary


def test_completed_task_never_returns_to_active(
    api: client.ApiClient, namespace: str, operator: h.OperatorProcess, active_task: ActiveTask
) -> None:
    active_task("once")
    h.patch(api, namespace, "agenttasks", "once", {"spec": {"completed": True}})
    h.wait_phase(api, namespace, "once", "Completed")
    # A later change that would have allowed it again (pod churn) does not revive it.
    h.delete_pod(api, namespace, "agent-0")
    h.pod(api, namespace, "agent-0", "agent")
    time.sleep(1)
    assert h.phase_of(api, namespace, "once") == "Completed"
    assert h.secret_or_none(api, namespace, "once-credential") is None


def test_expiry_fires_after_expires_at_and_not_before(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: ActiveTask,
) -> None:
    before = operator.metric("taskwarden_credentials_revoked_total", reason="Expired")
    t = active_task("short", ttl="10s", credential_ttl="10s").body
    expires_at = timeutil.parse(t["status"]["expiresAt"])
    # Still Active with its Secret a moment before expiry.
    time.sleep(max(0.0, expires_at - time.time() - 1.5))
    assert h.phase_of(api, namespace, "short") == "Active"
    assert h.secret_or_none(api, namespace, "short-credential") is not None
    st = h.wait_phase(api, namespace, "short", "Expired", timeout=15)["status"]
    assert st["reason"] == "Expired"
    expired_entry = next(e for e in st["history"] if e["phase"] == "Expired")
    assert timeutil.parse(expired_entry["time"]) >= expires_at
    _assert_revoked(
        api, namespace, "short", t["status"]["credential"]["jti"], operator_namespace, listed=False
    )  # the token's exp equals the task's: nothing left to list
    h.wait_for(lambda: "Expired" in _reasons(api, namespace, "short"), what="event")
    assert operator.metric("taskwarden_credentials_revoked_total", reason="Expired") == before + 1


def test_deleting_a_task_revokes_its_credential(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: ActiveTask,
) -> None:
    jti = active_task("gone").jti
    h.custom(api).delete_namespaced_custom_object(
        h.GROUP, h.VERSION, namespace, "agenttasks", "gone"
    )
    _assert_revoked(api, namespace, "gone", jti, operator_namespace)
    assert operator.metric("taskwarden_credentials_revoked_total", reason="Deleted") >= 1


def test_bound_pod_deleted_revokes_pod_gone(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: ActiveTask,
) -> None:
    jti = active_task("bound", pod_name="agent-0").jti
    h.delete_pod(api, namespace, "agent-0")
    st = h.wait_phase(api, namespace, "bound", "Revoked")["status"]
    assert st["reason"] == "PodGone"
    _assert_revoked(api, namespace, "bound", jti, operator_namespace)
    h.wait_for(lambda: "PodGone" in _reasons(api, namespace, "bound"), what="event")
    assert operator.metric("taskwarden_credentials_revoked_total", reason="PodGone") >= 1


def test_bound_pod_replaced_with_new_uid_revokes(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: ActiveTask,
) -> None:
    jti = active_task("replaced", pod_name="agent-0").jti
    h.delete_pod(api, namespace, "agent-0")
    h.pod(api, namespace, "agent-0", "agent")  # same name, new UID
    st = h.wait_phase(api, namespace, "replaced", "Revoked")["status"]
    assert st["reason"] == "PodGone"
    _assert_revoked(api, namespace, "replaced", jti, operator_namespace)


def test_bound_pod_leaving_running_revokes(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: ActiveTask,
) -> None:
    jti = active_task("failed", pod_name="agent-0").jti
    h.fail_pod(api, namespace, "agent-0")
    st = h.wait_phase(api, namespace, "failed", "Revoked")["status"]
    assert st["reason"] == "PodGone"
    _assert_revoked(api, namespace, "failed", jti, operator_namespace)


def test_service_account_task_survives_while_any_pod_runs(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    agent_env: Callable[..., h.AgentEnv],
    active_task: ActiveTask,
) -> None:
    env = agent_env(pods=("agent-0", "agent-1"))
    jti = active_task("sa-bound", env=env).jti
    h.delete_pod(api, namespace, "agent-0")
    time.sleep(1)
    assert h.phase_of(api, namespace, "sa-bound") == "Active"
    h.delete_pod(api, namespace, "agent-1")
    st = h.wait_phase(api, namespace, "sa-bound", "Revoked")["status"]
    assert st["reason"] == "PodGone"
    _assert_revoked(api, namespace, "sa-bound", jti, operator_namespace)


def test_policy_narrowed_revokes_policy_changed(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: ActiveTask,
) -> None:
    keep = active_task("reader").jti
    jti = active_task("writer", actions=("comment",)).jti
    h.patch(
        api,
        namespace,
        "agentpolicies",
        "agents",
        {"spec": {"rules": [{**h.policy_body()["spec"]["rules"][0], "actions": ["read"]}]}},
    )
    st = h.wait_phase(api, namespace, "writer", "Revoked")["status"]
    assert st["reason"] == "PolicyChanged"
    assert "github:comment" in st["message"]
    _assert_revoked(api, namespace, "writer", jti, operator_namespace)
    assert h.phase_of(api, namespace, "reader") == "Active"
    assert keep not in h.revoked_jtis(api, operator_namespace)
    assert operator.metric("taskwarden_credentials_revoked_total", reason="PolicyChanged") >= 1


def test_policy_deleted_revokes_policy_changed(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: ActiveTask,
) -> None:
    jti = active_task("orphan").jti
    h.custom(api).delete_namespaced_custom_object(
        h.GROUP, h.VERSION, namespace, "agentpolicies", "agents"
    )
    st = h.wait_phase(api, namespace, "orphan", "Revoked")["status"]
    assert st["reason"] == "PolicyChanged"
    _assert_revoked(api, namespace, "orphan", jti, operator_namespace)


def test_rotation_at_half_credential_ttl(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: ActiveTask,
) -> None:
    first = active_task("rotating", ttl="1m", credential_ttl="10s").status
    cred = first["credential"]

    def rotated() -> dict | None:
        st = h.get(api, namespace, "agenttasks", "rotating")["status"]
        return st if st["credential"]["rotations"] >= 1 else None

    st = h.wait_for(rotated, timeout=15, what="rotation")
    new = st["credential"]
    assert new["jti"] != cred["jti"]
    assert st["phase"] == "Active" and st["reason"] == "Rotated"
    issued = timeutil.parse(new["issuedAt"])
    # New token at half of the old one's life: well before the old one expires.
    assert issued < timeutil.parse(cred["expiresAt"])
    assert issued >= timeutil.parse(cred["issuedAt"]) + 4
    secret = h.wait_for(
        lambda: (
            (s := h.secret_or_none(api, namespace, "rotating-credential"))
            and s.metadata.annotations["taskwarden.dev/jti"] == new["jti"]
            and s
        ),
        what="rotated secret",
    )
    claims = tokens.verify(h.token_of(secret), h.jwks(api, operator_namespace), now=time.time())
    assert claims["jti"] == new["jti"]
    # Rotation is not revocation: the old token stays valid until its own exp (overlap).
    assert cred["jti"] not in h.revoked_jtis(api, operator_namespace)
    assert operator.metric("taskwarden_credentials_issued_total", kind="rotate") >= 1


def test_rotation_with_failed_recheck_revokes(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: ActiveTask,
) -> None:
    # 30 s, not 10 s: a restart on a loaded machine can take over 10 s, and a token that has
    # already expired is rightly never listed, which made this test fail for the wrong reason.
    jti = active_task("recheck", ttl="2m", credential_ttl="30s").jti
    # The operator's pod index must not see the change before rotation time: stop it first.
    operator.stop()
    try:
        # Not waiting until it is gone: a Terminating pod is already no longer Running.
        h.delete_pod(api, namespace, "agent-0", wait=False)
    finally:
        operator.start()
    st = h.wait_phase(api, namespace, "recheck", "Revoked", timeout=40)["status"]
    assert st["reason"] == "PodGone"
    _assert_revoked(api, namespace, "recheck", jti, operator_namespace)
