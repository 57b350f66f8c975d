"""The lean event source for AgentTasks: one paged LIST, then a WATCH from that list's
resourceVersion, each object handed straight to a callback and dropped afterwards.

Why not kopf (docs/architecture.md, "Memory"): kopf keeps per-object state and a worker per
object, about 15 KiB per watched object, and its initial listing delivers every object again as
an event; AgentTasks are the one kind that grows with load. Here nothing is kept per object
once its callback returns: only the events still waiting for their object's previous event
(at most one pending per object: a newer state of the same object replaces it).

Called by runtime.py: `sync()` at start (and on take-over) is the start-up resync, each page
processed and dropped before the next is read; `start()` then watches from where the list
left off (bookmarks keep that version fresh; 410 Gone lists again; any other failure
reconnects with backoff); `stop()` at shutdown. `sweep()` is the periodic
full pass, which does not move the watch's version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from taskwarden.kube import ApiError, Kube

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0


def _interned(obj: Obj) -> Obj:
    """Share one string per namespace and per name among every structure keyed by them (the
    index, the scheduler, the live-credential set): each parse makes new copies otherwise."""
    md = obj.get("metadata")
    if md:
        for k in ("namespace", "name"):
            if isinstance(md.get(k), str):
                md[k] = sys.intern(md[k])
    return obj


def _key(obj: Obj) -> Key:
    md = obj.get("metadata") or {}
    return str(md.get("namespace") or ""), str(md.get("name") or "")


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def coalesce(queue: list[tuple[str, Obj]], kind: str, obj: Obj) -> None:
    """Add an event to the events waiting for one object: a newer state of the same object
    (same uid, the waiting one not a deletion) replaces the waiting one; anything else waits
    behind it in order."""
    if queue and queue[-1][0] != "DELETED" and _uid(queue[-1][1]) == _uid(obj):
        queue[-1] = (kind, obj)
    else:
        queue.append((kind, obj))


class EventSource:
    def __init__(
        self,
        kube: Kube,
        plural: str,
        namespaces: Sequence[str],
        *,
        on_listed: Callable[[Obj], Awaitable[None]],
        on_event: Callable[[str, Obj], Awaitable[None]],
        wanted: Callable[[Obj], bool] = lambda _: True,
        concurrency: int = 32,
        page_size: int = 500,
    ) -> None:
        self.kube, self.plural = kube, plural
        self._scopes: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self._on_listed, self._on_event, self._wanted = on_listed, on_event, wanted
        self._concurrency, self._page_size = concurrency, page_size
        self._rv: dict[str | None, str] = {}
        self._queues: dict[Key, list[tuple[str, Obj]]] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._workers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ listing

    async def sync(self) -> int:
        """LIST every scope, hand each wanted object to `on_listed` (at most `concurrency` at
        once), and remember the version to watch from. Returns how many were handed over."""
        n = 0
        for scope in self._scopes:
            n += await self._list(scope, remember=True)
        return n

    async def sweep(self, only: Callable[[str], bool] | None = None) -> int:
        """The same full pass, leaving the running watch where it is (a deletion between the
        watch's version and this list's must still reach `on_event`). ``only``: hand over
        just the objects of these namespaces (a sharding take-over)."""
        n = 0
        for scope in self._scopes:
            n += await self._list(scope, remember=False, only=only)
        return n

    @property
    def watching(self) -> bool:
        return bool(self._watchers)

    async def _list(
        self, scope: str | None, *, remember: bool, only: Callable[[str], bool] | None = None
    ) -> int:
        sem = asyncio.Semaphore(self._concurrency)

        async def one(obj: Obj) -> None:
            async with sem:
                try:
                    await self._on_listed(obj)
                except Exception:
                    log.exception(
                        "%s %s/%s: handling the listed object failed", self.plural, *_key(obj)
                    )

        n, version = 0, ""
        async for items, rv in self.kube.pages(self.plural, scope, self._page_size):
            version = rv
            page = [
                _interned(o)
                for o in items
                if self._wanted(o) and (only is None or only(_key(o)[0]))
            ]
            items.clear()  # keep only the wanted objects of this page alive, and not for long
            await asyncio.gather(*(one(o) for o in page))
            n += len(page)
        if remember:
            self._rv[scope] = version
        return n

    # ------------------------------------------------------------------ watching

    def start(self) -> None:
        """Watch every scope from the version the last sync() listed (list first if none)."""
        if not self._watchers:
            self._watchers = [asyncio.create_task(self._watch(s)) for s in self._scopes]

    async def stop(self, *, let_running_finish: bool = False) -> None:
        """Stop watching and drop the events not yet handled (a take-over lists again). With
        `let_running_finish` (going standby), a reconcile in flight is not cancelled halfway
        through its writes; at shutdown everything is cancelled."""
        tasks = [*self._watchers, *([] if let_running_finish else self._workers)]
        self._watchers = []
        for queue in self._queues.values():
            queue.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._rv.clear()

    @property
    def pending(self) -> int:
        """Objects with events not yet handled."""
        return len(self._queues)

    async def _watch(self, scope: str | None) -> None:
        backoff = BACKOFF_MIN
        while True:
            try:
                rv = self._rv.get(scope)
                if not rv:
                    listed = await self._list(scope, remember=True)
                    log.info("%s listed again (%d objects) to watch from", self.plural, listed)
                    continue
                stream = self.kube.watch(self.plural, scope, rv)
                async with contextlib.aclosing(stream):
                    async for kind, obj in stream:
                        version = (obj.get("metadata") or {}).get("resourceVersion")
                        if version:
                            self._rv[scope] = version
                        if kind != "BOOKMARK":
                            self._dispatch(kind, obj)
                        backoff = BACKOFF_MIN
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.status == 410:  # too old (compacted): list again, then watch from there
                    log.info("%s watch expired (410); listing again", self.plural)
                    self._rv.pop(scope, None)
                    continue
                log.warning("%s watch failed: %s; again in %.1fs", self.plural, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception as e:
                log.warning("%s watch broke: %r; again in %.1fs", self.plural, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _dispatch(self, kind: str, obj: Obj) -> None:
        """Queue an event for its object's worker. A newer state of the same object (same uid,
        not deleted) replaces the one still waiting, so a burst of updates is handled once;
        a deletion, or an object recreated under the same name, is never coalesced away."""
        key = _key(_interned(obj))
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = [(kind, obj)]
            worker = asyncio.create_task(self._drain(key))
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
            return
        coalesce(queue, kind, obj)

    async def _drain(self, key: Key) -> None:
        queue = self._queues[key]
        try:
            while queue:
                kind, obj = queue.pop(0)
                try:
                    await self._on_event(kind, obj)
                except Exception:
                    log.exception("%s %s/%s: handling %s failed", self.plural, *key, kind)
                del obj
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]
