"""The audit trail: one JSON line per decision on the `taskwarden.audit` logger.

Called by the reconciler and the admission service. Stdlib only. Records carry jti and keyID,
never a token.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger("taskwarden.audit")


@dataclass(frozen=True)
class AuditRecord:
    event: str
    """issued | rotated | denied | pending | awaiting-approval | revoked | completed | expired
    | admission-denied | approved."""
    namespace: str
    name: str
    uid: str = ""
    spiffeID: str = ""
    pod: Mapping[str, str] | None = None
    requester: str = ""
    policy: str | None = None
    rule: int | None = None
    scopes: Sequence[str] = field(default_factory=tuple)
    dataClass: str = ""
    jti: str = ""
    keyID: str = ""
    issuedAt: str = ""
    expiresAt: str = ""
    reason: str = ""
    message: str = ""
    approver: str = ""


def now_rfc3339(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_json(record: AuditRecord, now: float) -> str:
    body: dict[str, Any] = {"time": now_rfc3339(now), **asdict(record)}
    body["task"] = {"namespace": record.namespace, "name": record.name, "uid": record.uid}
    body["scopes"] = list(record.scopes)
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def emit(record: AuditRecord, now: float) -> None:
    logger.info(to_json(record, now))
