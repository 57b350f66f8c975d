"""The ledger of live credentials: its record format, its shards, and the sweep's judgement.

What for: a credential's Secret and its task's status can both vanish while no operator runs
(the task or its namespace deleted, garbage collection removing the Secret), and then nothing
would tell the next operator which jti to put on the revocation list. The ledger is written
before a credential exists, kept apart from everything garbage collection removes (ConfigMaps
in the operator namespace, see `taskwarden.ledger`), and an entry leaves it only once its jti is
listed, or once it has expired.

Who calls it: `taskwarden.ledger` (the store) encodes and decodes entries; tasks/issue.py makes
an `Entry` per token; tasks/sweep.py asks `judge` what to do with each entry.

Pure: no kopf, no Kubernetes client; time comes in as `now` (unix seconds).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from taskwarden import timeutil

SHARDS: Final = 16
"""Groups of ledger ConfigMaps, one per task shard modulo 16 (taskwarden.ledger.Ledger.shard_for),
so that with sharded replicas each ConfigMap has one writer."""
SUBSHARDS: Final = 32
"""ConfigMaps per group: a task's entries go to `taskwarden-ledger-NN-MM`, MM from its UID
(`sub_of`). Tasks of one namespace share a group, so without this a busy namespace filled one
ConfigMap: about 5,000 live tasks overflowed its 1 MiB and issuance stopped. At ~150 bytes an
entry, 32 ConfigMaps hold ~200,000 entries per group (100,000 tasks of one namespace, each with
a rotated-out token still valid), and each write (a whole ConfigMap) stays 32 times smaller."""
PREFIX: Final = "taskwarden-ledger-"
BACKEND_JWT: Final = "jwt"

KEEP: Final = "keep"
"""The entry names the task's current token, or one a rotation replaced that has not expired."""
DROP: Final = "drop"
"""The token has expired: no one can use it, the entry may go without listing."""
REVOKE: Final = "revoke"
"""Task gone, replaced (another UID), not Active, or the token was never the task's current
one after being written (a crash or a lost write between ledger and status): list, then drop."""


@dataclass(frozen=True)
class Entry:
    jti: str
    exp: float
    iat: float
    uid: str
    namespace: str
    name: str
    backend: str = BACKEND_JWT


def shard_names() -> tuple[str, ...]:
    """The 16 ConfigMaps of versions before SUBSHARDS (`taskwarden-ledger-NN`): read, and
    emptied as their entries are listed or expire, never written with new entries."""
    return tuple(f"{PREFIX}{i:02d}" for i in range(SHARDS))


def store_name(group: int, uid: str) -> str:
    """The ConfigMap of a task's entries: its group (task shard modulo SHARDS), then its UID."""
    return f"{PREFIX}{group % SHARDS:02d}-{sub_of(uid):02d}"


def all_names() -> tuple[str, ...]:
    """Every ConfigMap the ledger may use: the RBAC role names them, a load reads them."""
    subs = tuple(f"{PREFIX}{g:02d}-{m:02d}" for g in range(SHARDS) for m in range(SUBSHARDS))
    return shard_names() + subs


def sub_of(uid: str) -> int:
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[4:8], "big") % SUBSHARDS


def shard_of(uid: str) -> str:
    """Where versions before sharding put a task's entries (by UID alone)."""
    n = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "big") % SHARDS
    return f"{PREFIX}{n:02d}"


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def encode(e: Entry) -> str:
    """The ConfigMap value of an entry (its key is the jti)."""
    doc = {
        "exp": _num(e.exp),
        "iat": _num(e.iat),
        "uid": e.uid,
        "ns": e.namespace,
        "name": e.name,
        "backend": e.backend,
    }
    return json.dumps(doc, separators=(",", ":"))


def decode(jti: str, value: str) -> Entry:
    """An entry from its ConfigMap key and value; ValueError naming the field otherwise."""
    try:
        doc = json.loads(value)
    except ValueError as err:
        raise ValueError(f"ledger entry {jti}: value is not JSON") from err
    if not isinstance(doc, dict):
        raise ValueError(f"ledger entry {jti}: value must be a JSON object")
    for key in ("exp", "iat"):
        v = doc.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"ledger entry {jti}: {key} must be unix seconds")
    for key in ("uid", "ns", "name", "backend"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ValueError(f"ledger entry {jti}: {key} must be a non-empty string")
    return Entry(
        jti,
        float(doc["exp"]),
        float(doc["iat"]),
        doc["uid"],
        doc["ns"],
        doc["name"],
        doc["backend"],
    )


def entries(data: Mapping[str, str]) -> tuple[list[Entry], list[str]]:
    """The entries of one shard's data, and the keys that did not decode (kept, never dropped)."""
    good: list[Entry] = []
    bad: list[str] = []
    for jti, value in data.items():
        try:
            good.append(decode(jti, value))
        except ValueError:
            bad.append(jti)
    return good, bad


def judge(entry: Entry, task: Mapping[str, Any] | None, now: float) -> str:
    """KEEP, DROP or REVOKE for one entry, given its task (a body, or the brief form of
    kube.list_tasks_brief; None when it does not exist)."""
    if entry.exp <= now:
        return DROP
    md = (task or {}).get("metadata") or {}
    st = (task or {}).get("status") or {}
    if task is None or md.get("uid") != entry.uid or st.get("phase") != "Active":
        return REVOKE
    cred = st.get("credential") or {}
    if cred.get("jti") == entry.jti:
        return KEEP
    issued = cred.get("issuedAt")
    if cred.get("jti") and issued and entry.iat < timeutil.parse(issued):
        return KEEP  # replaced by a rotation: it lives out its overlap, as a mounted file may lag
    return REVOKE
