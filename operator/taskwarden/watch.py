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
import collections
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from taskwarden.kube import ApiError, Kube

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
MAX_WORKERS = 64
"""Objects whose events are handled at once. The events of the others wait, as compact JSON
(`Frozen`): under a burst of creations faster than issuance (10,000s of tasks waiting), a
parsed task body is ~10 KiB of Python objects and a coroutine per object ~3 KiB more, its
JSON ~2 KiB; with one worker per waiting object, 27,000 waiting tasks held ~1 GiB."""


BACKGROUND_WORKERS = 2
"""Listed objects handled at once by the periodic sweep (the start-up resync: `concurrency`)."""
PAGE_SIZE = 100
"""Objects per page of the task LIST: a page is parsed whole (~20 KiB a task with its
managedFields) before it is handled and dropped; smaller pages leave fewer pymalloc arenas
pinned by the long-lived per-task state allocated among them (RSS after a restart)."""


class Frozen:
    """An event's object while it waits: its uid (for coalescing) and its JSON."""

    __slots__ = ("data", "uid")

    def __init__(self, obj: Obj) -> None:
        self.uid = _uid(obj)
        self.data = json.dumps(obj, separators=(",", ":")).encode()

    def thaw(self) -> Obj:
        return _interned(json.loads(self.data))


def _thaw(obj: Obj | Frozen) -> Obj:
    return obj.thaw() if isinstance(obj, Frozen) else obj


def _interned(obj: Obj) -> Obj:
    """Share one string per namespace and per name among every structure keyed by them (the
    index, the scheduler, the live-credential set): each parse makes new copies otherwise.
    And drop `metadata.managedFields`, which nothing here reads: half of a parsed task body."""
    md = obj.get("metadata")
    if md:
        md.pop("managedFields", None)
        for k in ("namespace", "name"):
            if isinstance(md.get(k), str):
                md[k] = sys.intern(md[k])
    return obj


def _key(obj: Obj) -> Key:
    md = obj.get("metadata") or {}
    return str(md.get("namespace") or ""), str(md.get("name") or "")


def _uid(obj: Obj | Frozen) -> str:
    if isinstance(obj, Frozen):
        return obj.uid
    return str((obj.get("metadata") or {}).get("uid") or "")


def coalesce(queue: list[tuple[str, Any]], kind: str, obj: Obj | Frozen) -> None:
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
        urgent: Callable[[str, Obj], bool] = lambda kind, _: kind == "DELETED",
        on_urgent: Callable[[str, Obj], None] = lambda kind, obj: None,
        concurrency: int = 32,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.kube, self.plural = kube, plural
        self._scopes: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self._on_listed, self._on_event, self._wanted = on_listed, on_event, wanted
        self._urgent, self._on_urgent = urgent, on_urgent
        """Events that never wait for a worker (for tasks: the ones that end a credential)."""
        self._concurrency, self._page_size = concurrency, page_size
        self._rv: dict[str | None, str] = {}
        self._queues: dict[Key, list[tuple[str, Obj | Frozen]]] = {}
        self._ready: collections.deque[Key] = collections.deque()
        """Objects with events and no worker on them yet, in order of arrival."""
        self._watchers: list[asyncio.Task[None]] = []
        self._workers: set[asyncio.Task[None]] = set()
        self._working = 0
        self._in_hand: set[Key] = set()
        """Workers not yet past their last look at `_ready` (the set may still hold finished
        ones whose done-callbacks have not run: counting those could leave an event waiting
        with no worker)."""

    # ------------------------------------------------------------------ listing

    async def sync(self) -> int:
        """LIST every scope, hand each wanted object to `on_listed` (at most `concurrency` at
        once), and remember the version to watch from. Returns how many were handed over."""
        n = 0
        for scope in self._scopes:
            n += await self._list(scope, remember=True)
        return n

    async def sweep(
        self, only: Callable[[str], bool] | None = None, *, background: bool = False
    ) -> int:
        """The same full pass, leaving the running watch where it is (a deletion between the
        watch's version and this list's must still reach `on_event`). ``only``: hand over
        just the objects of these namespaces (a sharding take-over)."""
        n = 0
        for scope in self._scopes:
            n += await self._list(scope, remember=False, only=only, background=background)
        return n

    @property
    def watching(self) -> bool:
        return bool(self._watchers)

    async def _list(
        self,
        scope: str | None,
        *,
        remember: bool,
        only: Callable[[str], bool] | None = None,
        background: bool = False,
    ) -> int:
        """`background` (the periodic sweep): BACKGROUND_WORKERS objects at a time, so that a
        turn of the event loop runs at most that many reconciles (~1.5 ms each) between two
        reads of the sockets; with 32 a turn could hold every issuance in flight ~50 ms, and
        sweeps of 1,200-8,000 tasks ran for 14-250 s of a bench's 16-agent rounds."""

        async def worker(todo: list[Obj]) -> None:
            # One object, then a yield: a page of listed tasks whose reconciles need no API
            # call would otherwise run back to back in one turn of the event loop (~500 of
            # them, a stall of a few hundred ms for every issuance in flight). Now a turn runs
            # at most `concurrency` of them before the loop reads the sockets again.
            while todo:
                obj = todo.pop()
                try:
                    await self._on_listed(obj)
                except Exception:
                    log.exception(
                        "%s %s/%s: handling the listed object failed", self.plural, *_key(obj)
                    )
                del obj
                await asyncio.sleep(0)

        n, version = 0, ""
        async for items, rv in self.kube.pages(self.plural, scope, self._page_size):
            version = rv
            page = [
                _interned(o)
                for o in items
                if self._wanted(o) and (only is None or only(_key(o)[0]))
            ]
            items.clear()  # keep only the wanted objects of this page alive, and not for long
            n += len(page)
            page.reverse()  # handled in listing order
            workers = BACKGROUND_WORKERS if background else self._concurrency
            await asyncio.gather(*(worker(page) for _ in range(min(workers, len(page)))))
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
        self._ready.clear()
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
        a deletion, or an object recreated under the same name, is never coalesced away. An
        `urgent` event (a task ending) calls `on_urgent` at once (for tasks: its jti is listed
        now) and goes to the front of the line, also if its object was already waiting (a
        burst of 500 completions at the back of the line took 5 s to revoke); the bound
        stays, so deleting a namespace of 10,000 tasks does not start 10,000 workers."""
        key = _key(_interned(obj))
        urgent = self._urgent(kind, obj)
        if urgent:
            try:  # before anything waits: for tasks, the jti goes on the revocation list now
                self._on_urgent(kind, obj)
            except Exception:
                log.exception("%s %s/%s: the urgent hook failed", self.plural, *key)
        queue = self._queues.get(key)
        if queue is None:
            if self._working < MAX_WORKERS:
                self._queues[key] = [(kind, obj)]
                self._start(key)
            else:  # waits for a worker: compact until then; an ending task goes first
                self._queues[key] = [(kind, Frozen(obj))]
                (self._ready.appendleft if urgent else self._ready.append)(key)
            return
        coalesce(queue, kind, Frozen(obj))  # waits behind the event in hand, or in line
        if urgent and key not in self._in_hand:
            self._ready.appendleft(key)  # was in line: goes first (its old entry is skipped)

    def _start(self, key: Key) -> None:
        self._working += 1
        worker = asyncio.create_task(self._work(key))
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    async def _work(self, first: Key) -> None:
        """Handle `first`, then the objects that have waited longest, while no more than
        MAX_WORKERS workers run (urgent ones may have pushed the count past it)."""
        try:
            await self._handle(first)
            while self._ready and self._working <= MAX_WORKERS:
                await self._handle(self._ready.popleft())
        finally:
            self._working -= 1

    async def _handle(self, key: Key) -> None:
        """Every event of `key`, in order; nothing if another worker has it in hand (it takes
        what arrives meanwhile) or nothing waits for it any more."""
        queue = self._queues.get(key)
        if queue is None or key in self._in_hand:
            return
        self._in_hand.add(key)
        try:
            while queue:
                kind, waiting = queue.pop(0)
                obj = _thaw(waiting)
                del waiting
                try:
                    await self._on_event(kind, obj)
                except Exception:
                    log.exception("%s %s/%s: handling %s failed", self.plural, *key, kind)
                del obj
        finally:
            self._in_hand.discard(key)
            if self._queues.get(key) is queue:
                del self._queues[key]
