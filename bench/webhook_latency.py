"""Admission webhook latency.

1. In process: the pure review functions (admission.review) called N times per webhook with
   representative requests and pre-read facts; p50/p99 per call.
2. Through the apiserver: sequential AgentTask creates by the agent's pod-bound ServiceAccount
   token, with the operator's webhooks registered and without them (configurations removed,
   then restored), in the same run against the same local control plane; p50/p99 and the ratio
   of medians. The tasks name a pod that does not exist, so they stay Pending and the
   reconciler's issuing work does not dominate what is measured.
3. With --modes: the same creates with the operator in each admission mode, restarted with
   TASKWARDEN_ADMISSION_MODE=webhook, then =cel (admission/cel.py: the usual case is decided
   in the API server and calls no webhook), alternating within each repeat.
Each is repeated; medians of the repeats are reported as a markdown table.

Run: .venv/bin/python bench/webhook_latency.py [--reviews 10000] [--tasks 200] [--repeat 3]
     [--modes]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from common import environment, h, machine, median, pct
from taskwarden import admission, names, policy

NS = "bench-admission"
AGENT = f"system:serviceaccount:{NS}:agent"


# --------------------------------------------------------------------------- in process


def samples() -> dict[str, tuple[dict[str, Any], admission.Facts]]:
    user = {
        "username": AGENT,
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NS}"],
        "extra": {
            admission.POD_NAME_EXTRA: ["agent-0"],
            admission.POD_UID_EXTRA: ["5f0c7d8e-0000-4000-8000-000000000000"],
        },
    }

    def body(kind: str, obj: dict[str, Any], who: dict[str, Any] = user) -> dict[str, Any]:
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "kind": {"kind": kind},
                "operation": "CREATE",
                "namespace": NS,
                "userInfo": who,
                "object": obj,
            },
        }

    task = h.task_body("t", pod_name="agent-0")
    task["metadata"]["namespace"] = NS
    stamp = admission.stamp_text(
        {
            "username": AGENT,
            "groups": user["groups"],
            "podName": "agent-0",
            "podUID": user["extra"][admission.POD_UID_EXTRA][0],
        }
    )
    stamped = json.loads(json.dumps(task))
    stamped["metadata"]["annotations"] = {names.REQUESTER_ANNOTATION: stamp}
    policies = [h.policy_body(f"p{i}", accounts=(f"sa{i}",)) for i in range(20)]
    policies.append(h.policy_body("agents", approval="required"))
    for p in policies:
        p["metadata"]["namespace"] = NS
    free = {"t-credential": None}  # the credential Secret name is free
    facts = admission.Facts(policies=tuple(policies), secrets=free)

    parent = json.loads(json.dumps(stamped))
    parent["metadata"]["name"] = "parent"
    parent["status"] = {"phase": "Active", "decision": {"policy": "agents"}}
    delegating = [h.policy_body("agents", extra={"delegation": {"allowed": True, "maxDepth": 2}})]
    delegating[0]["metadata"]["namespace"] = NS
    child = json.loads(json.dumps(stamped))
    child["spec"]["delegatedFrom"] = "parent"

    alice = {"username": "alice", "groups": ["sre"]}
    target = json.loads(json.dumps(stamped))
    target["status"] = {"phase": "AwaitingApproval", "specHash": policy.spec_hash(task["spec"])}
    target["metadata"]["uid"] = "uid-t"  # an approval binds to the task's UID
    approval = {
        "metadata": {
            "name": "a",
            "namespace": NS,
            "annotations": {names.APPROVER_ANNOTATION: admission.stamp_text(alice)},
        },
        "spec": {
            "taskName": "t",
            "taskUID": "uid-t",
            "specHash": policy.spec_hash(task["spec"]),
            "decision": "approve",
        },
    }
    pod = {
        "metadata": {"name": "agent-0", "annotations": {names.TASK_ANNOTATION: "t"}},
        "spec": {
            "serviceAccountName": "agent",
            "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
            "volumes": [
                {"name": "taskwarden-credential", "secret": {"secretName": "t-credential"}}
            ],
        },
    }
    return {
        admission.MUTATE_TASKS: (body("AgentTask", task), admission.Facts()),
        admission.VALIDATE_TASKS: (body("AgentTask", stamped), facts),
        admission.VALIDATE_TASKS + " (delegated)": (
            body("AgentTask", child),
            admission.Facts(policies=tuple(delegating), tasks={"parent": parent}, secrets=free),
        ),
        admission.MUTATE_APPROVALS: (body("AgentApproval", approval, alice), admission.Facts()),
        admission.VALIDATE_APPROVALS: (
            body("AgentApproval", approval, alice),
            admission.Facts(policies=tuple(policies), tasks={"t": target}),
        ),
        admission.MUTATE_PODS: (body("Pod", pod), admission.Facts()),
        admission.VALIDATE_PODS: (
            body("Pod", pod),
            admission.Facts(tasks={"t": stamped}, secrets=free),
        ),
    }


def in_process(n: int) -> dict[str, tuple[float, float]]:
    """webhook -> (p50, p99) in microseconds; every response must be an allow."""
    out: dict[str, tuple[float, float]] = {}
    for label, (body, facts) in samples().items():
        webhook = label.split(" ")[0]
        assert admission.review(webhook, body, facts)["response"]["allowed"], label
        times: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            admission.review(webhook, body, facts)
            times.append((time.perf_counter_ns() - t0) / 1000)
        out[label] = (pct(times, 50), pct(times, 99))
    return out


# --------------------------------------------------------------------------- through the apiserver


def webhooks_called(api: client.ApiClient) -> bool:
    """A dry-run create as the admin is refused exactly when the webhooks are in force."""
    try:
        h.custom(api).create_namespaced_custom_object(
            h.GROUP, h.VERSION, NS, "agenttasks", h.task_body("probe"), dry_run="All"
        )
    except ApiException as e:
        if e.status == 403 and "taskwarden.dev" in (e.body or ""):
            return True
        raise
    return False


def remove_webhooks(api: client.ApiClient) -> list[tuple[str, dict[str, Any]]]:
    adm = client.AdmissionregistrationV1Api(api)
    saved: list[tuple[str, dict[str, Any]]] = []
    for kind, read, delete in (
        (
            "mutating",
            adm.read_mutating_webhook_configuration,
            adm.delete_mutating_webhook_configuration,
        ),
        (
            "validating",
            adm.read_validating_webhook_configuration,
            adm.delete_validating_webhook_configuration,
        ),
    ):
        body = api.sanitize_for_serialization(read("taskwarden"))
        body["metadata"] = {"name": "taskwarden", "labels": body["metadata"].get("labels")}
        saved.append((kind, body))
        delete("taskwarden")
    h.wait_for(lambda: not webhooks_called(api), timeout=30, interval=0.2, what="webhooks off")
    return saved


def restore_webhooks(api: client.ApiClient, saved: list[tuple[str, dict[str, Any]]]) -> None:
    adm = client.AdmissionregistrationV1Api(api)
    for kind, body in saved:
        if kind == "mutating":
            adm.create_mutating_webhook_configuration(body)
        else:
            adm.create_validating_webhook_configuration(body)
    h.wait_for(lambda: webhooks_called(api), timeout=30, interval=0.2, what="webhooks on")


def creates(agent: client.ApiClient, n: int, tag: str) -> list[float]:
    """Latency (ms) of n sequential AgentTask creates by the agent's ServiceAccount."""
    custom = client.CustomObjectsApi(agent)
    out: list[float] = []
    for i in range(n):
        body = h.task_body(f"{tag}-{i}", pod_name="ghost")  # Pending: little reconcile work
        t0 = time.perf_counter()
        custom.create_namespaced_custom_object(h.GROUP, h.VERSION, NS, "agenttasks", body)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def forged_refused_by(api: client.ApiClient) -> str:
    """Who refuses a forged requester stamp of the agent's own task: "policy" or "webhook"."""
    me = h.as_user(api, AGENT, group="system:masters")
    forged = h.task_body("probe-forged")
    forged["metadata"]["annotations"] = {names.REQUESTER_ANNOTATION: '{"username":"x"}'}
    try:
        h.custom(me).create_namespaced_custom_object(
            h.GROUP, h.VERSION, NS, "agenttasks", forged, dry_run="All"
        )
    except ApiException as e:
        return "policy" if h.POLICY_REFUSAL in (e.body or "") else "webhook"
    return ""


def switch_mode(api: client.ApiClient, op: h.OperatorProcess, mode: str) -> None:
    """Restart the operator in `mode` and wait until the API server applies it."""
    op.stop()
    op.env["TASKWARDEN_ADMISSION_MODE"] = mode
    op.start()
    want = "policy" if mode == "cel" else "webhook"
    h.wait_for(lambda: forged_refused_by(api) == want, timeout=60, interval=0.2, what=mode)
    if mode == "cel":
        h.wait_for(lambda: h.cel_policies_active(api, NS), timeout=60, interval=0.2, what="MAP")


def by_mode(
    api: client.ApiClient, op: h.OperatorProcess, agent: client.ApiClient, tasks: int, repeat: int
) -> dict[str, tuple[float, float, float]]:
    """mode -> (p50, p99 in ms, task webhook calls per create): medians over the repeats."""
    got: dict[str, list[tuple[float, float, float]]] = {"webhook": [], "cel": []}
    for run in range(repeat):
        for mode in got:
            switch_mode(api, op, mode)
            creates(agent, 10, f"warm-{mode}{run}")
            calls0 = op.metric("taskwarden_admission_requests_total")
            lat = creates(agent, tasks, f"{mode}{run}")
            calls = (op.metric("taskwarden_admission_requests_total") - calls0) / tasks
            got[mode].append((pct(lat, 50), pct(lat, 99), calls))
    return {
        mode: tuple(median([r[i] for r in rows]) for i in range(3))  # type: ignore[misc]
        for mode, rows in got.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reviews", type=int, default=10_000)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", action="store_true", help="also webhook vs CEL admission mode")
    args = ap.parse_args()
    modes: dict[str, tuple[float, float, float]] = {}

    runs = [in_process(args.reviews) for _ in range(args.repeat)]
    rows = []
    for label in runs[0]:
        rows.append(
            (label, median([r[label][0] for r in runs]), median([r[label][1] for r in runs]))
        )

    with_p50, with_p99, without_p50, without_p99, server_ms = [], [], [], [], []
    # Sections 1-2 measure the webhooks themselves: webhook mode (every create calls them).
    with environment(TASKWARDEN_ADMISSION_MODE="webhook") as (cp, api, op):
        h.agent_namespace(api, NS)
        h.pod(api, NS, "agent-0", "agent")
        h.create(api, NS, "agentpolicies", h.policy_body())
        h.wait_for(lambda: webhooks_called(api), timeout=60, interval=0.2, what="webhooks on")
        agent = h.agent_api(cp, api, NS, "agent", "agent-0")
        creates(agent, 20, "warm")
        for run in range(args.repeat):
            c0 = op.metric("taskwarden_admission_duration_seconds_count")
            s0 = op.metric("taskwarden_admission_duration_seconds_sum")
            lat = creates(agent, args.tasks, f"with{run}")
            c1 = op.metric("taskwarden_admission_duration_seconds_count")
            s1 = op.metric("taskwarden_admission_duration_seconds_sum")
            with_p50.append(pct(lat, 50))
            with_p99.append(pct(lat, 99))
            server_ms.append((s1 - s0) / max(1.0, c1 - c0) * 1000)
            saved = remove_webhooks(api)
            lat = creates(agent, args.tasks, f"without{run}")
            without_p50.append(pct(lat, 50))
            without_p99.append(pct(lat, 99))
            restore_webhooks(api, saved)
        if args.modes:
            modes = by_mode(api, op, agent, args.tasks, args.repeat)

    print(f"## Admission webhook latency\n\nMachine: {machine()}\n")
    print(f"In process, {args.reviews} calls per webhook, median of {args.repeat} runs:\n")
    print("| webhook | p50 (µs) | p99 (µs) |\n|---|---:|---:|")
    for label, p50, p99 in rows:
        print(f"| {label} | {p50:.1f} | {p99:.1f} |")
    print(
        f"\nAgentTask create through the apiserver ({args.tasks} sequential creates by the "
        f"agent's pod-bound token, median of {args.repeat} runs; both webhooks of the kind, "
        "including their API reads):\n"
    )
    print("| | p50 (ms) | p99 (ms) |\n|---|---:|---:|")
    print(f"| with webhooks | {median(with_p50):.2f} | {median(with_p99):.2f} |")
    print(f"| without webhooks | {median(without_p50):.2f} | {median(without_p99):.2f} |")
    print(
        f"| ratio | {median(with_p50) / median(without_p50):.2f}x | "
        f"{median(with_p99) / median(without_p99):.2f}x |"
    )
    print(f"\nIn the operator, mean time per review (read + decide): {median(server_ms):.2f} ms")
    if modes:
        print(
            f"\nAgentTask create by admission mode ({args.tasks} sequential creates of the "
            f"agent's own task, median of {args.repeat} runs, modes alternating; calls = "
            "admission webhook calls per create, from the operator's counter):\n"
        )
        print("| mode | p50 (ms) | p99 (ms) | calls |\n|---|---:|---:|---:|")
        for mode, (p50, p99, calls) in modes.items():
            print(f"| {mode} | {p50:.2f} | {p99:.2f} | {calls:.2f} |")
        w, c = modes["webhook"], modes["cel"]
        print(f"| webhook / cel | {w[0] / c[0]:.2f}x | {w[1] / c[1]:.2f}x | |")


if __name__ == "__main__":
    main()
