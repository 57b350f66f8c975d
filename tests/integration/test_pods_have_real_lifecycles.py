"""Pods have real lifecycles on the local control plane: kube-scheduler binds them to the kwok
Node, kwok runs them, and deletion goes through graceful termination. Nobody patches a status."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client, watch

from taskwarden import controlplane
from tests.integration import helpers as h

LABELS = {"app": "web"}


def _deployment(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "web", "image": "busybox", "command": ["sleep", "1d"]}],
                },
            },
        },
    }


def _running_pods(api: client.ApiClient, ns: str) -> list[Any]:
    pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector="app=web").items
    return [
        p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
    ]


def test_the_kwok_node_is_ready_with_allocatable_resources(api: client.ApiClient) -> None:
    node = client.CoreV1Api(api).read_node(controlplane.NODE)
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert int(node.status.allocatable["pods"]) > 0


def test_deployment_pod_is_scheduled_running_and_replaced_after_graceful_deletion(
    api: client.ApiClient, namespace: str
) -> None:
    client.AppsV1Api(api).create_namespaced_deployment(namespace, _deployment("web"))
    (first,) = h.wait_for(lambda: _running_pods(api, namespace), what="a Running web pod")
    # The scheduler chose the node (the template names none) and kwok gave the pod an IP.
    assert first.spec.node_name == controlplane.NODE
    assert first.status.pod_ip
    ready = {c.type: c.status for c in first.status.conditions}
    assert ready["Ready"] == "True"
    name = first.metadata.name
    h.wait_for(
        lambda: (
            client.AppsV1Api(api)
            .read_namespaced_deployment(name="web", namespace=namespace)
            .status.available_replicas
            == 1
        ),
        what="Deployment web available",
    )

    # Watch the pod from before the delete: Terminating (deletionTimestamp, grace period kept)
    # is observed first, then kwok, as a kubelet would, finishes it and the pod is gone.
    seen: list[tuple[str, Any]] = []
    w = watch.Watch()
    started = threading.Event()

    def observe() -> None:
        started.set()
        for ev in w.stream(
            client.CoreV1Api(api).list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=first.metadata.resource_version,
            timeout_seconds=30,
        ):
            seen.append((ev["type"], ev["object"]))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=observe, daemon=True)
    t.start()
    started.wait(5)
    client.CoreV1Api(api).delete_namespaced_pod(name, namespace)
    t.join(30)
    types = [kind for kind, _ in seen]
    assert types[-1:] == ["DELETED"], types
    terminating = [o for kind, o in seen if kind == "MODIFIED" and o.metadata.deletion_timestamp]
    assert terminating, types
    assert terminating[0].metadata.deletion_grace_period_seconds == 30  # the default, not forced

    # The ReplicaSet replaces it with a new pod that runs too.
    (second,) = h.wait_for(lambda: _running_pods(api, namespace), what="a replacement pod")
    assert second.metadata.uid != first.metadata.uid


def test_job_pod_runs_to_completion(api: client.ApiClient, namespace: str) -> None:
    body = {
        "metadata": {"name": "once"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "once", "image": "busybox", "command": ["true"]}],
                }
            }
        },
    }
    client.BatchV1Api(api).create_namespaced_job(namespace, body)
    job = h.wait_for(
        lambda: (
            (j := client.BatchV1Api(api).read_namespaced_job("once", namespace)).status.succeeded
            and j
        ),
        what="Job once succeeded",
    )
    done = {c.type: c.status for c in job.status.conditions}
    assert done.get("Complete") == "True"
