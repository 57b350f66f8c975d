"""Stamping: who created an object, written by admission into an annotation no client can set.

Used by task_review (`taskwarden.dev/requester`, with the pod extras of a pod-bound token) and
approval_review (`taskwarden.dev/approver`). The mutating webhook adds the stamp (`stamp`); the
validating webhook checks the stored value is exactly what admission stamps for this user
(`check_stamped`), so a client that bypassed or raced the mutation is refused. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from taskwarden.admission import envelope


def principal(req: envelope.Request, *, with_pod: bool) -> dict[str, Any]:
    """The stamp for the authenticated user: username, groups and (tasks) the pod extras."""
    if not req.username:
        raise envelope.Denied(
            "request.userInfo.username is empty: only an authenticated user can do this"
        )
    stamp: dict[str, Any] = {"username": req.username, "groups": list(req.groups)}
    if with_pod:
        for key, extra in (
            ("podName", envelope.POD_NAME_EXTRA),
            ("podUID", envelope.POD_UID_EXTRA),
        ):
            values = req.extra.get(extra) or ()
            if values:
                stamp[key] = values[0]
    return stamp


def stamp_text(stamp: Mapping[str, Any]) -> str:
    return json.dumps(stamp, sort_keys=True, separators=(",", ":"))


def _same(raw: Any, stamp: Mapping[str, Any]) -> bool:
    if not isinstance(raw, str):
        return False
    try:
        return bool(json.loads(raw) == stamp)
    except ValueError:
        return False


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def stamp(req: envelope.Request, key: str, value: Mapping[str, Any], who: str) -> envelope.Outcome:
    """Mutating: add the stamp; refuse a client-set value; restore it if an update dropped it."""
    field_ = f"metadata.annotations[{key}]"
    annotations = envelope.annotations_of(req.obj)
    if req.operation == "UPDATE":
        old = envelope.annotations_of(req.old, "request.oldObject").get(key)
        if key in annotations or old is None:
            return (
                envelope.ALLOW
            )  # a change is refused by the validating webhook, with the same message
        return envelope.Outcome(True, patch=_add_annotation(req.obj, key, old))
    if req.operation != "CREATE":
        return envelope.ALLOW
    if key in annotations:
        if _same(annotations[key], value):
            return envelope.ALLOW
        raise envelope.Denied(
            f"{field_}: set by admission from the authenticated {who}; clients cannot set it"
        )
    return envelope.Outcome(True, patch=_add_annotation(req.obj, key, stamp_text(value)))


def _add_annotation(obj: Mapping[str, Any], key: str, value: str) -> tuple[dict[str, Any], ...]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return ({"op": "add", "path": "/metadata", "value": {"annotations": {key: value}}},)
    if not isinstance(metadata.get("annotations"), Mapping):
        return ({"op": "add", "path": "/metadata/annotations", "value": {key: value}},)
    return ({"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value},)


def check_stamped(req: envelope.Request, key: str, value: Mapping[str, Any], who: str) -> None:
    """Validating: the stored value must be exactly what admission stamps for this user."""
    field_ = f"metadata.annotations[{key}]"
    annotations = envelope.annotations_of(req.obj)
    if req.operation == "UPDATE":
        if annotations.get(key) != envelope.annotations_of(req.old, "request.oldObject").get(key):
            raise envelope.Denied(
                f"{field_}: set by admission from the authenticated {who} at creation; "
                "clients cannot change or remove it"
            )
        return
    if key not in annotations:
        raise envelope.Denied(
            f"{field_}: missing; it is set by the mutating webhook from the authenticated {who}, "
            "and the object cannot be admitted without it"
        )
    if not _same(annotations[key], value):
        raise envelope.Denied(
            f"{field_}: set by admission from the authenticated {who}; clients cannot set it"
        )
