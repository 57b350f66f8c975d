"""The hot-path bench's baseline (bench/naive, issue 13) really does what it claims: on create,
one Secret owned by the task with the requested data sizes, then status.phase Active."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from bench import procmem
from kubernetes import client

from taskwarden import controlplane
from tests.integration import helpers


def test_naive_operator_makes_an_owned_secret_and_sets_active(
    cluster: controlplane.ControlPlane, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    controlplane.install_crds(api, procmem.NAIVE)
    sizes = {"token": 700, "jwks.json": 225}
    naive = procmem.naive_operator(cluster.kubeconfig, tmp_path, json.dumps(sizes))
    naive.start()
    try:
        task = client.CustomObjectsApi(api).create_namespaced_custom_object(
            "bench.taskwarden.dev", "v1", namespace, "naivetasks",
            {"apiVersion": "bench.taskwarden.dev/v1", "kind": "NaiveTask",
             "metadata": {"name": "t"}, "spec": {"intent": "x"}},
        )  # fmt: skip
        secret = helpers.wait_for(
            lambda: helpers.secret_or_none(api, namespace, "t-credential"), what="naive Secret"
        )
        helpers.wait_for(
            lambda: (
                client.CustomObjectsApi(api)
                .get_namespaced_custom_object(
                    "bench.taskwarden.dev", "v1", namespace, "naivetasks", "t"
                )
                .get("status", {})
                .get("phase")
                == "Active"
            ),
            what="naive task Active",
        )
    finally:
        naive.stop()
    assert [o.uid for o in secret.metadata.owner_references] == [task["metadata"]["uid"]]
    assert {k: len(base64.b64decode(v)) for k, v in secret.data.items()} == sizes
