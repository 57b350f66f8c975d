"""The Lease loop of one replica: membership, then acquire, renew and release shard Leases.

Built by runtime.py when a sharding group is set (`TASKWARDEN_PEERING`, default `taskwarden`);
`taskwarden run --standalone` builds none and owns everything. Every `retry_period` it:
renews its membership Lease `<group>-member-<id>`, LISTs the group's Leases (one call), folds
them into what it has observed (sharding/ring.py), and for every shard Lease `<group>-shard-NN`
and the key-rotation Lease `<group>-keys` does what `ring.decide` says. Every write is a replace
conditioned on the resourceVersion read, or a create that fails if someone else created first.

`owns(namespace)` is the one predicate the reconciler consults (tasks/context.py): true only
until `renew_start + renew_deadline` of the last successful renewal of the namespace's shard.
A shard given up is dropped at once (`on_lose`) and its Lease released one tick later, so work
already in flight finishes first; a shard gained is resynced (`on_gain`) before events count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from taskwarden import metrics
from taskwarden.config import ShardingSettings
from taskwarden.kube import ApiError, Kube
from taskwarden.sharding import ring

log = logging.getLogger(__name__)
GROUP_LABEL = "taskwarden.dev/sharding-group"
KIND_LABEL = "taskwarden.dev/lease"


def default_identity() -> str:
    """POD_NAME (unique per pod) or host name plus pid (unique per process on one host)."""
    base = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")[:50] or f"replica-{os.getpid()}"


def _microtime(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Coordinator:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        group: str,
        settings: ShardingSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.kube, self.namespace, self.group, self.settings = kube, namespace, group, settings
        self.clock, self.wall = clock, wall
        self.me = settings.identity or default_identity()
        self.shards = settings.shards
        self.slots = [ring.slot_name(i) for i in range(self.shards)] + [ring.KEYS_SLOT]
        self.renew_every = max(settings.retry_period, settings.renew_deadline / 2)
        self.obs: dict[str, ring.Observed] = {}
        self.specs: dict[str, dict[str, Any]] = {}
        self.held_until: dict[str, float] = {}
        self.last_renew: dict[str, float] = {}
        self.releasing: set[str] = set()
        self.owned: frozenset[int] = frozenset()
        self.keys_writer = asyncio.Event()
        """Set while this replica holds the key-rotation Lease."""
        self.on_gain: Callable[[frozenset[int]], Coroutine[Any, Any, None]] | None = None
        self.on_lose: Callable[[frozenset[int]], None] | None = None
        self._resyncs: set[asyncio.Task[None]] = set()
        self.stopping = False
        self._reacquired: set[str] = set()
        """Slots acquired again after our acting deadline lapsed (a renewal that ran late):
        work dropped meanwhile is recovered by treating them as gained (a resync)."""
        metrics.shards_configured.set(self.shards)
        metrics.shards_owned.set(0)

    # ---------------------------------------------------------------- the predicate

    def shard_of(self, namespace: str) -> int:
        return ring.shard_of(namespace, self.shards)

    def owns(self, namespace: str) -> bool:
        """Whether this replica may act on tasks of `namespace` now (fenced by time)."""
        slot = ring.slot_name(ring.shard_of(namespace, self.shards))
        return ring.acting(self.held_until.get(slot), self.clock())

    # ---------------------------------------------------------------- names and bodies

    def lease_name(self, slot: str) -> str:
        if slot == ring.KEYS_SLOT:
            return f"{self.group}-keys"
        return f"{self.group}-shard-{slot}"

    @staticmethod
    def _kind(slot: str) -> str:
        return "keys" if slot == ring.KEYS_SLOT else "shard"

    @property
    def member_name(self) -> str:
        return f"{self.group}-member-{self.me}"

    def _body(self, name: str, kind: str, holder: str) -> dict[str, Any]:
        prev = self.specs.get(name) or {}
        now = _microtime(self.wall())
        changed = prev.get("holderIdentity") != holder
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(1, round(self.settings.lease_duration)),
            "renewTime": now,
            "acquireTime": now if changed or not prev.get("acquireTime") else prev["acquireTime"],
            "leaseTransitions": int(prev.get("leaseTransitions") or 0) + (1 if changed else 0),
        }
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {GROUP_LABEL: self.group, KIND_LABEL: kind},
            },
            "spec": spec,
        }
        obs = self.obs.get(name)
        if obs is not None:
            body["metadata"]["resourceVersion"] = obs.resource_version
        return body

    async def _write(self, name: str, kind: str, holder: str) -> bool:
        """Create or conditionally replace; False when someone else changed it first."""
        body = self._body(name, kind, holder)
        try:
            if "resourceVersion" in body["metadata"]:
                res = await self.kube.replace_lease(self.namespace, name, body)
            else:
                res = await self.kube.create_lease(self.namespace, body)
        except ApiError as e:
            if e.status in (404, 409):
                self.obs.pop(name, None)  # re-read on the next tick
                return False
            raise
        self._record(res, self.clock())
        return True

    def _record(self, lease: dict[str, Any], now: float) -> None:
        md, spec = lease.get("metadata") or {}, lease.get("spec") or {}
        name = md["name"]
        self.specs[name] = spec
        self.obs[name] = ring.observe(
            self.obs.get(name),
            spec.get("holderIdentity") or "",
            str(md.get("resourceVersion") or ""),
            float(spec.get("leaseDurationSeconds") or self.settings.lease_duration),
            now,
        )

    # ---------------------------------------------------------------- one tick

    async def tick(self) -> None:
        if self.stopping:
            return  # never (re)acquire while handing everything over
        now = self.clock()
        await self._finish_releases()
        last = self.last_renew.get("member")
        if last is None or now - last >= self.renew_every:
            if await self._write(self.member_name, "member", self.me):
                self.last_renew["member"] = now
        leases = await self.kube.list_leases(self.namespace, f"{GROUP_LABEL}={self.group}")
        now = self.clock()
        seen = set()
        for lease in leases:
            seen.add(lease["metadata"]["name"])
            self._record(lease, now)
        for name in set(self.obs) - seen:
            del self.obs[name]
            self.specs.pop(name, None)
        prefix = f"{self.group}-member-"
        members = {n: o for n, o in self.obs.items() if n.startswith(prefix)}
        live = ring.live_members(members, self.me, now)
        results = await asyncio.gather(
            *(self._slot(slot, live) for slot in self.slots), return_exceptions=True
        )
        for slot, res in zip(self.slots, results, strict=True):
            if isinstance(res, Exception):
                log.warning("sharding: Lease %s: %s", self.lease_name(slot), res)
        self._settle()

    async def _slot(self, slot: str, live: set[str]) -> None:
        if slot in self.releasing:
            return
        name = self.lease_name(slot)
        now = self.clock()
        action = ring.decide(
            me=self.me,
            desired=ring.owner(slot, live),
            obs=self.obs.get(name),
            held_until=self.held_until.get(slot),
            last_renew=self.last_renew.get(slot),
            renew_every=self.renew_every,
            now=now,
        )
        if action in (ring.ACQUIRE, ring.RENEW):
            if await self._write(name, self._kind(slot), self.me):
                self.held_until[slot] = now + self.settings.renew_deadline
                self.last_renew[slot] = now
                if action == ring.ACQUIRE:
                    log.info("acquired Lease %s", name)
                    self._reacquired.add(slot)
            elif action == ring.RENEW:
                log.warning("lost Lease %s: it changed under us", name)
                self.held_until.pop(slot, None)
        elif action == ring.RELEASE:
            # Stop acting now; release on the next tick, once work in flight has finished.
            self.held_until.pop(slot, None)
            self.releasing.add(slot)
            log.info("giving up Lease %s to %s", name, ring.owner(slot, live))

    async def _finish_releases(self) -> None:
        slots, self.releasing = self.releasing, set()
        await asyncio.gather(*(self._release(slot) for slot in slots))

    async def _release(self, slot: str) -> None:
        name = self.lease_name(slot)
        obs = self.obs.get(name)
        self.last_renew.pop(slot, None)
        if obs is None or obs.holder != self.me:
            return
        try:
            await self._write(name, self._kind(slot), "")
        except ApiError as e:
            log.warning("releasing Lease %s failed (%s); it will expire", name, e)

    def _settle(self) -> None:
        """Compare what we may act on now with before: fire on_lose / on_gain, set metrics."""
        now = self.clock()
        owned = frozenset(
            i
            for i in range(self.shards)
            if ring.acting(self.held_until.get(ring.slot_name(i)), now)
        )
        # A shard we still counted as owned but had to acquire again stopped being acted on
        # in between (events and deadlines were dropped): count it as gained, to resync it.
        before = frozenset(i for i in self.owned if ring.slot_name(i) not in self._reacquired)
        self._reacquired.clear()
        gained, lost = owned - before, before - owned
        self.owned = owned
        metrics.shards_owned.set(len(owned))
        if lost:
            metrics.shard_rebalances.labels(change="lost").inc(len(lost))
            log.info("shards lost: %s (now %d)", sorted(lost), len(owned))
            if self.on_lose is not None:
                self.on_lose(lost)
        if gained:
            metrics.shard_rebalances.labels(change="gained").inc(len(gained))
            log.info("shards gained: %s (now %d)", sorted(gained), len(owned))
            if self.on_gain is not None:
                t = asyncio.create_task(self.on_gain(gained))
                self._resyncs.add(t)
                t.add_done_callback(self._resyncs.discard)
        if ring.acting(self.held_until.get(ring.KEYS_SLOT), now):
            self.keys_writer.set()
        else:
            self.keys_writer.clear()

    # ---------------------------------------------------------------- loop

    async def run(self) -> None:
        period = self.settings.retry_period
        while True:
            t0 = self.clock()
            try:
                await self.tick()
            except Exception:
                log.exception("sharding: Lease tick failed; retrying")
                self._settle()  # shards whose deadline passed are dropped all the same
            await asyncio.sleep(max(0.0, period - (self.clock() - t0)))

    def fence(self) -> None:
        """Stop acting on every shard at once (owns() is False from here on) and never
        acquire again; the Leases stay held until `stop`, so no other replica takes a shard
        while work of ours may still be in flight."""
        self.stopping = True
        self.held_until.clear()
        self._settle()

    async def stop(self) -> None:
        """Graceful exit: stop acting, release every Lease we hold, leave the member set.
        Call it after the work in flight has stopped (Runtime.stop fences first)."""
        self.fence()
        for slot in self.slots:
            self.releasing.add(slot)
        with contextlib.suppress(Exception):
            await self._finish_releases()
        with contextlib.suppress(Exception):
            await self.kube.delete_lease(self.namespace, self.member_name)
