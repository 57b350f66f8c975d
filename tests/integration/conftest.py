"""One real control plane per test session, shared by every integration test.

Fixtures: `cluster` (the running control plane), `api` (an admin ApiClient), `crds` (CRDs from
crds/ installed and Established), `namespace` (a fresh namespace per test) and `operator`
(a `taskwarden run` subprocess against the control plane). On top of those, `agent_env` (the
test namespace with a Running agent pod and an AgentPolicy) and `active_task` (an Active task
with its credential in it) are factories, so a test asks for the variant it needs; `webhooks`
waits until the apiserver really calls the operator's admission webhooks. A failing test
prints the tail of the control plane's and the operator's logs.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from taskwarden import controlplane
from tests.integration import helpers

ROOT = Path(__file__).resolve().parents[2]
_LOG_SOURCES: list[Any] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    # Schema tests create objects as admin: run them before any operator registers webhooks.
    items.sort(key=lambda i: 0 if i.fspath.basename == "test_crds.py" else 1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and "tests/integration" in str(item.fspath):
        for source in _LOG_SOURCES:
            with contextlib.suppress(Exception):
                report.sections.append((f"logs: {source.name}", source.log_tails()))
    return report


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    cp = controlplane.start(tmp_path_factory.mktemp("controlplane"))
    cp.name = "controlplane"  # type: ignore[attr-defined]
    _LOG_SOURCES.append(cp)
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def api(cluster: controlplane.ControlPlane) -> client.ApiClient:
    return cluster.api_client()


@pytest.fixture(scope="session")
def crds(cluster: controlplane.ControlPlane, api: client.ApiClient) -> list[str]:
    return controlplane.install_crds(api, ROOT / "crds")


AGENT_ROLE = "taskwarden:agent"


@pytest.fixture(scope="session")
def agent_role(api: client.ApiClient, crds: list[str]) -> str:
    """What a cluster admin grants agents: create and read their own AgentTasks."""
    rbac = client.RbacAuthorizationV1Api(api)
    with contextlib.suppress(ApiException):
        rbac.create_cluster_role(
            {
                "metadata": {"name": AGENT_ROLE},
                "rules": [
                    {
                        "apiGroups": ["taskwarden.dev"],
                        "resources": ["agenttasks"],
                        "verbs": ["create", "get", "list", "watch", "patch", "update"],
                    },
                    {
                        "apiGroups": ["taskwarden.dev"],
                        "resources": ["agentapprovals"],
                        "verbs": ["create", "get", "list"],
                    },
                ],
            }
        )
    return AGENT_ROLE


@pytest.fixture
def namespace(api: client.ApiClient, agent_role: str) -> Iterator[str]:
    """A fresh namespace whose ServiceAccounts (and user alice, group sre) may use AgentTasks."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    helpers.agent_namespace(api, name, agent_role)
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            client.CoreV1Api(api).delete_namespace(name)


@pytest.fixture(scope="session")
def operator_namespace(api: client.ApiClient, crds: list[str]) -> str:
    name = "taskwarden-system"
    with contextlib.suppress(ApiException):
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture(scope="session")
def operator(
    cluster: controlplane.ControlPlane,
    operator_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[helpers.OperatorProcess]:
    op = helpers.OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        workdir=tmp_path_factory.mktemp("operator"),
        operator_namespace=operator_namespace,
        env=dict(os.environ),
    )
    _LOG_SOURCES.append(op)
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def agent_env(
    api: client.ApiClient, cluster: controlplane.ControlPlane, namespace: str
) -> Callable[..., helpers.AgentEnv]:
    """Factory: the test namespace with Running agent pods and an AgentPolicy, made once.

    `agent_env(policy=..., pods=..., sa=...)` takes `helpers.agent_env`'s options; a second
    call returns the same env and must not ask for a different one.
    """
    made: list[tuple[dict[str, Any], helpers.AgentEnv]] = []

    def make(**options: Any) -> helpers.AgentEnv:
        if made:
            assert not options or options == made[0][0], "agent_env already made differently"
            return made[0][1]
        made.append((options, helpers.agent_env(api, namespace, cluster=cluster, **options)))
        return made[0][1]

    return make


@pytest.fixture
def active_task(
    agent_env: Callable[..., helpers.AgentEnv], operator: helpers.OperatorProcess
) -> Callable[..., helpers.Task]:
    """Factory: an Active AgentTask (its credential Secret written) in the prepared namespace.

    `active_task(name, **task_body options, creator=ApiClient)`; pass `env=agent_env(...)`
    first for a non-default policy or pods. Each call adds a task to the same namespace.
    """

    def make(name: str = "task", **task: Any) -> helpers.Task:
        env: helpers.AgentEnv = task.pop("env", None) or agent_env()
        return env.task(name, **task)

    return make


@pytest.fixture(scope="module")
def webhooks(
    api: client.ApiClient, operator: helpers.OperatorProcess, agent_role: str
) -> Iterator[None]:
    """Wait until the apiserver really calls the operator's webhooks (configs are cached)."""
    probe_ns = f"probe-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": probe_ns}})

    def refused() -> bool:
        try:
            helpers.custom(api).create_namespaced_custom_object(
                helpers.GROUP,
                helpers.VERSION,
                probe_ns,
                "agenttasks",
                helpers.task_body("probe"),
                dry_run="All",
            )
        except ApiException as e:
            return e.status == 403 and "taskwarden.dev" in (e.body or "")
        return False

    helpers.wait_for(refused, timeout=60, interval=0.2, what="webhooks called by the apiserver")
    if helpers.CEL_MODE:
        helpers.wait_for(
            lambda: helpers.cel_policies_active(api, probe_ns),
            timeout=60,
            interval=0.2,
            what="Taskwarden's admission policies loaded by the apiserver",
        )
    yield
    with contextlib.suppress(ApiException):
        client.CoreV1Api(api).delete_namespace(probe_ns)
