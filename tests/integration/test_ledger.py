"""The ledger of live credentials: a token whose task (or namespace) is deleted while no
operator runs is still revoked, and a crash between the ledger write and the credential's
creation leaves nothing unrevoked and nothing listed twice."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from kubernetes import client

from taskwarden.credentials import ledger
from tests.integration import helpers as h

N_TASKS = 200


def ledger_entries(api: client.ApiClient, operator_ns: str) -> dict[str, ledger.Entry]:
    core = client.CoreV1Api(api)
    out: dict[str, ledger.Entry] = {}
    for cm in core.list_namespaced_config_map(
        operator_ns, label_selector="taskwarden.dev/ledger=true"
    ).items:
        name = cm.metadata.name
        good, bad = ledger.entries(cm.data or {})
        assert not bad, f"{name}: undecodable entries {bad}"
        out.update({e.jti: e for e in good})
    return out


def listed_jtis(api: client.ApiClient, operator_ns: str) -> list[str]:
    """The revocation list as published, duplicates and all."""
    cm = client.CoreV1Api(api).read_namespaced_config_map("taskwarden-revocations", operator_ns)
    data = json.loads((cm.data or {}).get("revocations.json", "{}") or "{}")
    return [e["jti"] for e in data.get("revoked", [])]


def gone(fn: Callable[[], Any]) -> Callable[[], bool]:
    def check() -> bool:
        try:
            fn()
        except client.ApiException as e:
            return e.status == 404
        return False

    return check


@contextmanager
def operator_down(operator: h.OperatorProcess) -> Iterator[None]:
    operator.stop()
    try:
        yield
    finally:
        operator.start()


def test_a_task_deleted_while_the_operator_is_down_has_its_jti_listed_at_start(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: Callable[..., h.Task],
) -> None:
    task = active_task("doomed")
    jti = task.jti
    assert jti in ledger_entries(api, operator_namespace)  # written before the credential
    core = client.CoreV1Api(api)
    with operator_down(operator):
        h.custom(api).delete_namespaced_custom_object(
            h.GROUP, h.VERSION, namespace, "agenttasks", "doomed"
        )
        h.wait_for(
            gone(lambda: core.read_namespaced_secret("doomed-credential", namespace)),
            timeout=60,
            what="garbage collection of the credential Secret",
        )
        assert jti not in h.revoked_jtis(api, operator_namespace)
    # start() returns once healthy: the start-up ledger sweep has run by then.
    h.wait_for(
        lambda: jti in h.revoked_jtis(api, operator_namespace), timeout=10, what="jti listed"
    )
    h.wait_for(
        lambda: jti not in ledger_entries(api, operator_namespace), timeout=10, what="entry dropped"
    )


def test_a_namespace_deleted_while_the_operator_is_down_has_every_jti_listed(
    api: client.ApiClient,
    operator: h.OperatorProcess,
    operator_namespace: str,
    agent_role: str,
) -> None:
    ns = f"ledger-{uuid.uuid4().hex[:8]}"
    h.agent_namespace(api, ns, agent_role)
    env = h.agent_env(api, ns)
    names = [f"live-{i:03d}" for i in range(N_TASKS)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(env.create_task, names))
        bodies = list(pool.map(lambda n: h.wait_phase(api, ns, n, "Active", 120), names))
    jtis = {b["status"]["credential"]["jti"] for b in bodies}
    assert len(jtis) == N_TASKS
    assert jtis <= set(ledger_entries(api, operator_namespace))
    core = client.CoreV1Api(api)
    with operator_down(operator):
        core.delete_namespace(ns)
        h.wait_for(
            gone(lambda: core.read_namespace(ns)), timeout=120, what=f"namespace {ns} deleted"
        )
        assert not jtis & h.revoked_jtis(api, operator_namespace)
    h.wait_for(
        lambda: jtis <= h.revoked_jtis(api, operator_namespace), timeout=30, what="all jtis listed"
    )
    assert not jtis & set(ledger_entries(api, operator_namespace))


def test_a_crash_between_ledger_and_credential_leaves_nothing_unrevoked_nor_listed_twice(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env()
    operator.env["TASKWARDEN_TEST_CRASH_AFTER"] = "ledger"
    try:
        operator.stop()
        operator.start()
        env.create_task("crashing")
        assert operator.proc is not None
        operator.proc.wait(30)  # exits right after the ledger write of the first issuance
        assert operator.proc.returncode == 70, operator.log_tails()
    finally:
        del operator.env["TASKWARDEN_TEST_CRASH_AFTER"]
    orphans = {
        jti
        for jti, e in ledger_entries(api, operator_namespace).items()
        if (e.namespace, e.name) == (namespace, "crashing")
    }
    assert len(orphans) == 1, "the crash came after the ledger write"
    assert h.phase_of(api, namespace, "crashing") is None, "and before status"
    assert h.secret_or_none(api, namespace, "crashing-credential") is None
    operator.start()
    body = h.wait_phase(api, namespace, "crashing", "Active")
    listed = listed_jtis(api, operator_namespace)
    assert orphans <= set(listed), "the token that never got delivered is revoked anyway"
    assert len(listed) == len(set(listed)), "nothing listed twice"
    current = body["status"]["credential"]["jti"]
    assert current not in listed
    # What the ledger holds for the task now is exactly its live credential.
    left = {
        j
        for j, e in ledger_entries(api, operator_namespace).items()
        if (e.namespace, e.name) == (namespace, "crashing")
    }
    assert left == {current}
