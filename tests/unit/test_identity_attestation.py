"""SPIFFE IDs are built and parsed strictly, and attestation of an agent's pod gives each failure
its own reason, binds to the recorded UID and picks a deterministic pod for SA-only tasks."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from taskwarden import identity

TD = "cluster.local"
NS = "agents"
SA = "research-agent"


def pod(
    name: str,
    *,
    namespace: str = NS,
    uid: str | None = None,
    service_account: str | None = SA,
    phase: str | None = "Running",
    deleting: bool = False,
    created: Any = "2024-05-01T10:00:00Z",
    node: str | None = "node-1",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}"}
    if created is not None:
        metadata["creationTimestamp"] = created
    if deleting:
        metadata["deletionTimestamp"] = "2024-05-01T11:00:00Z"
    spec: dict[str, Any] = {}
    if service_account is not None:
        spec["serviceAccountName"] = service_account
    if node is not None:
        spec["nodeName"] = node
    return {"metadata": metadata, "spec": spec, "status": {"phase": phase} if phase else {}}


def attest(
    pods: list[dict[str, Any]],
    *,
    pod_name: str | None = None,
    recorded_uid: str | None = None,
    service_account: str = SA,
) -> identity.Attestation:
    return identity.attest(
        trust_domain=TD,
        namespace=NS,
        service_account=service_account,
        pod_name=pod_name,
        recorded_uid=recorded_uid,
        pods=pods,
    )


# --- SPIFFE IDs -----------------------------------------------------------------------------------


def test_spiffe_id_has_the_contract_shape() -> None:
    assert identity.spiffe_id(TD, NS, SA) == "spiffe://cluster.local/ns/agents/sa/research-agent"


@pytest.mark.parametrize(
    ("trust_domain", "namespace", "service_account"),
    [
        ("", NS, SA),
        ("Cluster.Local", NS, SA),
        ("cluster.local/x", NS, SA),
        (TD, "", SA),
        (TD, "Agents", SA),
        (TD, "a/b", SA),
        (TD, "-agents", SA),
        (TD, NS, ""),
        (TD, NS, "sa/../../x"),
        (TD, NS, "sa?x=1"),
        (TD, NS, "Research"),
    ],
)
def test_spiffe_id_refuses_parts_that_are_not_names(
    trust_domain: str, namespace: str, service_account: str
) -> None:
    with pytest.raises(ValueError, match="not a valid"):
        identity.spiffe_id(trust_domain, namespace, service_account)


def test_parse_spiffe_id_round_trips() -> None:
    sid = identity.spiffe_id("example.org", "team-a", "bot.v2")
    assert identity.parse_spiffe_id(sid) == ("example.org", "team-a", "bot.v2")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "https://cluster.local/ns/agents/sa/x",
        "spiffe://cluster.local/ns/agents/sa/",
        "spiffe://cluster.local/ns/agents/sa/x/",
        "spiffe://cluster.local/ns/agents/sa/x/extra",
        "spiffe://cluster.local/sa/x/ns/agents",
        "spiffe://cluster.local/ns/agents",
        "spiffe://cluster.local/ns/agents/sa/x?y=1",
        "spiffe://cluster.local/ns/agents/sa/x#frag",
        "spiffe://cluster.local:8443/ns/agents/sa/x",
        "spiffe://user@cluster.local/ns/agents/sa/x",
        "spiffe://CLUSTER.local/ns/agents/sa/x",
        "spiffe:///ns/agents/sa/x",
        "SPIFFE://cluster.local/ns/agents/sa/x",
    ],
)
def test_parse_spiffe_id_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        identity.parse_spiffe_id(text)


# --- Attestation of a named pod -------------------------------------------------------------------


def test_a_running_named_pod_is_attested_with_its_facts() -> None:
    result = attest([pod("agent-1", uid="u-1", node="node-7")], pod_name="agent-1")
    assert result == identity.Attestation(
        ok=True,
        reason="",
        message=result.message,
        spiffe_id="spiffe://cluster.local/ns/agents/sa/research-agent",
        pod_name="agent-1",
        pod_uid="u-1",
        node_name="node-7",
    )
    assert "agent-1" in result.message


def test_the_recorded_uid_still_matching_is_fine() -> None:
    result = attest([pod("agent-1", uid="u-1")], pod_name="agent-1", recorded_uid="u-1")
    assert result.ok
    assert result.pod_uid == "u-1"


@pytest.mark.parametrize(
    ("pods", "recorded_uid", "reason", "fragments"),
    [
        pytest.param(
            [], None, identity.POD_NOT_FOUND, ["agents/agent-1", "not found", SA], id="no-pods"
        ),
        pytest.param([pod("agent-2")], None, identity.POD_NOT_FOUND, ["agent-1"], id="other-name"),
        pytest.param(
            [pod("agent-1", namespace="elsewhere")],
            None,
            identity.POD_NOT_FOUND,
            ["agent-1"],
            id="other-namespace",
        ),
        pytest.param(
            [pod("agent-1", uid="u-2")],
            "u-1",
            identity.POD_REPLACED,
            ["u-2", "u-1", "replaced"],
            id="uid-changed",
        ),
        pytest.param(
            [pod("agent-1", phase="Pending")],
            None,
            identity.POD_NOT_RUNNING,
            ["Pending", "Running"],
            id="pending",
        ),
        pytest.param(
            [pod("agent-1", phase="Succeeded")],
            None,
            identity.POD_NOT_RUNNING,
            ["Succeeded"],
            id="succeeded",
        ),
        pytest.param(
            [pod("agent-1", phase=None)],
            None,
            identity.POD_NOT_RUNNING,
            ["without a phase"],
            id="no-phase",
        ),
        pytest.param(
            [pod("agent-1", deleting=True)],
            None,
            identity.POD_NOT_RUNNING,
            ["terminating"],
            id="terminating",
        ),
        pytest.param(
            [pod("agent-1", service_account="default")],
            None,
            identity.SERVICE_ACCOUNT_MISMATCH,
            ["default", SA],
            id="other-sa",
        ),
        pytest.param(
            [pod("agent-1", service_account=None)],
            None,
            identity.SERVICE_ACCOUNT_MISMATCH,
            ["<none>", SA],
            id="no-sa",
        ),
        # Checks run in the documented order: identity of the pod first, then its state.
        pytest.param(
            [pod("agent-1", uid="u-2", phase="Pending")],
            "u-1",
            identity.POD_REPLACED,
            ["replaced"],
            id="replaced-beats-not-running",
        ),
        pytest.param(
            [pod("agent-1", phase="Failed", service_account="x")],
            None,
            identity.POD_NOT_RUNNING,
            ["Failed"],
            id="not-running-beats-sa",
        ),
    ],
)
def test_each_failure_of_a_named_pod_has_its_reason(
    pods: list[dict[str, Any]], recorded_uid: str | None, reason: str, fragments: list[str]
) -> None:
    result = attest(pods, pod_name="agent-1", recorded_uid=recorded_uid)
    assert not result.ok
    assert result.reason == reason
    assert result.spiffe_id is None
    assert "agent-1" in result.message
    for fragment in fragments:
        assert fragment in result.message
    assert not result.message.endswith(".")  # same style as policy decision messages


def test_a_failed_attestation_still_reports_the_pod_it_found() -> None:
    result = attest([pod("agent-1", uid="u-9", phase="Pending", node="n-3")], pod_name="agent-1")
    assert (result.pod_name, result.pod_uid, result.node_name) == ("agent-1", "u-9", "n-3")


def test_the_spiffe_id_comes_from_the_attested_pod_and_the_configured_trust_domain() -> None:
    result = identity.attest(
        trust_domain="prod.example",
        namespace=NS,
        service_account=SA,
        pod_name="agent-1",
        recorded_uid=None,
        pods=[pod("agent-1")],
    )
    assert result.spiffe_id == "spiffe://prod.example/ns/agents/sa/research-agent"


def test_an_invalid_trust_domain_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="trust domain"):
        identity.attest(
            trust_domain="Not Valid",
            namespace=NS,
            service_account=SA,
            pod_name=None,
            recorded_uid=None,
            pods=[],
        )


# --- Attestation by service account only ---------------------------------------------------------


def test_without_a_pod_name_the_oldest_running_pod_of_the_account_is_chosen() -> None:
    pods = [
        pod("c-newest", created="2024-05-03T00:00:00Z"),
        pod("b-oldest-but-terminating", created="2024-04-01T00:00:00Z", deleting=True),
        pod("a-oldest-but-pending", created="2024-04-02T00:00:00Z", phase="Pending"),
        pod("z-oldest-other-sa", created="2024-01-01T00:00:00Z", service_account="other"),
        pod("y-oldest-other-ns", created="2024-01-01T00:00:00Z", namespace="elsewhere"),
        pod("d-oldest-running", created="2024-05-02T00:00:00Z"),
    ]
    for _ in range(10):
        random.shuffle(pods)
        result = attest(pods)
        assert result.ok
        assert result.pod_name == "d-oldest-running"


def test_equal_creation_times_are_broken_by_name() -> None:
    pods = [pod("agent-b"), pod("agent-c"), pod("agent-a")]
    assert attest(pods).pod_name == "agent-a"
    assert attest(list(reversed(pods))).pod_name == "agent-a"


def test_creation_times_compare_as_times_not_strings() -> None:
    pods = [
        pod("later", created="2024-05-01T10:00:00+02:00"),  # 08:00Z
        pod("earlier", created=datetime(2024, 5, 1, 7, 0, tzinfo=UTC)),
    ]
    assert attest(pods).pod_name == "earlier"


def test_a_pod_without_creation_time_is_only_chosen_last() -> None:
    pods = [pod("a-no-time", created=None), pod("b-timed", created="2030-01-01T00:00:00Z")]
    assert attest(pods).pod_name == "b-timed"
    assert attest([pod("a-no-time", created=None)]).pod_name == "a-no-time"


def test_without_a_pod_name_the_recorded_uid_is_not_a_constraint() -> None:
    result = attest([pod("agent-1", uid="u-new")], recorded_uid="u-old")
    assert result.ok
    assert result.pod_uid == "u-new"


def test_no_pod_running_as_the_account_is_pod_not_found() -> None:
    result = attest([pod("x", service_account="other"), pod("y", namespace="elsewhere")])
    assert result.reason == identity.POD_NOT_FOUND
    assert SA in result.message
    assert NS in result.message
    assert result.pod_name is None


def test_pods_of_the_account_that_are_not_running_are_pod_not_running() -> None:
    result = attest([pod("p1", phase="Pending"), pod("p2", deleting=True)])
    assert result.reason == identity.POD_NOT_RUNNING
    assert "2 pod(s)" in result.message
    assert SA in result.message


def test_malformed_pod_entries_are_ignored() -> None:
    junk: list[Any] = [
        {},
        {"metadata": None},
        {"metadata": {"name": "x"}},  # no namespace
        {"metadata": {"name": 3, "namespace": NS}},
        "not-a-pod",
        {"metadata": {"name": "agent-1", "namespace": NS}, "spec": [], "status": "Running"},
    ]
    assert attest([*junk, pod("agent-2")]).pod_name == "agent-2"
    named = attest(junk, pod_name="agent-1")
    assert named.reason == identity.POD_NOT_RUNNING  # found, but no phase and no account


def test_pod_selectors_describe_the_pod() -> None:
    assert identity.pod_selectors(pod("agent-1", uid="u-1", node="n-1")) == [
        "k8s:node-name:n-1",
        "k8s:ns:agents",
        "k8s:pod-name:agent-1",
        "k8s:pod-uid:u-1",
        "k8s:sa:research-agent",
    ]
    assert identity.pod_selectors({}) == []
