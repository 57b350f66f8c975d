"""Each task metric moves exactly as docs/operations.md says over one task's life, scraped from
the operator's /metrics: the operator's own status events, sweeps and retries add nothing."""

from __future__ import annotations

from collections.abc import Callable

from kubernetes import client

from tests.integration import helpers as h

COUNTED = {
    "issued": ("taskwarden_credentials_issued_total", {"kind": "issue"}),
    "rotated": ("taskwarden_credentials_issued_total", {"kind": "rotate"}),
    "reissued": ("taskwarden_credentials_issued_total", {"kind": "reissue"}),
    "allow": ("taskwarden_policy_decisions_total", {"decision": "allow"}),
    "deny": ("taskwarden_policy_decisions_total", {"decision": "deny"}),
    "attested": ("taskwarden_identity_verifications_total", {"result": "ok"}),
    "completed": ("taskwarden_credentials_revoked_total", {"reason": "Completed"}),
    "revoked": ("taskwarden_credentials_revoked_total", {}),
    "issuance": ("taskwarden_issuance_duration_seconds_count", {}),
    "lag": ("taskwarden_revocation_lag_seconds_count", {}),
    "active": ("taskwarden_active_credentials", {}),
    "live": ("taskwarden_live_tasks", {}),
}


def snapshot(op: h.OperatorProcess) -> dict[str, float]:
    return {k: op.metric(name, **labels) for k, (name, labels) in COUNTED.items()}


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


def settled(op: h.OperatorProcess, expected: dict[str, float], before: dict[str, float]) -> bool:
    return moved(before, snapshot(op)) == expected


def test_one_issue_one_rotation_one_completion_move_each_metric_exactly_as_documented(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env()
    before = snapshot(operator)
    published = operator.metric("taskwarden_revocation_publish_seconds_count")
    task = env.task("life", credential_ttl="10s")
    # Issued, then the operator sees its own status and Secret events: still one of each.
    issued = {"issued": 1, "allow": 1, "attested": 1, "issuance": 1, "active": 1, "live": 1}
    h.wait_for(lambda: settled(operator, issued, before), timeout=5, what="one issuance")
    h.wait_for(
        lambda: (task.get()["status"]["credential"].get("rotations") or 0) >= 1,
        timeout=20,
        what="the first rotation (at half of the 10 s credential)",
    )
    rotated = {**issued, "rotated": 1, "allow": 2, "attested": 2}
    h.wait_for(lambda: settled(operator, rotated, before), timeout=5, what="one rotation")
    h.patch(env.as_agent(), namespace, "agenttasks", "life", {"spec": {"completed": True}})
    task.wait("Completed")
    done = {**rotated, "completed": 1, "revoked": 1, "lag": 1}
    del done["active"], done["live"]  # back where they were
    h.wait_for(lambda: settled(operator, done, before), timeout=5, what="one completion")
    # Its jti was published: once on the completion's arrival, and again (idempotent) by the
    # revocation that also lists the task's other ledger entries.
    assert operator.metric("taskwarden_revocation_publish_seconds_count") > published


def test_a_denied_task_is_one_deny_and_nothing_else(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env()
    before = snapshot(operator)
    env.task("refused", tool="s3", phase="Denied")
    h.wait_for(lambda: settled(operator, {"deny": 1}, before), timeout=5, what="one deny")
