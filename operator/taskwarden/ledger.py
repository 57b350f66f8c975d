"""The store of the ledger of live credentials: ConfigMaps `taskwarden-ledger-NN-MM` in the
operator namespace (record format and shards: credentials/ledger.py; docs/operations.md).

Called by tasks/issue.py (`add`, awaited before the status write that names the jti), by
tasks/revoke.py (`remove`, once the jti is listed) and by tasks/sweep.py (`load`, `entries`).

Writes are group commits per shard: the first write goes out at once, and whatever arrives
while it is in flight goes out together in the next one, so a burst of issuances costs a few
writes, and a lone issuance waits for one write, not for a coalescing timer. Every write is a
replace conditioned on the resourceVersion last read; on a conflict the shard is re-read and
only this process's pending changes are applied again, so concurrent writers never lose each
other's entries. Entries that do not decode are kept as they are (and logged), never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from taskwarden.credentials import ledger as fmt
from taskwarden.kube import ApiError, Kube
from taskwarden.sharding import ring

log = logging.getLogger(__name__)
LABELS = {"app.kubernetes.io/managed-by": "taskwarden", "taskwarden.dev/ledger": "true"}
MAX_CONFLICTS = 10


@dataclass
class _Shard:
    name: str
    data: dict[str, str] = field(default_factory=dict)
    rv: str | None = None
    pending: dict[str, str | None] = field(default_factory=dict)
    """jti -> encoded entry to add, or None to remove; the last change of a jti wins."""
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Ledger:
    def __init__(self, kube: Kube, namespace: str, task_shards: int = fmt.SHARDS) -> None:
        self.kube, self.namespace, self.task_shards = kube, namespace, task_shards
        self.shards: dict[str, _Shard] = {}
        """The ConfigMaps that exist (or are being created); the others are not held."""
        self._legacy = fmt.shard_names()

    def _shard(self, name: str) -> _Shard:
        shard = self.shards.get(name)
        if shard is None:
            shard = self.shards[name] = _Shard(name)
        return shard

    def shard_for(self, namespace: str, uid: str) -> str:
        """The ConfigMap of a task's entries: its task shard's group (sharding/ring.py, modulo
        16), then its UID (credentials/ledger.py SUBSHARDS). With 16 task shards (the default)
        every ConfigMap has one writer, the replica holding that shard, and sharded replicas
        never conflict on it (with three writers per ConfigMap, bursts of rotations ran out of
        retries)."""
        return fmt.store_name(ring.shard_of(namespace, self.task_shards), uid)

    def _legacy_for(self, namespace: str) -> str:
        """Where versions before SUBSHARDS put the entries of tasks in `namespace`."""
        return self._legacy[ring.shard_of(namespace, self.task_shards) % fmt.SHARDS]

    async def load(self, concurrency: int = 32) -> None:
        """Read every ConfigMap the ledger may use (at start-up, on take-over and before each
        sweep): one GET per name, cheap when it does not exist; the role may not list. The
        periodic sweep passes a low `concurrency`: 528 GETs 32 at a time took every request
        slot for seconds each minute, and issuances waited behind them."""
        sem = asyncio.Semaphore(concurrency)

        async def one(name: str) -> None:
            async with sem:
                if name in self.shards:
                    shard = self.shards[name]
                    async with shard.lock:
                        await self._read(shard)
                    return
                cm = await self.kube.get_configmap(self.namespace, name)
                if cm is None or name in self.shards:
                    return  # absent, or created by a write meanwhile (that write holds it)
                shard = self._shard(name)
                async with shard.lock:
                    if shard.rv is None:  # else a write got there first, and knows better
                        shard.data = dict(cm.get("data") or {})
                        shard.rv = cm["metadata"]["resourceVersion"]

        await asyncio.gather(*(one(n) for n in fmt.all_names()))

    async def _read(self, shard: _Shard) -> None:
        cm = await self.kube.get_configmap(self.namespace, shard.name)
        shard.data = dict((cm or {}).get("data") or {})
        shard.rv = cm["metadata"]["resourceVersion"] if cm else None

    def entries(self) -> list[fmt.Entry]:
        out: list[fmt.Entry] = []
        for shard in self.shards.values():
            good, bad = fmt.entries(shard.data)
            out += good
            if bad:
                log.warning(
                    "ledger %s: %d entries do not decode, kept: %s", shard.name, len(bad), bad
                )
        return out

    def entries_of(self, uid: str, namespace: str | None = None) -> list[fmt.Entry]:
        """The entries of one task (its current token and any rotated-out one still valid):
        in its ConfigMap, or where earlier versions put them (by namespace alone, by UID
        alone); every ConfigMap when the namespace is not given."""
        if namespace is None:
            names = list(self.shards)
        else:
            names = [
                n
                for n in {
                    self.shard_for(namespace, uid),
                    self._legacy_for(namespace),
                    fmt.shard_of(uid),
                }
                if n in self.shards
            ]
        out: list[fmt.Entry] = []
        for n in names:
            good, _ = fmt.entries(self.shards[n].data)
            out += [e for e in good if e.uid == uid]
        return out

    def __len__(self) -> int:
        return sum(len(s.data) for s in self.shards.values())

    def add(self, entry: fmt.Entry) -> asyncio.Future[None]:
        """Record a credential about to exist; resolves once its shard holds it durably."""
        return self._change(
            self.shard_for(entry.namespace, entry.uid), {entry.jti: fmt.encode(entry)}
        )

    def remove(
        self, uid: str, jtis: Iterable[str], namespace: str | None = None
    ) -> asyncio.Future[None]:
        """Drop entries of one task: only once their jti is listed, or they have expired. Each
        from the shard that holds it (by namespace since sharding, by UID before)."""
        default = self.shard_for(namespace, uid) if namespace is not None else fmt.shard_of(uid)
        by_shard: dict[str, list[str]] = {}
        for jti in jtis:
            where = next((s.name for s in self.shards.values() if jti in s.data), default)
            by_shard.setdefault(where, []).append(jti)
        futs = [self._change(n, dict.fromkeys(js)) for n, js in by_shard.items()]
        if len(futs) == 1:
            return futs[0]
        return asyncio.ensure_future(_all(futs))

    def remove_entries(self, entries: Iterable[fmt.Entry]) -> asyncio.Future[None]:
        by_uid: dict[tuple[str, str], list[str]] = {}
        for e in entries:
            by_uid.setdefault((e.uid, e.namespace), []).append(e.jti)
        futs = [self.remove(uid, jtis, ns) for (uid, ns), jtis in by_uid.items()]
        return asyncio.ensure_future(_all(futs))

    def _change(self, name: str, changes: dict[str, str | None]) -> asyncio.Future[None]:
        shard = self._shard(name)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        shard.pending.update(changes)
        shard.waiters.append(fut)
        if shard.writer is None or shard.writer.done():
            shard.writer = asyncio.create_task(self._write_loop(shard))
        return fut

    async def _write_loop(self, shard: _Shard) -> None:
        while shard.pending:
            changes, shard.pending = shard.pending, {}
            waiters, shard.waiters = shard.waiters, []
            try:
                async with shard.lock:
                    await self._write(shard, changes)
            except Exception as e:
                for w in waiters:
                    if not w.done():
                        w.set_exception(e)
                continue
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def _write(self, shard: _Shard, changes: dict[str, str | None]) -> None:
        for _ in range(MAX_CONFLICTS):
            data = dict(shard.data)
            for jti, value in changes.items():
                if value is None:
                    data.pop(jti, None)
                else:
                    data[jti] = value
            body: dict[str, Any] = {
                "metadata": {"name": shard.name, "namespace": self.namespace, "labels": LABELS},
                "data": data,
            }
            try:
                if shard.rv is None:
                    res = await self.kube.create_configmap(self.namespace, body)
                else:
                    body["metadata"]["resourceVersion"] = shard.rv
                    res = await self.kube.replace_configmap(self.namespace, shard.name, body)
            except ApiError as e:
                if e.status not in (404, 409):
                    raise
                await self._read(shard)  # another writer, or deleted: merge onto what is there
                continue
            shard.data, shard.rv = data, res["metadata"]["resourceVersion"]
            return
        raise RuntimeError(f"ledger {shard.name}: too many write conflicts")

    async def flush(self) -> None:
        """Wait for every write in flight (at shutdown)."""
        writers = [s.writer for s in self.shards.values() if s.writer is not None]
        await asyncio.gather(*writers, return_exceptions=True)


async def _all(futs: list[asyncio.Future[None]]) -> None:
    await asyncio.gather(*futs)
