"""The credential Secret: contract keys, type, label, controller owner, no blocking GC."""

from __future__ import annotations

import base64
import json

from taskwarden import audit, delivery


def test_secret_matches_the_contract() -> None:
    body = delivery.credential_secret(
        namespace="ns",
        task_name="t",
        task_uid="uid-1",
        token="header.payload.sig",
        jti="j1",
        expires_at=1_800_000_000,
        spiffe_id="spiffe://cluster.local/ns/ns/sa/a",
        jwks={"keys": []},
    )
    md = body["metadata"]
    assert md["name"] == "t-credential" and body["type"] == "taskwarden.dev/credential"
    assert md["labels"]["taskwarden.dev/task"] == "t"
    owner = md["ownerReferences"][0]
    assert owner["controller"] is True and owner["blockOwnerDeletion"] is False
    assert owner["uid"] == "uid-1" and owner["kind"] == "AgentTask"
    data = {k: base64.b64decode(v).decode() for k, v in body["data"].items()}
    assert data == {
        "token": "header.payload.sig",
        "expires_at": "2027-01-15T08:00:00Z",
        "spiffe_id": "spiffe://cluster.local/ns/ns/sa/a",
        "jwks.json": json.dumps({"keys": []}),
    }
    # Only non-secret facts in metadata.
    assert "header.payload.sig" not in json.dumps(md)


def test_audit_record_is_one_json_line_with_task_identity() -> None:
    rec = audit.AuditRecord(
        event="issued",
        namespace="ns",
        name="t",
        uid="u",
        jti="j1",
        scopes=("github:read:repo:a/b",),
    )
    line = audit.to_json(rec, 1_800_000_000.0)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["event"] == "issued" and doc["task"] == {"namespace": "ns", "name": "t", "uid": "u"}
    assert doc["time"].startswith("2027-01-15T08:00:00")
    assert "token" not in doc
