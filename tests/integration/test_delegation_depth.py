"""Admission and the reconciler agree on how deep a delegation chain may go (issue 11, finding 2).

The CRD lets `delegation.maxDepth` go up to 16. Every child that admission lets in must be
issued by the reconciler (Active, not Denied as too deep), and a child one level beyond
maxDepth is refused by both: by admission when it is created, by the reconciler when the
policy is narrowed under a chain that is already running.

A chain here is a root task `d0` and children `d1..dN`, each delegated from the one before
and created by the parent's own agent (a real pod-bound ServiceAccount token).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from taskwarden.credentials import tokens
from tests.integration import helpers as h

SETTLED = ("Active", "Denied", "Revoked", "Failed")


def chain_policy(max_depth: int) -> dict[str, Any]:
    return h.policy_body(extra={"delegation": {"allowed": True, "maxDepth": max_depth}})


def child_body(depth: int) -> dict[str, Any]:
    return h.task_body(
        f"d{depth}", ttl="10m", credential_ttl="2m", extra={"delegatedFrom": f"d{depth - 1}"}
    )


def settled(env: h.AgentEnv, name: str) -> dict[str, Any]:
    """The task once the reconciler has decided it (Active or refused), whichever it is."""

    def check() -> dict[str, Any] | None:
        t = h.get(env.api, env.namespace, "agenttasks", name)
        return t if (t.get("status") or {}).get("phase") in SETTLED else None

    return h.wait_for(check, timeout=30, what=f"{env.namespace}/{name} decided")


def build_chain(env: h.AgentEnv, me: client.ApiClient, depth: int) -> list[h.Task]:
    """d0..d<depth>, each admitted and then issued: stops at the first level that is not."""
    chain = [env.task("d0", creator=me)]
    for d in range(1, depth + 1):
        created = h.create(me, env.namespace, "agenttasks", child_body(d))  # admitted...
        body = settled(env, f"d{d}")
        st = body["status"]
        assert st["phase"] == "Active", (  # ...so the reconciler must issue it
            f"depth {d}: admitted, but the reconciler made it {st['phase']} "
            f"{st.get('reason')}: {st.get('message')}"
        )
        chain.append(h.Task(env, f"d{d}", created, body))
    return chain


@pytest.mark.parametrize("depth", [9, 12, 16])
def test_every_child_admission_lets_in_is_issued(
    api: client.ApiClient,
    operator_namespace: str,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
    depth: int,
) -> None:
    env = agent_env(policy=chain_policy(16))
    me = env.agent_api()
    deepest = build_chain(env, me, depth)[-1]
    # The deepest token names every ancestor, the parent outermost (RFC 8693 act chain).
    claims = tokens.verify(deepest.token(), h.jwks(api, operator_namespace), now=time.time())
    assert tokens.delegation_depth(claims) == depth
    assert claims["act"]["taskwarden.dev/task"]["name"] == f"d{depth - 1}"


@pytest.mark.parametrize("max_depth", [4, 10, 15])
def test_a_child_beyond_max_depth_is_refused_by_admission_and_the_reconciler(
    api: client.ApiClient,
    webhooks: None,
    agent_env: Callable[..., h.AgentEnv],
    max_depth: int,
) -> None:
    env = agent_env(policy=chain_policy(max_depth))
    me = env.agent_api()
    build_chain(env, me, max_depth)

    # Admission: one level more than maxDepth is refused at create time.
    with pytest.raises(client.ApiException) as err:
        h.create(me, env.namespace, "agenttasks", child_body(max_depth + 1))
    assert err.value.status in (400, 403)
    assert (
        f"spec.delegatedFrom: delegation depth {max_depth + 1} exceeds delegation.maxDepth "
        f"{max_depth}"
    ) in str(err.value.body)

    # The reconciler: narrowing the policy by one level revokes exactly the deepest child.
    narrowed = max_depth - 1
    h.patch(
        api,
        env.namespace,
        "agentpolicies",
        "agents",
        {"spec": {"delegation": {"allowed": True, "maxDepth": narrowed}}},
    )
    st = h.wait_phase(api, env.namespace, f"d{max_depth}", "Revoked")["status"]
    assert st["reason"] == "NotANarrowing", st
    assert (
        f"spec.delegatedFrom: delegation depth {max_depth} exceeds delegation.maxDepth {narrowed}"
    ) in st["message"]
    time.sleep(1)  # the rest of the chain was re-evaluated too: it stays Active
    assert h.phase_of(api, env.namespace, f"d{narrowed}") == "Active"
