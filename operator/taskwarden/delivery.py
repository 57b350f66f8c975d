"""The credential Secret `<task>-credential`: its shape (pure) and its idempotent write.

Called by tasks/issue.py after the status names the new jti (status first, so a crash between
the two writes leaves a task whose Secret is missing — repaired on restart — never a token that
no status knows about). The ownerReference lets Kubernetes collect the Secret when the task is
deleted even while the operator is down; blockOwnerDeletion is off so deletion never waits on us.

A task with `spec.delivery: exchange` (`exchanged`) has no Secret at all: tasks/issue.py skips
`deliver`, and the pod gets its token from server/exchange.py.

The operator writes over and deletes only what it owns (`owned`): a Secret of type
`taskwarden.dev/credential` whose controller ownerReference is the task's UID. A Secret of the
same name that belongs to anyone else is never replaced (`NotOwned`) and never deleted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from taskwarden import names, timeutil
from taskwarden.kube import ApiError, Kube


class NotOwned(Exception):
    """`<task>-credential` exists and is not this task's credential Secret."""


def exchanged(spec: Mapping[str, Any]) -> bool:
    """`spec.delivery: exchange`: no Secret is ever written; the pod exchanges (server/exchange)."""
    return spec.get("delivery") == names.DELIVERY_EXCHANGE


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


def controller_uid(obj: Mapping[str, Any]) -> str:
    """The UID of the controller ownerReference of `obj` ('' when none)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return str(ref.get("uid") or "")
    return ""


def owned(secret: Mapping[str, Any], task_uid: str) -> bool:
    """Is `secret` the credential Secret of the task with `task_uid`? Only then may the
    operator replace or delete it."""
    return (
        bool(task_uid)
        and secret.get("type") == names.SECRET_TYPE
        and controller_uid(secret) == task_uid
    )


async def deliver(kube: Kube, body: Mapping[str, Any]) -> None:
    """Write the credential Secret; raise NotOwned when a Secret of that name is not ours."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    uid = controller_uid(body)
    try:
        await kube.put_secret(ns, body, may_replace=lambda found: owned(found, uid))
    except ApiError as e:
        if e.status != 409:
            raise
        raise NotOwned(
            f"Secret {name} exists in namespace {ns} and is not the credential Secret of this "
            f"task (type {names.SECRET_TYPE}, controller ownerReference uid {uid}); the "
            "operator never overwrites it"
        ) from None


async def remove(kube: Kube, namespace: str, task_name: str, task_uid: str) -> bool:
    """Delete `<task>-credential` only when it is this task's own (`owned`); True if deleted."""
    found = await kube.get_secret(namespace, secret_name(task_name))
    if found is None or not owned(found, task_uid):
        return False
    uid = (found.get("metadata") or {}).get("uid") or None
    return await kube.delete_secret(namespace, secret_name(task_name), uid=uid)


def _pointer(key: str) -> str:
    """An RFC 6901 JSON pointer token for a map key (annotation names hold '/')."""
    return key.replace("~", "~0").replace("/", "~1")


def renewal_patch(secret: Mapping[str, Any], old_jti: str) -> list[dict[str, Any]]:
    """The JSON patch that turns the credential Secret holding `old_jti` into `secret` (the
    rotated credential): its `test` operations make the apiserver refuse it unless the stored
    Secret is still of the credential type, controlled by this task, and holds `old_jti`."""
    md = secret["metadata"]
    ann = md["annotations"]
    jti_path = f"/metadata/annotations/{_pointer(names.JTI_ANNOTATION)}"
    exp_path = f"/metadata/annotations/{_pointer(names.EXP_ANNOTATION)}"
    return [
        {"op": "test", "path": "/type", "value": names.SECRET_TYPE},
        {"op": "test", "path": "/metadata/ownerReferences/0/controller", "value": True},
        {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": controller_uid(secret)},
        {"op": "test", "path": jti_path, "value": old_jti},
        {"op": "replace", "path": jti_path, "value": ann[names.JTI_ANNOTATION]},
        {"op": "add", "path": exp_path, "value": ann[names.EXP_ANNOTATION]},
        {"op": "replace", "path": "/data", "value": secret["data"]},
    ]


async def renew(kube: Kube, secret: Mapping[str, Any], old_jti: str) -> bool:
    """Rotate the token in a credential Secret this process knows holds `old_jti`, in one
    conditional write. False when the stored Secret is not that (gone, replaced, not ours):
    the caller then falls back to `deliver`, which reads and decides."""
    md = secret["metadata"]
    try:
        await kube.patch_secret(md["namespace"], md["name"], renewal_patch(secret, old_jti))
    except ApiError as e:
        if e.status in (404, 409, 422):
            return False
        raise
    return True
