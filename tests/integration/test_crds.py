"""The CRDs in crds/ as the real kube-apiserver serves them: established, examples accepted,
invalid objects rejected by the OpenAPI schema and CEL rules with a message naming field and rule.

Nothing here needs the operator: every rejection comes from the apiserver itself. The valid
objects are created as the admin user, so this file expects the Taskwarden admission webhooks
not to be registered (they would bind the requester); see `bare_apiserver`.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"
GROUP, VERSION = "taskwarden.dev", "v1alpha1"
TASKS, POLICIES, APPROVALS = "agenttasks", "agentpolicies", "agentapprovals"
KIND_OF = {TASKS: "AgentTask", POLICIES: "AgentPolicy", APPROVALS: "AgentApproval"}
SPEC_HASH = "sha256:" + "ab" * 32

Body = dict[str, Any]
Mutation = Callable[[Body], None]


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def bare_apiserver(api: client.ApiClient, crds: list[str]) -> client.CustomObjectsApi:
    """CustomObjectsApi for schema tests; skips when Taskwarden webhooks would interfere.

    The validating webhook binds the requester of a task and checks approvals, so valid objects
    created here as the admin user would be refused once an operator registered its webhooks in
    the same session. Schema and CEL checks themselves do not depend on the operator.
    """
    adm = client.AdmissionregistrationV1Api(api)
    configs = [
        *adm.list_validating_webhook_configuration().items,
        *adm.list_mutating_webhook_configuration().items,
    ]
    for config in configs:
        for hook in config.webhooks or []:
            for rule in hook.rules or []:
                if GROUP in (rule.api_groups or []):
                    pytest.skip(
                        f"webhook {config.metadata.name}/{hook.name} is registered for {GROUP}; "
                        "run the CRD tests before the operator starts"
                    )
    return client.CustomObjectsApi(api)


def task(name: str = "triage") -> Body:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentTask",
        "metadata": {"name": name},
        "spec": {
            "agent": {"serviceAccountName": "research-agent"},
            "intent": "triage issue 4711",
            "scopes": [
                {"tool": "github", "actions": ["read", "comment"], "resources": ["repo:acme/w"]}
            ],
            "audiences": ["https://api.github.com"],
            "ttl": "30m",
            "credentialTTL": "5m",
        },
    }


def policy(name: str = "research-agents") -> Body:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentPolicy",
        "metadata": {"name": name},
        "spec": {
            "subjects": {"serviceAccounts": ["research-agent"]},
            "rules": [
                {
                    "tool": "github",
                    "actions": ["read"],
                    "resources": ["repo:acme/*"],
                    "audiences": ["https://api.github.com"],
                }
            ],
        },
    }


def approval(name: str = "approve-triage") -> Body:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentApproval",
        "metadata": {"name": name},
        "spec": {"taskName": "triage", "specHash": SPEC_HASH, "decision": "approve"},
    }


BASE: dict[str, Callable[[], Body]] = {TASKS: task, POLICIES: policy, APPROVALS: approval}


def _walk(body: Body, path: str) -> tuple[Any, str | int]:
    *parents, last = path.split(".")
    node: Any = body
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    return node, int(last) if isinstance(node, list) else last


def set_(path: str, value: Any) -> Mutation:
    def mutate(body: Body) -> None:
        node, key = _walk(body, path)
        node[key] = copy.deepcopy(value)

    return mutate


def drop(path: str) -> Mutation:
    def mutate(body: Body) -> None:
        node, key = _walk(body, path)
        del node[key]

    return mutate


def rejection(call: Callable[[], Any]) -> str:
    """Run an API call that must be refused as invalid; return the apiserver's message."""
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 422, info.value.body
    return str(json.loads(info.value.body)["message"])


def create(
    objs: client.CustomObjectsApi, namespace: str, plural: str, body: Body
) -> dict[str, Any]:
    return dict(objs.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body))


# --------------------------------------------------------------------------- the CRDs


TASKWARDEN_CRDS = {
    "agenttasks.taskwarden.dev": ("AgentTask", "at"),
    "agentpolicies.taskwarden.dev": ("AgentPolicy", "ap"),
    "agentapprovals.taskwarden.dev": ("AgentApproval", "aa"),
}
PEERING_CRDS = {"kopfpeerings.kopf.dev": "Namespaced", "clusterkopfpeerings.kopf.dev": "Cluster"}


def test_every_crd_is_established_and_structural(api: client.ApiClient, crds: list[str]) -> None:
    assert set(crds) >= set(TASKWARDEN_CRDS) | set(PEERING_CRDS)
    ext = client.ApiextensionsV1Api(api)
    for name in crds:
        crd = ext.read_custom_resource_definition(name)
        conditions = {c.type: c for c in crd.status.conditions or []}
        assert conditions["Established"].status == "True", name
        assert conditions["NamesAccepted"].status == "True", name
        assert "NonStructuralSchema" not in conditions, conditions["NonStructuralSchema"].message


def test_taskwarden_kinds_are_namespaced_served_with_status_and_short_names(
    api: client.ApiClient, crds: list[str]
) -> None:
    ext = client.ApiextensionsV1Api(api)
    for name, (kind, short) in TASKWARDEN_CRDS.items():
        crd = ext.read_custom_resource_definition(name)
        assert crd.spec.scope == "Namespaced"
        assert crd.spec.names.kind == kind
        assert crd.spec.names.short_names == [short]
        assert crd.spec.names.categories == ["taskwarden"]
        [version] = crd.spec.versions
        assert (version.name, version.served, version.storage) == (VERSION, True, True)
        assert version.subresources.status is not None

    resources = client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION)
    served = {r.name: r for r in resources.resources}
    for plural in (TASKS, POLICIES, APPROVALS):
        assert plural in served and f"{plural}/status" in served
        assert served[plural].namespaced


def test_kopf_peering_crds_keep_what_kopf_writes(
    api: client.ApiClient, crds: list[str], namespace: str
) -> None:
    ext = client.ApiextensionsV1Api(api)
    for name, scope in PEERING_CRDS.items():
        crd = ext.read_custom_resource_definition(name)
        assert crd.spec.scope == scope
        # kopf patches peers into .status of the main resource: no status subresource allowed.
        assert crd.spec.versions[0].subresources is None

    objs = client.CustomObjectsApi(api)
    peer = {"identity-1": {"priority": 100, "lastseen": "2025-01-01T00:00:00", "lifetime": 60}}
    body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "taskwarden"}}
    objs.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", body)
    patched = objs.patch_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfpeerings", "taskwarden", {"status": peer}
    )
    assert patched["status"] == peer

    cluster_name = f"taskwarden-test-{uuid.uuid4().hex[:8]}"
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering"}
    body["metadata"] = {"name": cluster_name}
    objs.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
    try:
        patched = objs.patch_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", cluster_name, {"status": peer}
        )
        assert patched["status"] == peer
    finally:
        objs.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", cluster_name)


# --------------------------------------------------------------------------- the examples


def _example_docs() -> list[tuple[str, Body]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _creation_order(item: tuple[str, Body]) -> tuple[int, int, str]:
    _, doc = item
    rank = ["Namespace", "ServiceAccount", "AgentPolicy", "AgentTask", "AgentApproval", "Pod"]
    delegated = int(bool(doc.get("spec", {}).get("delegatedFrom")))  # parents first
    return rank.index(doc["kind"]), delegated, doc["metadata"]["name"]


def test_every_example_is_accepted(
    api: client.ApiClient, bare_apiserver: client.CustomObjectsApi, namespace: str
) -> None:
    docs = sorted(_example_docs(), key=_creation_order)
    files = {name for name, _ in docs}
    assert {"policy.yaml", "task.yaml", "approval.yaml", "agent-pod.yaml"} <= files
    dyn = dynamic.DynamicClient(api)
    created = {}
    for filename, doc in docs:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        if doc["kind"] == "Namespace":
            # The examples' namespace is `agents`, which other tests may have created: check
            # only that the document would be accepted, under a name nobody else uses.
            assert doc["metadata"]["name"] == "agents"
            doc = copy.deepcopy(doc)
            doc["metadata"]["name"] = f"{namespace}-agents"
            resource.create(body=doc, dry_run="All")
            continue
        assert doc["metadata"].get("namespace") == "agents", filename
        doc = copy.deepcopy(doc)
        doc["metadata"]["namespace"] = namespace
        obj = resource.create(body=doc, namespace=namespace).to_dict()
        created[(doc["kind"], doc["metadata"]["name"])] = obj

    triage = created[("AgentTask", "triage-4711")]
    assert triage["spec"]["completed"] is False
    assert triage["spec"]["credentialTTL"] == "5m"
    child = created[("AgentTask", "triage-4711-read")]
    assert child["spec"]["delegatedFrom"] == "triage-4711"
    research = created[("AgentPolicy", "research-agents")]
    assert research["spec"]["rules"][0]["approval"] == "none"
    payments = created[("AgentPolicy", "payments-refunds")]
    assert payments["spec"]["rules"][0]["approval"] == "required"
    assert payments["spec"]["delegation"] == {"allowed": False, "maxDepth": 1}
    pod = created[("Pod", "research-agent")]
    assert pod["spec"]["serviceAccountName"] == "research-agent"
    assert pod["metadata"]["annotations"]["taskwarden.dev/task"] == "triage-4711"


def test_defaults_are_filled_in_by_the_apiserver(
    bare_apiserver: client.CustomObjectsApi, namespace: str
) -> None:
    minimal = task("minimal")
    del minimal["spec"]["ttl"], minimal["spec"]["credentialTTL"]
    spec = create(bare_apiserver, namespace, TASKS, minimal)["spec"]
    assert (spec["dataClass"], spec["ttl"], spec["completed"]) == ("internal", "30m", False)
    # min(ttl, 10m) depends on ttl: the operator computes it, the schema must not invent one.
    assert "credentialTTL" not in spec

    spec = create(bare_apiserver, namespace, POLICIES, policy())["spec"]
    assert spec["delegation"] == {"allowed": False, "maxDepth": 1}
    assert spec["approvalTTL"] == "15m"
    assert spec["rules"][0]["approval"] == "none"

    partial = policy("partial-delegation")
    partial["spec"]["delegation"] = {"allowed": True}
    spec = create(bare_apiserver, namespace, POLICIES, partial)["spec"]
    assert spec["delegation"] == {"allowed": True, "maxDepth": 1}


def test_printer_columns_show_phase_agent_expiry_and_reason(
    bare_apiserver: client.CustomObjectsApi, namespace: str
) -> None:
    create(bare_apiserver, namespace, TASKS, task())
    bare_apiserver.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        TASKS,
        "triage",
        {"status": {"phase": "Active", "reason": "Issued", "expiresAt": "2030-01-01T00:00:00Z"}},
    )
    response = bare_apiserver.list_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        TASKS,
        _headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        _preload_content=False,
    )
    table = json.loads(response.data)
    columns = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0]
    assert columns == ["Name", "Phase", "Agent", "Expires", "Reason", "Age"]
    [row] = table["rows"]
    assert row["cells"][:5] == [
        "triage",
        "Active",
        "research-agent",
        "2030-01-01T00:00:00Z",
        "Issued",
    ]


def test_status_keeps_kopf_bookkeeping_and_prunes_unknown_fields(
    bare_apiserver: client.CustomObjectsApi, namespace: str
) -> None:
    create(bare_apiserver, namespace, TASKS, task())
    status = {
        "phase": "Pending",
        "reason": "PodNotFound",
        "kopf": {"progress": {"issue": {"retries": 1}}},
        "notInTheSchema": "dropped",
        "history": [{"time": "2030-01-01T00:00:00Z", "phase": "Pending", "reason": "Created"}],
        "conditions": [
            {
                "type": "IdentityVerified",
                "status": "False",
                "reason": "PodNotFound",
                "message": "no running pod runs as research-agent",
                "lastTransitionTime": "2030-01-01T00:00:00Z",
            }
        ],
    }
    got = bare_apiserver.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, TASKS, "triage", {"status": status}
    )["status"]
    assert got["kopf"] == {"progress": {"issue": {"retries": 1}}}
    assert "notInTheSchema" not in got
    assert got["conditions"][0]["type"] == "IdentityVerified"

    # A whole-status write with nulls (no matching rule yet) is accepted: nulls are dropped.
    current = bare_apiserver.get_namespaced_custom_object(
        GROUP, VERSION, namespace, TASKS, "triage"
    )
    current["status"]["decision"] = {"allowed": False, "rule": None, "policy": None}
    got = bare_apiserver.replace_namespaced_custom_object_status(
        GROUP, VERSION, namespace, TASKS, "triage", current
    )["status"]
    assert got["decision"] == {"allowed": False}


def test_spec_updates_that_are_allowed(
    bare_apiserver: client.CustomObjectsApi, namespace: str
) -> None:
    create(bare_apiserver, namespace, TASKS, task())
    patched = bare_apiserver.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        TASKS,
        "triage",
        {"metadata": {"labels": {"team": "sre"}}, "spec": {"completed": True}},
    )
    assert patched["spec"]["completed"] is True
    # Setting it to true again is a no-op, not a reopening.
    bare_apiserver.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, TASKS, "triage", {"spec": {"completed": True}}
    )

    create(bare_apiserver, namespace, POLICIES, policy())
    patched = bare_apiserver.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICIES, "research-agents", {"spec": {"maxTTL": "2h"}}
    )
    assert patched["spec"]["maxTTL"] == "2h"


def test_largest_allowed_objects_fit_the_cel_cost_budget(
    bare_apiserver: client.CustomObjectsApi, namespace: str
) -> None:
    """Every list and string at its maximum: created, then updated through every CEL rule."""
    big = task("big")
    big["spec"]["intent"] = "i" * 256
    big["spec"]["audiences"] = [f"{n}" + "a" * 255 for n in range(8)]
    big["spec"]["scopes"] = [
        {
            "tool": f"{n:02d}" + "t" * 61,
            "actions": [f"{a:02d}" + "r" * 61 for a in range(16)],
            "resources": [f"{r:02d}" + "x" * 254 for r in range(32)],
        }
        for n in range(16)
    ]
    create(bare_apiserver, namespace, TASKS, big)
    done = bare_apiserver.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, TASKS, "big", {"spec": {"completed": True}}
    )
    assert done["spec"]["completed"] is True

    wide = policy("wide")
    rule = wide["spec"]["rules"][0]
    rule.update(approval="required", audiences=[f"{n}" + "a" * 255 for n in range(8)])
    wide["spec"]["rules"] = [rule] * 64
    wide["spec"]["approvers"] = [f"user:{n:02d}" + "u" * 505 for n in range(32)]
    wide["spec"].update(maxTTL="1h", maxCredentialTTL="10m")
    create(bare_apiserver, namespace, POLICIES, wide)

    hashed = approval("big")
    hashed["spec"]["reason"] = "r" * 1024
    create(bare_apiserver, namespace, APPROVALS, hashed)


# --------------------------------------------------------------------------- rejected on create

_SCOPE0 = "spec.scopes.0"
_RULE0 = "spec.rules.0"

INVALID_ON_CREATE: list[tuple[str, str, list[Mutation], str]] = [
    # AgentTask
    ("task-missing-spec", TASKS, [drop("spec")], "spec: Required value"),
    ("task-missing-scopes", TASKS, [drop("spec.scopes")], "spec.scopes: Required value"),
    (
        "task-empty-scopes",
        TASKS,
        [set_("spec.scopes", [])],
        "spec.scopes must request at least one scope",
    ),
    (
        "task-too-many-scopes",
        TASKS,
        [set_("spec.scopes", [task()["spec"]["scopes"][0]] * 17)],
        "spec.scopes: Too many: 17: must have at most 16 items",
    ),
    (
        "task-tool-not-a-dns-label",
        TASKS,
        [set_(f"{_SCOPE0}.tool", "GitHub_API")],
        "spec.scopes[0].tool in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
    ),
    (
        "task-tool-too-long",
        TASKS,
        [set_(f"{_SCOPE0}.tool", "a" * 64)],
        "spec.scopes[0].tool: Too long",
    ),
    (
        "task-empty-actions",
        TASKS,
        [set_(f"{_SCOPE0}.actions", [])],
        "spec.scopes[0].actions in body should have at least 1 items",
    ),
    (
        "task-duplicate-action",
        TASKS,
        [set_(f"{_SCOPE0}.actions", ["read", "read"])],
        'spec.scopes[0].actions[1]: Duplicate value: "read"',
    ),
    (
        "task-empty-resources",
        TASKS,
        [set_(f"{_SCOPE0}.resources", [])],
        "spec.scopes[0].resources in body should have at least 1 items",
    ),
    (
        "task-resource-with-whitespace",
        TASKS,
        [set_(f"{_SCOPE0}.resources", ["repo:acme widgets"])],
        "spec.scopes[0].resources[0] in body should match",
    ),
    (
        "task-missing-audiences",
        TASKS,
        [drop("spec.audiences")],
        "spec.audiences: Required value",
    ),
    (
        "task-empty-audiences",
        TASKS,
        [set_("spec.audiences", [])],
        "spec.audiences in body should have at least 1 items",
    ),
    (
        "task-missing-service-account",
        TASKS,
        [set_("spec.agent", {"podName": "research-agent-0"})],
        "spec.agent.serviceAccountName: Required value",
    ),
    (
        "task-service-account-not-dns-1123",
        TASKS,
        [set_("spec.agent.serviceAccountName", "Research_Agent")],
        "spec.agent.serviceAccountName in body should match",
    ),
    (
        "task-pod-name-not-dns-1123",
        TASKS,
        [set_("spec.agent.podName", "agent pod")],
        "spec.agent.podName in body should match",
    ),
    ("task-missing-intent", TASKS, [drop("spec.intent")], "spec.intent: Required value"),
    (
        "task-empty-intent",
        TASKS,
        [set_("spec.intent", "")],
        "spec.intent in body should be at least 1 chars long",
    ),
    (
        "task-intent-over-256-chars",
        TASKS,
        [set_("spec.intent", "x" * 257)],
        "spec.intent: Too long: may not be more than 256",
    ),
    (
        "task-unknown-data-class",
        TASKS,
        [set_("spec.dataClass", "secret")],
        'spec.dataClass: Unsupported value: "secret": supported values: "public", "internal", '
        '"confidential", "restricted"',
    ),
    (
        "task-ttl-in-days",
        TASKS,
        [set_("spec.ttl", "1d")],
        "spec.ttl in body should match '^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$'",
    ),
    (
        "task-ttl-negative",
        TASKS,
        [set_("spec.ttl", "-5m")],
        "spec.ttl in body should match",
    ),
    ("task-ttl-zero", TASKS, [set_("spec.ttl", "0s")], "spec.ttl must be a positive duration"),
    (
        "task-credential-ttl-bad-format",
        TASKS,
        [set_("spec.credentialTTL", "five minutes")],
        "spec.credentialTTL in body should match",
    ),
    (
        "task-credential-ttl-longer-than-ttl",
        TASKS,
        [set_("spec.ttl", "5m"), set_("spec.credentialTTL", "1h")],
        "spec.credentialTTL: Invalid value: spec.credentialTTL must not be longer than spec.ttl",
    ),
    (
        "task-credential-ttl-longer-than-default-ttl",
        TASKS,
        [drop("spec.ttl"), set_("spec.credentialTTL", "31m")],
        "spec.credentialTTL must not be longer than spec.ttl",
    ),
    (
        "task-delegated-from-not-a-name",
        TASKS,
        [set_("spec.delegatedFrom", "Parent Task")],
        "spec.delegatedFrom in body should match",
    ),
    (
        "task-completed-not-boolean",
        TASKS,
        [set_("spec.completed", "yes")],
        "spec.completed in body must be of type boolean",
    ),
    (
        "task-name-over-63-chars",
        TASKS,
        [set_("metadata.name", "t" * 64)],
        "metadata.name: Invalid value: metadata.name must be at most 63 characters: "
        "it is used as the label value taskwarden.dev/task=<name> and in the Secret name "
        "<name>-credential",
    ),
    # AgentPolicy
    ("policy-missing-rules", POLICIES, [drop("spec.rules")], "spec.rules: Required value"),
    (
        "policy-empty-rules",
        POLICIES,
        [set_("spec.rules", [])],
        "spec.rules in body should have at least 1 items",
    ),
    (
        "policy-empty-subjects",
        POLICIES,
        [set_("spec.subjects.serviceAccounts", [])],
        "spec.subjects.serviceAccounts in body should have at least 1 items",
    ),
    (
        "policy-rule-empty-audiences",
        POLICIES,
        [set_(f"{_RULE0}.audiences", [])],
        "spec.rules[0].audiences in body should have at least 1 items",
    ),
    (
        "policy-unknown-approval",
        POLICIES,
        [set_(f"{_RULE0}.approval", "maybe")],
        'spec.rules[0].approval: Unsupported value: "maybe": supported values: "none", "required"',
    ),
    (
        "policy-unknown-max-data-class",
        POLICIES,
        [set_(f"{_RULE0}.maxDataClass", "top-secret")],
        'spec.rules[0].maxDataClass: Unsupported value: "top-secret"',
    ),
    (
        "policy-max-credential-ttl-over-max-ttl",
        POLICIES,
        [set_("spec.maxTTL", "10m"), set_("spec.maxCredentialTTL", "1h")],
        "spec.maxCredentialTTL: Invalid value: spec.maxCredentialTTL must not be "
        "longer than spec.maxTTL",
    ),
    (
        "policy-approval-required-without-approvers",
        POLICIES,
        [set_(f"{_RULE0}.approval", "required")],
        "spec.approvers: Required value: spec.approvers must list at least one approver when a "
        "rule has approval: required",
    ),
    (
        "policy-approval-required-with-empty-approvers",
        POLICIES,
        [set_(f"{_RULE0}.approval", "required"), set_("spec.approvers", [])],
        "spec.approvers must list at least one approver",
    ),
    (
        "policy-approver-without-kind",
        POLICIES,
        [set_("spec.approvers", ["alice"])],
        "spec.approvers[0] in body should match '^(user|group):\\S+$'",
    ),
    (
        "policy-delegation-too-deep",
        POLICIES,
        [set_("spec.delegation", {"allowed": True, "maxDepth": 17})],
        "spec.delegation.maxDepth in body should be less than or equal to 16",
    ),
    (
        "policy-approval-ttl-bad-format",
        POLICIES,
        [set_("spec.approvalTTL", "15 minutes")],
        "spec.approvalTTL in body should match",
    ),
    # AgentApproval
    (
        "approval-missing-task-name",
        APPROVALS,
        [drop("spec.taskName")],
        "spec.taskName: Required value",
    ),
    (
        "approval-unknown-decision",
        APPROVALS,
        [set_("spec.decision", "maybe")],
        'spec.decision: Unsupported value: "maybe": supported values: "approve", "deny"',
    ),
    (
        "approval-spec-hash-not-sha256",
        APPROVALS,
        [set_("spec.specHash", "md5:abc")],
        "spec.specHash in body should match '^sha256:[0-9a-f]{64}$'",
    ),
    (
        "approval-reason-too-long",
        APPROVALS,
        [set_("spec.reason", "r" * 1025)],
        "spec.reason: Too long: may not be more than 1024",
    ),
]


@pytest.mark.parametrize(
    ("plural", "mutations", "expected"),
    [pytest.param(p, m, e, id=i) for i, p, m, e in INVALID_ON_CREATE],
)
def test_invalid_object_is_rejected_on_create(
    bare_apiserver: client.CustomObjectsApi,
    namespace: str,
    plural: str,
    mutations: list[Mutation],
    expected: str,
) -> None:
    body = BASE[plural]()
    for mutate in mutations:
        mutate(body)
    message = rejection(lambda: create(bare_apiserver, namespace, plural, body))
    assert expected in message
    # CEL rules guard duration() so a malformed value gets only the schema's own message.
    assert "type conversion error" not in message
    assert f'{KIND_OF[plural]}.{GROUP} "{body["metadata"]["name"]}" is invalid' in message


# --------------------------------------------------------------------------- rejected on update

INVALID_ON_UPDATE: list[tuple[str, str, list[Mutation], Body, str]] = [
    (
        "task-intent-changed",
        TASKS,
        [],
        {"spec": {"intent": "something else"}},
        "spec.intent: Forbidden: spec.intent is immutable",
    ),
    (
        "task-completed-reopened",
        TASKS,
        [set_("spec.completed", True)],
        {"spec": {"completed": False}},
        "spec.completed: Forbidden: spec.completed may only change from false to true",
    ),
    (
        "task-scopes-widened",
        TASKS,
        [],
        {"spec": {"scopes": [{"tool": "github", "actions": ["admin"], "resources": ["*"]}]}},
        "spec.scopes: Forbidden: spec.scopes is immutable",
    ),
    (
        "task-audiences-changed",
        TASKS,
        [],
        {"spec": {"audiences": ["https://evil.example"]}},
        "spec.audiences: Forbidden: spec.audiences is immutable",
    ),
    (
        "task-pod-name-added",
        TASKS,
        [],
        {"spec": {"agent": {"podName": "research-agent-0"}}},
        "spec.agent: Forbidden: spec.agent is immutable",
    ),
    (
        "task-service-account-changed",
        TASKS,
        [],
        {"spec": {"agent": {"serviceAccountName": "admin-agent"}}},
        "spec.agent: Forbidden: spec.agent is immutable",
    ),
    (
        "task-data-class-raised",
        TASKS,
        [],
        {"spec": {"dataClass": "restricted"}},
        "spec.dataClass: Forbidden: spec.dataClass is immutable",
    ),
    (
        "task-ttl-extended",
        TASKS,
        [],
        {"spec": {"ttl": "24h"}},
        "spec.ttl: Forbidden: spec.ttl is immutable",
    ),
    (
        "task-credential-ttl-removed",
        TASKS,
        [],
        {"spec": {"credentialTTL": None}},
        "spec.credentialTTL: Forbidden: spec.credentialTTL is immutable",
    ),
    (
        "task-delegated-from-added",
        TASKS,
        [],
        {"spec": {"delegatedFrom": "other-task"}},
        "spec.delegatedFrom: Forbidden: spec.delegatedFrom is immutable",
    ),
    (
        "task-delegated-from-removed",
        TASKS,
        [set_("spec.delegatedFrom", "parent")],
        {"spec": {"delegatedFrom": None}},
        "spec.delegatedFrom: Forbidden: spec.delegatedFrom is immutable",
    ),
    (
        "approval-decision-flipped",
        APPROVALS,
        [],
        {"spec": {"decision": "deny"}},
        "spec: Forbidden: spec is immutable: an AgentApproval is bound to one task spec",
    ),
    (
        "approval-rebound-to-another-spec",
        APPROVALS,
        [],
        {"spec": {"specHash": "sha256:" + "cd" * 32}},
        "spec: Forbidden: spec is immutable",
    ),
    (
        "approval-reason-added",
        APPROVALS,
        [],
        {"spec": {"reason": "afterthought"}},
        "spec: Forbidden: spec is immutable",
    ),
]


@pytest.mark.parametrize(
    ("plural", "setup", "patch", "expected"),
    [pytest.param(p, s, b, e, id=i) for i, p, s, b, e in INVALID_ON_UPDATE],
)
def test_invalid_update_is_rejected(
    bare_apiserver: client.CustomObjectsApi,
    namespace: str,
    plural: str,
    setup: list[Mutation],
    patch: Body,
    expected: str,
) -> None:
    body = BASE[plural]()
    for mutate in setup:
        mutate(body)
    name = create(bare_apiserver, namespace, plural, body)["metadata"]["name"]
    message = rejection(
        lambda: bare_apiserver.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, patch
        )
    )
    assert expected in message


def test_task_replace_with_changed_spec_is_rejected(
    bare_apiserver: client.CustomObjectsApi, namespace: str
) -> None:
    current = create(bare_apiserver, namespace, TASKS, task())
    current["spec"]["intent"] = "exfiltrate everything"
    current["spec"]["completed"] = True
    message = rejection(
        lambda: bare_apiserver.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, TASKS, "triage", current
        )
    )
    assert "spec.intent: Forbidden: spec.intent is immutable" in message


def test_status_phase_outside_the_enum_is_rejected(
    bare_apiserver: client.CustomObjectsApi, namespace: str
) -> None:
    create(bare_apiserver, namespace, TASKS, task())
    message = rejection(
        lambda: bare_apiserver.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, TASKS, "triage", {"status": {"phase": "Resurrected"}}
        )
    )
    assert 'status.phase: Unsupported value: "Resurrected"' in message
