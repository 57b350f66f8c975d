"""The services one AgentTask controller works with, and the small bookkeeping its actors share.

Built by tasks/reconciler.py; passed to the actors (tasks/issue.py, revoke.py, sweep.py) so
they need no back reference to the reconciler. Holds the clock: actors read time here, pure
code gets `now` from them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from taskwarden import metrics, rotation
from taskwarden.backends.registry import Registry
from taskwarden.config import Settings
from taskwarden.credentials.keymanager import KeyManager
from taskwarden.index import Index
from taskwarden.kube import Kube
from taskwarden.ledger import Ledger
from taskwarden.publishing import RevocationPublisher
from taskwarden.tasks import explain
from taskwarden.tasks.facts import Body, Key, meta
from taskwarden.tasks.scheduler import Scheduler

log = logging.getLogger(__name__)


def _no_refresh(keys: list[Key]) -> None:
    raise NotImplementedError


def _owns_all(namespace: str) -> bool:
    return True


@dataclass
class Context:
    kube: Kube
    settings: Settings
    index: Index
    keys: KeyManager
    revocations: RevocationPublisher
    ledger: Ledger
    """Every live credential, written before it exists (taskwarden/ledger.py)."""
    clock: Callable[[], float]
    scheduler: Scheduler
    instance: str
    """This replica's name in the Events it posts."""
    refresh_soon: Callable[[list[Key]], None] = _no_refresh
    """Reconcile these tasks soon (set by the reconciler: cascades to delegated children)."""
    owns: Callable[[str], bool] = _owns_all
    """Sharding (h5): whether this replica may act on tasks of a namespace now
    (sharding/leases.py `Coordinator.owns`); always true when standalone."""
    active: set[Key] = field(default_factory=set)
    """Tasks this process knows to hold a live credential (the active_credentials gauge)."""
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    backends: Registry | None = None
    """Credential backends (tasks/backing.py makes it on first use)."""
    echoes: dict[Key, str] = field(default_factory=dict)
    """The resourceVersion of this process's last issuing status write of a task, until the
    watch brings that write back: the echo carries nothing this process does not know, and
    reconciling it would only repeat the checks (one reconcile per issue and rotation)."""
    behind_events: rotation.Budget = field(default_factory=rotation.Budget)
    """How many `RotationBehind` Warning Events may still be posted (rotation.EVENT_RATE)."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.create_task(coro)
        self.background.add(t)
        t.add_done_callback(self.background.discard)

    def holds_credential(self, key: Key, live: bool) -> None:
        if live:
            self.active.add(key)
        else:
            self.active.discard(key)
        metrics.active_credentials.set(len(self.active))

    def forget(self, key: Key) -> None:
        """The task is gone or terminal: no deadlines, no index entry, no live credential."""
        self.scheduler.cancel(key)
        self.echoes.pop(key, None)
        self.index.drop_task(key)
        self.holds_credential(key, False)

    def post_event(self, body: Body, type_: str, reason: str, note: str, action: str) -> None:
        """Post an Event about the task in the background; best effort."""
        ev = explain.event_body(
            body,
            type_,
            reason,
            note,
            action,
            now=self.clock(),
            instance=self.instance,
            suffix=secrets.token_hex(8),
        )
        ns, name, _ = meta(body)

        async def post() -> None:
            try:
                await self.kube.create_event(ns, ev)
            except Exception as e:  # events are best effort; the audit line is the record
                log.debug("event for %s/%s not posted: %s", ns, name, e)

        self.spawn(post())
