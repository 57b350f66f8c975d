"""A denial is explained by the candidate policy that came closest, and names every candidate."""

from __future__ import annotations

from collections.abc import Callable

from kubernetes import client

from tests.integration import helpers as h

AUD = "https://api.github.com"


def rule(actions: list[str], audiences: list[str]) -> dict:
    return {
        "tool": "github",
        "actions": actions,
        "resources": ["repo:acme/*"],
        "audiences": audiences,
        "maxDataClass": "internal",
    }


def test_three_policies_failing_on_three_axes_the_closest_explains(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    # scope: covers nothing about GitHub (both triples uncovered)
    env = agent_env(policy=h.policy_body("a-scope", tool="s3"))
    # limits: both triples covered, but ttl and credentialTTL exceed its limits
    h.create(
        api,
        namespace,
        "agentpolicies",
        h.policy_body("b-limits", max_ttl="10m", extra={"maxCredentialTTL": "1m"}),
    )
    # audience: read covered; comment only for another audience (one triple uncovered)
    h.create(
        api,
        namespace,
        "agentpolicies",
        h.policy_body(
            "c-audience",
            extra={"rules": [rule(["read"], [AUD]), rule(["comment"], ["https://other"])]},
        ),
    )
    task = env.task("mixed", actions=("read", "comment"), phase="Denied")
    decision = task.status["decision"]
    assert decision["allowed"] is False
    assert decision["policy"] == "c-audience"
    assert decision["reason"].startswith("AudienceNotAllowed: ")
    assert "rule 1 of policy c-audience" in decision["reason"]
    assert decision["candidates"] == ["a-scope", "b-limits", "c-audience"]
    assert task.status["reason"] == "AudienceNotAllowed"
