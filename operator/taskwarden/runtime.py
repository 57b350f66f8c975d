"""Wires the services together for one operator process and runs their background loops.

Called by handlers.py at kopf start-up and clean-up. Holds no logic of its own beyond order:
load keys, the revocation list and the ledger, warm the indexes from one LIST each, sweep
orphaned Secrets, revoke what the ledger holds for tasks gone or ended while no operator ran,
and only then reconcile live tasks (which issues new credentials) and let kopf's watchers
deliver tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from taskwarden import config, metrics, names, server
from taskwarden import index as index_mod
from taskwarden import kube as kube_mod
from taskwarden.index import Index
from taskwarden.kube import APPROVALS, POLICIES, TASKS, Kube
from taskwarden.ledger import Ledger
from taskwarden.publishing import KeyManager, RevocationPublisher
from taskwarden.sharding.leases import Coordinator
from taskwarden.tasks.reconciler import Reconciler

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: config.Settings
    kube: Kube
    index: Index
    keys: KeyManager
    revocations: RevocationPublisher
    ledger: Ledger
    reconciler: Reconciler
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
        """Rebuild the indexes from one LIST each (at start and when a standby takes over: its
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
        """Reconcile every live task from one paged LIST, before kopf's own initial listing
        (which delivers the same objects one event at a time, ~4 ms each, through per-object
        workers). Expiries missed while down, Secrets missing after a crash and re-attestation
        all happen here; kopf's later events for the same objects find nothing to do."""
        t0 = time.monotonic()
        live = [
            t
            for t in await self._list_each(lambda ns: self.kube.list(TASKS, ns))
            if (t.get("status") or {}).get("phase") not in names.TERMINAL
            and self.reconciler.ctx.owns(t["metadata"]["namespace"])  # sharding (h5)
            and (only is None or only(t["metadata"]["namespace"]))
        ]
        sem = asyncio.Semaphore(32)

        async def one(task: dict[str, Any]) -> None:
            async with sem:
                await self.reconciler.reconcile_now(task)

        await asyncio.gather(*(one(t) for t in live))
        kube_mod.trim_memory()
        log.info("resynced %d live tasks in %.2fs", len(live), time.monotonic() - t0)
        return len(live)

    async def sweep(self) -> None:
        """Periodic full reconciliation: orphans, missed expiries, re-attestation."""
        interval = self.settings.lifecycle.sweep_interval
        while True:
            await asyncio.sleep(interval)
            if not self.reconciler.active.is_set():
                continue  # a standby's indexes are stale: only the active replica sweeps
            try:
                await self.reconciler.resync_secrets()
                await self.reconciler.resync_ledger()
                await self.resync_tasks()  # reconciles from the LIST, no GET per task
            except Exception:
                log.exception("periodic sweep failed; next in %ss", interval)

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
            with contextlib.suppress(Exception):
                await self.shards.stop()  # hand our shards over now, not a lease later
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t
        hooks = self.extras.pop("webhooks", None)
        if hooks is not None:
            with contextlib.suppress(Exception):
                await hooks.stop()
        with contextlib.suppress(Exception):
            await self.ledger.flush()
        with contextlib.suppress(Exception):
            await self.revocations.flush()
        self.kube.close()

    def set_active(self, active: bool) -> None:
        """Let this replica reconcile (or stop it), and say so in taskwarden_replica_active."""
        if active:
            self.reconciler.active.set()
        else:
            self.reconciler.active.clear()
        metrics.replica_active.set(1 if active else 0)

    async def on_shards_gained(self, gained: frozenset[int]) -> None:
        """Sharding (h5): shards just taken over (a join, a leave, a crash). Whatever their
        previous owner left undone (credentials of tasks ended or deleted since, expiries
        missed, Secrets of a crash) is found here, as at start-up, for these shards only."""
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
    revocations = RevocationPublisher(
        kube,
        op_ns,
        settings.lifecycle,
        retire_keys=keys.emergency_rotate,
        key_propagation=settings.keys.publish_delay,
    )
    ledger = Ledger(kube, op_ns, settings.sharding.shards)  # sharding (h5): one writer each
    await keys.ensure()
    await revocations.load()
    await ledger.load()
    reconciler = Reconciler(kube, settings, index, keys, revocations, ledger, clock=time.time)
    rt = Runtime(settings, kube, index, keys, revocations, ledger, reconciler)
    if settings.watch.peering:  # sharding (h5): act only on shards whose Lease we hold
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
        await rt.resync_tasks()
        metrics.shards_configured.set(settings.sharding.shards)
        metrics.shards_owned.set(settings.sharding.shards)  # standalone: owns every shard
    else:
        rt.tasks.append(asyncio.create_task(rt.shards.run()))  # gains resync their shards
    rt.set_active(True)  # every replica works; sharded ones on the shards they hold
    return rt
