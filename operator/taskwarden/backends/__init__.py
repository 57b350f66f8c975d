"""Credential backends: what issues, rotates, revokes and lists a task's downstream credential.

The interface (`Backend`) is four verbs, named by what they do, like SPIRE's plugins:

- `issue(task)`: create the credential for a decided task; returns it (never logged) with the
  grants it carries and its expiry. Idempotent per task: issuing again (a rotation, a reissue
  after a crash) replaces the secret part and the expiry.
- `rotate(task)`: a new secret and expiry for the same credential.
- `revoke(task_uid)`: idempotent; also cuts sessions already open with the credential.
- `list()`: what exists on the backend, each with the UID of its task, for the orphan sweep.

The signed JWT stays every task's identity credential and the default backend (`jwt`: nothing
downstream; tasks/issue.py signs it). A policy rule names another backend for its tool
(`backend: {name: postgres, secretRef: ...}`, policy/rules.py); its settings come from a Secret in
the operator namespace labelled `taskwarden.dev/backend=<name>` (`registry.py`). docs/backends.md.

A service layer (like delivery.py and ledger.py): tasks/backing.py calls it from the issue,
revoke and sweep paths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from taskwarden.policy import pgscopes


@dataclass(frozen=True)
class TaskRef:
    """What a backend knows of a decided task: who, which scopes it was allowed, until when."""

    uid: str
    namespace: str
    name: str
    triples: tuple[tuple[str, str, str], ...]
    """The (tool, action, resource) triples of the task's scopes for this backend's tool."""
    expires_at: float
    """Unix seconds; the credential is valid until then at most (the JWT's exp)."""


@dataclass(frozen=True)
class Issued:
    credential: str
    """The name of what was issued (a role): goes to status, audit and metrics labels never."""
    expires_at: float
    grants: tuple[str, ...]
    """What it may do, spelled for audit (`SELECT ON sales.public.orders`)."""
    secret_data: Mapping[str, str] = field(repr=False, default_factory=dict)
    """Keys for the credential Secret (a DSN, a password): never logged, never in status."""


Held = pgscopes.Held


class Backend(Protocol):
    name: str

    async def issue(self, task: TaskRef) -> Issued: ...

    async def rotate(self, task: TaskRef) -> Issued: ...

    async def revoke(self, task_uid: str) -> bool:
        """True when something was revoked; False when nothing existed (already revoked)."""
        ...

    async def list(self) -> Sequence[Held]: ...

    async def close(self) -> None: ...
