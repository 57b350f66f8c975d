"""The naive kopf operator of issue 13: what a user writes in about 20 lines. kopf defaults, no
webhooks: on create, one Secret owned by the task, then `status.phase: Active`.

Run: kopf run bench/naive/operator.py --standalone -A
NAIVE_SECRET_BYTES (JSON {key: decoded bytes}) sizes the Secret like a Taskwarden credential's.
"""

import base64
import json
import os
import secrets

import kopf
import kubernetes

SIZES = json.loads(os.environ.get("NAIVE_SECRET_BYTES") or '{"token": 700}')
kubernetes.config.load_kube_config()


@kopf.on.create("bench.taskwarden.dev", "v1", "naivetasks")
def create(name: str, namespace: str, body: kopf.Body, patch: kopf.Patch, **_: object) -> None:
    data = {k: base64.b64encode(secrets.token_bytes(n)).decode() for k, n in SIZES.items()}
    secret = {"metadata": {"name": f"{name}-credential"}, "type": "Opaque", "data": data}
    kopf.adopt(secret, owner=body)
    try:
        kubernetes.client.CoreV1Api().create_namespaced_secret(namespace, secret)
    except kubernetes.client.ApiException as e:
        if e.status != 409:  # already made before a restart
            raise
    patch.status["phase"] = "Active"
