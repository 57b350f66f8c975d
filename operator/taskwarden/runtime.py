"""Wires the services together for one operator process and runs their background loops.

Called by handlers.py at kopf start-up and clean-up. Holds no logic of its own beyond order:
load keys, the revocation list and the ledger, warm the indexes from one LIST each, sweep
orphaned Secrets, revoke what the ledger holds for tasks gone or ended while no operator ran,
and only then reconcile live tasks (which issues new credentials) from the task event
source's paged LIST, and watch tasks from that list's version (watch.py; kopf watches only
pods, policies and approvals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from taskwarden import config, metrics, names, server, watch
from taskwarden import index as index_mod
from taskwarden import kube as kube_mod
from taskwarden.index import Index
from taskwarden.kube import APPROVALS, POLICIES, TASKS, Kube
from taskwarden.ledger import Ledger
from taskwarden.publishing import KeyManager, RevocationPublisher
from taskwarden.sharding.leases import Coordinator
from taskwarden.tasks import facts
from taskwarden.tasks.reconciler import Reconciler

log = logging.getLogger(__name__)
SWEEP_DUTY = 4.0
"""The next periodic sweep starts at least this many times its predecessor's duration later."""


@dataclass
class Runtime:
    settings: config.Settings
    kube: Kube
    index: Index
    keys: KeyManager
    revocations: RevocationPublisher
    ledger: Ledger
    reconciler: Reconciler
    source: watch.EventSource
    """AgentTasks: listed at start (the resync) and watched from there, no body kept."""
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    shards: Coordinator | None = None
    """Sharding (h5): the Lease loop; None when standalone (this replica owns everything)."""

    async def _list_each(
        self, fn: Callable[[str | None], Awaitable[list[dict[str, Any]]]]
    ) -> list[dict[str, Any]]:
        """One LIST cluster-wide, or one per watched namespace."""
        nss = self.settings.watch.namespaces
        if not nss:
            return list(await fn(None))
        out: list[dict[str, Any]] = []
        for ns in nss:
            out += await fn(ns)
        return out

    async def warm(self) -> None:
        """Rebuild the indexes from one LIST each (at start: its
        watches were paused, so what it remembers may be stale), then sweep orphaned Secrets."""
        t0 = time.monotonic()
        self.index.pods.clear()
        self.index.policies.clear()
        self.index.approvals.clear()
        for pod in await self._list_each(
            lambda ns: self.kube.list_pods(ns, keep=index_mod.compact_pod)
        ):
            self.index.put_pod(pod)
        for pol in await self._list_each(lambda ns: self.kube.list(POLICIES, ns)):
            self.index.put_policy(pol)
        for appr in await self._list_each(lambda ns: self.kube.list(APPROVALS, ns)):
            self.index.put_approval(appr)
        removed = await self.reconciler.resync_secrets()
        t1 = time.monotonic()
        listed = await self.reconciler.resync_ledger()
        kube_mod.trim_memory()
        log.info(
            "indexes warm in %.2fs: %d namespaces with pods, %d orphaned secrets removed, "
            "%d ledger entries revoked (ledger sweep %.2fs, %d entries left)",
            time.monotonic() - t0,
            len(self.index.pods),
            removed,
            listed,
            time.monotonic() - t1,
            len(self.ledger),
        )

    async def resync_tasks(self, only: Callable[[str], bool] | None = None) -> int:
        """Reconcile every live task from one paged LIST, each page processed and dropped
        before the next is read. At start this is the event source's own listing (watching
        continues from its version: tasks are listed once, not twice); the periodic sweep and
        a sharding take-over (``only``: the namespaces of the gained shards) run it without
        moving the watch. Expiries missed while down, Secrets missing after a crash and
        re-attestation all happen here."""
        t0 = time.monotonic()
        if only is None and not self.source.watching:
            n = await self.source.sync()
        else:
            n = await self.source.sweep(only=only)
        kube_mod.trim_memory()
        log.info("resynced %d live tasks in %.2fs", n, time.monotonic() - t0)
        return n

    async def start_tasks(self) -> None:
        """List and reconcile every live task, become active, then watch tasks."""
        await self.resync_tasks()
        self.set_active(True)
        self.source.start()

    async def sweep(self) -> None:
        """Periodic full reconciliation: orphans, missed expiries, re-attestation."""
        interval = self.settings.lifecycle.sweep_interval
        took = 0.0
        while True:
            # At most a fifth of the time sweeping: at 100,000 live tasks one sweep takes
            # longer than the 60 s interval, and back-to-back sweeps would take a core.
            await asyncio.sleep(max(interval, SWEEP_DUTY * took))
            if not self.reconciler.active.is_set():
                continue  # not started yet, or shutting down
            t0 = time.monotonic()
            try:
                await self.reconciler.resync_secrets()
                await self.reconciler.resync_ledger(background=True)  # 2 GETs at a time
                t1 = time.monotonic()
                # Reconciles from the LIST, no GET per task, a few at a time in the background.
                n = await self.source.sweep(background=True)
                kube_mod.trim_memory()
                log.info("swept %d live tasks in %.2fs", n, time.monotonic() - t1)
            except Exception:
                log.exception("periodic sweep failed; next in %ss", interval)
            took = time.monotonic() - t0

    def start_background(self) -> None:
        for coro in (
            self.reconciler.scheduler.run(),
            self.revocations.run(),
            # Sharding (h5): one replica, holding the keys Lease, rotates; the others reload.
            self.keys.run(self.shards.keys_writer if self.shards else self.reconciler.active),
            self.sweep(),
        ):
            self.tasks.append(asyncio.create_task(coro))

    async def stop(self) -> None:
        if self.shards is not None:
            self.shards.fence()  # act on nothing from here on; the Leases are still ours
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            await self.source.stop()  # no reconcile is left halfway through its writes
        if self.shards is not None:
            with contextlib.suppress(Exception):
                await self.shards.stop()  # hand our shards over now, not a lease later
        hooks = self.extras.pop("webhooks", None)
        if hooks is not None:
            with contextlib.suppress(Exception):
                await hooks.stop()
        with contextlib.suppress(Exception):
            await self.ledger.flush()
        with contextlib.suppress(Exception):
            await self.revocations.flush()
        with contextlib.suppress(Exception):
            await self.kube.aclose()
        list_kube = self.extras.pop("list_kube", None)
        if list_kube is not None:
            with contextlib.suppress(Exception):
                await list_kube.aclose()

    def set_active(self, active: bool) -> None:
        """Let this replica reconcile (or stop it), and say so in taskwarden_replica_active."""
        if active:
            self.reconciler.active.set()
        else:
            self.reconciler.active.clear()
        metrics.replica_active.set(1 if active else 0)

    async def on_shards_gained(self, gained: frozenset[int]) -> None:
        """Sharding: shards just taken over (a join, a leave, a crash). Whatever their previous
        owner left undone (credentials of tasks ended or deleted since, expiries missed,
        Secrets of a crash) is found here, as at start-up, for these shards only."""
        assert self.shards is not None
        shards, lock = self.shards, self.extras.setdefault("resync_lock", asyncio.Lock())
        async with lock:
            t0 = time.monotonic()
            try:
                await self.revocations.load()
                await self.reconciler.resync_secrets()
                await self.reconciler.resync_ledger()
                n = await self.resync_tasks(only=lambda ns: shards.shard_of(ns) in gained)
            except Exception:
                log.exception("resync of gained shards %s failed; the sweep retries", gained)
                return
            log.info(
                "shards %s resynced in %.2fs: %d live tasks",
                sorted(gained),
                time.monotonic() - t0,
                n,
            )

    def on_shards_lost(self, lost: frozenset[int]) -> None:
        """Sharding (h5): shards given up or timed out: drop their deadlines and state."""
        assert self.shards is not None
        shards = self.shards
        self.reconciler.drop_shards(lambda ns: shards.shard_of(ns) in lost)


async def build(settings: config.Settings) -> Runtime:
    kube = Kube(workers=settings.lifecycle.api_workers)
    index = Index()
    op_ns = settings.watch.operator_namespace
    keys = KeyManager(kube, op_ns, settings.keys)
    # The revocation list gets its own two connections: under a burst of completions the
    # shared pool is queued with Secret deletes and status writes, and the list write (the
    # moment a token stops verifying) must not wait behind them.
    list_kube = Kube(workers=2)
    revocations = RevocationPublisher(
        list_kube,
        op_ns,
        settings.lifecycle,
        retire_keys=keys.emergency_rotate,
        key_propagation=settings.keys.publish_delay,
    )
    # While a revoked jti waits to be listed, the operator's other writes give way (kubehttp.py
    # YIELD_SLOTS): in a burst of completions the API server is the bottleneck.
    kube.yielding = lambda: revocations.pending
    ledger = Ledger(kube, op_ns, settings.sharding.shards)  # sharding (h5): one writer each
    await keys.ensure()
    await revocations.load()
    await ledger.load()
    reconciler = Reconciler(kube, settings, index, keys, revocations, ledger, clock=time.time)
    source = watch.EventSource(
        kube,
        TASKS,
        settings.watch.namespaces,
        on_listed=reconciler.reconcile_now,
        on_event=reconciler.on_task_event,
        urgent=facts.ending,  # a completion or deletion never waits behind issuances
        on_urgent=reconciler.list_now,  # and its jti is listed before any other work
        # Sharding: tasks of shards this replica does not hold are dropped while listing
        # (their events are dropped at the reconciler's entry, which checks owns() too).
        wanted=lambda t: (
            (t.get("status") or {}).get("phase") not in names.TERMINAL
            and reconciler.ctx.owns(t["metadata"]["namespace"])
        ),
    )
    rt = Runtime(settings, kube, index, keys, revocations, ledger, reconciler, source)
    rt.extras["list_kube"] = list_kube
    if settings.watch.peering:  # sharding: act only on shards whose Lease we hold
        rt.shards = Coordinator(kube, op_ns, settings.watch.peering, settings.sharding)
        rt.shards.on_gain, rt.shards.on_lose = rt.on_shards_gained, rt.on_shards_lost
        reconciler.ctx.owns = rt.shards.owns
    rt.start_background()  # the revocation flusher must run before the orphan sweep waits on it
    await rt.warm()
    rt.extras["webhooks"] = await server.start(
        settings,
        kube,
        jwks=keys.jwks,
        revocations=lambda now: revocations.list.to_configmap_data(now),
        signer=keys.signer,
    )
    if rt.shards is None:
        metrics.shards_configured.set(settings.sharding.shards)
        metrics.shards_owned.set(settings.sharding.shards)  # standalone: owns every shard
        await rt.start_tasks()  # list and reconcile every live task, then watch
    else:
        rt.set_active(True)  # every replica works, on the shards it holds
        rt.source.start()  # lists (keeping only owned tasks), then watches
        rt.tasks.append(asyncio.create_task(rt.shards.run()))  # gains resync their shards
    return rt
