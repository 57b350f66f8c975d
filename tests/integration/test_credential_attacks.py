"""Attacks on a task's credential, tried on the real control plane; each one fails (issue 12).

Each test plays the attacker with real identities: agents use pod-bound ServiceAccount tokens
or impersonation, humans are impersonated. A refusal asserted here comes from a Taskwarden
webhook (its message names the field and the rule), never from RBAC or the CRD schema.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration import helpers as h


def refusal(fn: Any, *args: Any, **kwargs: Any) -> str:
    """Call fn expecting a Taskwarden webhook refusal; return its message."""
    with pytest.raises(ApiException) as err:
        fn(*args, **kwargs)
    body = json.loads(err.value.body)
    assert err.value.status in (400, 403), body
    message = str(body["message"])
    assert "admission webhook" in message and "taskwarden.dev" in message, message
    return message


def foreign_secret(api: client.ApiClient, ns: str, name: str) -> None:
    """Another application's Secret, whose name happens to be `<task>-credential`."""
    client.CoreV1Api(api).create_namespaced_secret(
        ns,
        {
            "metadata": {"name": name},
            "type": "Opaque",
            "data": {"password": base64.b64encode(b"db-password").decode()},
        },
    )


# --------------------------------------------------------------------------- 4: deletes only its own


def test_a_task_named_after_someone_elses_secret_is_refused(
    api: client.ApiClient,
    namespace: str,
    agent_env: Callable[..., h.AgentEnv],
    webhooks: None,
) -> None:
    env = agent_env()
    foreign_secret(api, namespace, "db-credential")
    message = refusal(env.create_task, "db")
    assert "metadata.name: Secret db-credential already exists" in message
    assert "is not this task's credential Secret" in message
    assert h.secret_or_none(api, namespace, "db-credential").type == "Opaque"


def test_an_ending_task_never_deletes_or_overwrites_a_secret_it_does_not_own(
    api: client.ApiClient,
    namespace: str,
    active_task: Callable[..., h.Task],
    webhooks: None,
) -> None:
    task = active_task("db")
    core = client.CoreV1Api(api)
    # After admission, another application takes the name (the operator never watches Secrets).
    core.delete_namespaced_secret("db-credential", namespace, grace_period_seconds=0)
    h.wait_for(lambda: h.secret_or_none(api, namespace, "db-credential") is None, what="gone")
    foreign_secret(api, namespace, "db-credential")
    h.patch(task.env.as_agent(), namespace, "agenttasks", "db", {"spec": {"completed": True}})
    task.wait("Completed")
    assert task.jti in h.revoked_jtis(api, "taskwarden-system")
    kept = h.secret_or_none(api, namespace, "db-credential")
    assert kept is not None and kept.type == "Opaque"
    assert base64.b64decode(kept.data["password"]) == b"db-password"
