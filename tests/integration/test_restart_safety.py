"""Crashes and restarts lose nothing and leave no live credential behind."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client

from taskwarden import controlplane
from taskwarden.credentials import tokens
from taskwarden.names import TERMINAL
from tests.integration import helpers as h

N_TASKS = 200


def _issued_jtis(log: Path) -> dict[tuple[str, str], set[str]]:
    """Every jti the operator ever issued, per task, from its JSON audit lines."""
    out: dict[tuple[str, str], set[str]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if rec.get("event") in ("issued", "rotated", "reissued") and rec.get("jti"):
            out.setdefault((rec["namespace"], rec["name"]), set()).add(rec["jti"])
    return out


def _settled(api: client.ApiClient, ns: str) -> list[dict] | None:
    items = h.custom(api).list_namespaced_custom_object(h.GROUP, h.VERSION, ns, "agenttasks")
    tasks = items["items"]
    if len(tasks) != N_TASKS:
        return None
    # The restarted operator may still be reissuing a credential whose Secret the crash cut
    # off (status names the new jti first, then the Secret follows): settled is when every
    # Active task's Secret carries the jti its status names, or the wait times out.
    secrets = client.CoreV1Api(api).list_namespaced_secret(ns, label_selector="taskwarden.dev/task")
    jti_of = {
        s.metadata.name: (s.metadata.annotations or {}).get("taskwarden.dev/jti")
        for s in secrets.items
    }
    for t in tasks:
        st = t.get("status") or {}
        phase = st.get("phase")
        if t["spec"].get("completed") and phase != "Completed":
            return None
        if not t["spec"].get("completed") and phase != "Active":
            return None
        credential = st.get("credential") or {}
        if phase == "Active" and jti_of.get(
            f"{t['metadata']['name']}-credential"
        ) != credential.get("jti"):
            return None
    return tasks


def test_sigkill_during_issuance_loses_nothing_and_leaks_nothing(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    agent = agent_env().as_agent()
    names = [f"crash-{i:03d}" for i in range(N_TASKS)]
    completing = set(names[0:N_TASKS:7])

    def create(name: str) -> None:
        h.create(agent, namespace, "agenttasks", h.task_body(name))

    def complete(name: str) -> None:
        h.patch(agent, namespace, "agenttasks", name, {"spec": {"completed": True}})

    # All tasks are admitted first: with the operator down, its webhooks (failurePolicy Fail)
    # rightly refuse new tasks and spec changes.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, names))
        first = sorted(completing)[: len(completing) // 2]
        list(pool.map(complete, first))
        operator.kill()  # mid-flight: issuance and the completions above still in progress
    operator.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(complete, sorted(completing)[len(completing) // 2 :]))

    tasks = h.wait_for(lambda: _settled(api, namespace), timeout=120, what="all tasks settled")
    issued = _issued_jtis(operator.log)
    revoked = h.revoked_jtis(api, operator_namespace)
    jwks = h.jwks(api, operator_namespace)
    core = client.CoreV1Api(api)
    secrets = {
        s.metadata.name: s
        for s in core.list_namespaced_secret(namespace, label_selector="taskwarden.dev/task").items
    }
    now = time.time()
    for t in tasks:
        name, st = t["metadata"]["name"], t["status"]
        secret = secrets.get(f"{name}-credential")
        all_jtis = issued.get((namespace, name), set())
        if st["phase"] in TERMINAL:
            assert secret is None, f"{name} is {st['phase']} but its Secret survived"
            # Every token it ever had is revoked (or had already expired).
            assert all_jtis <= revoked, f"{name}: live jti after {st['phase']}"
            continue
        current = st["credential"]["jti"]
        assert secret is not None, f"{name} Active without a Secret"
        assert secret.metadata.annotations["taskwarden.dev/jti"] == current
        claims = tokens.verify(h.token_of(secret), jwks, now=now, revoked=revoked)
        assert claims["jti"] == current
        # No second live token: anything else ever issued for this task is revoked.
        assert (all_jtis - {current}) <= revoked, f"{name} has two live tokens"
    assert len([t for t in tasks if t["status"]["phase"] == "Completed"]) == len(completing)


def test_expiry_while_operator_down_is_applied_at_start(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    active_task: Callable[..., h.Task],
) -> None:
    active_task("lapsed", ttl="10s", credential_ttl="10s")
    operator.stop()
    try:
        time.sleep(11)
        assert h.phase_of(api, namespace, "lapsed") == "Active"
    finally:
        operator.start()
    h.wait_phase(api, namespace, "lapsed", "Expired")
    assert h.secret_or_none(api, namespace, "lapsed-credential") is None


def test_orphaned_credential_secret_is_swept_at_start(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    active_task: Callable[..., h.Task],
) -> None:
    task = active_task("stale").created
    operator.stop()
    try:
        # While the operator is down, something leaves a credential Secret with a foreign jti.
        core = client.CoreV1Api(api)
        core.patch_namespaced_secret(
            "stale-credential",
            namespace,
            {"metadata": {"annotations": {"taskwarden.dev/jti": "forged"}}},
        )
    finally:
        operator.start()
    secret = h.wait_for(
        lambda: (
            (s := h.secret_or_none(api, namespace, "stale-credential"))
            and s.metadata.annotations["taskwarden.dev/jti"] != "forged"
            and s
        ),
        what="stale secret replaced",
    )
    st = h.get(api, namespace, "agenttasks", "stale")["status"]
    assert secret.metadata.annotations["taskwarden.dev/jti"] == st["credential"]["jti"]
    assert secret.metadata.owner_references[0].uid == task["metadata"]["uid"]


def test_namespace_with_live_tasks_deletes_while_operator_is_down(
    api: client.ApiClient, operator: h.OperatorProcess, agent_role: str
) -> None:
    core = client.CoreV1Api(api)
    ns = f"doomed-{os.getpid()}"
    h.agent_namespace(api, ns, agent_role)
    env = h.agent_env(api, ns)
    for i in range(3):
        env.create_task(f"live-{i}")
    for i in range(3):
        h.wait_phase(api, ns, f"live-{i}", "Active")
    operator.stop()
    try:
        core.delete_namespace(ns)

        def gone() -> bool:
            try:
                core.read_namespace(ns)
            except client.ApiException as e:
                return e.status == 404
            return False

        h.wait_for(gone, timeout=90, what=f"namespace {ns} deleted")
    finally:
        operator.start()


def test_two_active_operators_never_issue_two_live_tokens(
    api: client.ApiClient,
    cluster: controlplane.ControlPlane,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    tmp_path: Path,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    """Both standalone (no peering): only the resourceVersion precondition keeps them apart."""
    second = h.OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        workdir=tmp_path,
        operator_namespace=operator_namespace,
        env=dict(os.environ),
        name="operator-2",
    )
    second.start()
    try:
        agent = agent_env().as_agent()
        names = [f"race-{i:02d}" for i in range(30)]
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(lambda n: h.create(agent, namespace, "agenttasks", h.task_body(n)), names)
            )
        for n in names:
            h.wait_phase(api, namespace, n, "Active")
        time.sleep(4)  # let any loser's retry run
    finally:
        second.stop()
        # Locally each process registers the webhooks at its own port (in a cluster a Service
        # fronts them all): restart the session operator so they point at it again.
        operator.stop()
        operator.start()
    issued = _issued_jtis(operator.log)
    for k, v in _issued_jtis(second.log).items():
        issued.setdefault(k, set()).update(v)
    revoked = h.revoked_jtis(api, operator_namespace)
    for n in names:
        st = h.get(api, namespace, "agenttasks", n)["status"]
        current = st["credential"]["jti"]
        secret = h.secret_or_none(api, namespace, f"{n}-credential")
        assert secret.metadata.annotations["taskwarden.dev/jti"] == current
        assert (issued.get((namespace, n), set()) - {current}) <= revoked
