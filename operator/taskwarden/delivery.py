"""The credential Secret `<task>-credential`: its shape (pure) and its idempotent write.

Called by tasks/issue.py after the status names the new jti (status first, so a crash between
the two writes leaves a task whose Secret is missing — repaired on restart — never a token that
no status knows about). The ownerReference lets Kubernetes collect the Secret when the task is
deleted even while the operator is down; blockOwnerDeletion is off so deletion never waits on us.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from taskwarden import names, timeutil
from taskwarden.kube import Kube


def secret_name(task_name: str) -> str:
    return f"{task_name}-credential"


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def credential_secret(
    *,
    namespace: str,
    task_name: str,
    task_uid: str,
    token: str,
    jti: str,
    expires_at: float,
    spiffe_id: str,
    jwks: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": names.SECRET_TYPE,
        "metadata": {
            "name": secret_name(task_name),
            "namespace": namespace,
            "labels": {names.TASK_LABEL: task_name, "app.kubernetes.io/managed-by": "taskwarden"},
            # jti and expiry are not secret: they let the sweeper check a Secret without
            # decoding the token.
            "annotations": {
                names.JTI_ANNOTATION: jti,
                names.EXP_ANNOTATION: timeutil.rfc3339(expires_at),
            },
            "ownerReferences": [
                {
                    "apiVersion": names.API_VERSION,
                    "kind": "AgentTask",
                    "name": task_name,
                    "uid": task_uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "data": {
            "token": _b64(token),
            "expires_at": _b64(timeutil.rfc3339(expires_at)),
            "spiffe_id": _b64(spiffe_id),
            "jwks.json": _b64(json.dumps(jwks, sort_keys=True)),
        },
    }


async def deliver(kube: Kube, body: Mapping[str, Any]) -> None:
    await kube.put_secret(body["metadata"]["namespace"], body)
