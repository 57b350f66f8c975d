"""A policy and the task it allows, applied together, give an Active task, not a denial.

The operator watches tasks itself and policies through kopf; the two watches deliver in their
own time, so a task can be judged before the policy created just before it reached the
index. A denial is final (NoMatchingPolicy), so before denying for want of a policy the
operator reads the namespace's policies from the API server and decides again. Each round
here creates a policy for a new tool and, at once, a task for that tool, created by the
agent's own ServiceAccount.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes import client

from tests.integration import helpers as h

ROUNDS = 8


def test_a_task_created_right_after_its_policy_is_allowed(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    env = agent_env()
    for i in range(ROUNDS):
        tool = f"tool{i}"
        h.create(
            api,
            namespace,
            "agentpolicies",
            h.policy_body(f"p{i}", tool=tool, resources=("thing:*",), audiences=("https://t",)),
        )
        env.create_task(f"t{i}", tool=tool, resources=("thing:a",), audiences=("https://t",))
    for i in range(ROUNDS):
        task = h.wait_for(
            lambda i=i: (
                t
                if (t := h.get(api, namespace, "agenttasks", f"t{i}"))
                .get("status", {})
                .get("phase")
                in ("Active", "Denied")
                else None
            ),
            timeout=30,
            interval=0.2,
            what=f"t{i} decided",
        )
        st = task["status"]
        assert st["phase"] == "Active", f"t{i}: {st.get('reason')}: {st.get('message')}"
