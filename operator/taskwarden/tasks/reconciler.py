"""The AgentTask controller: locks, entry points, retries, and gather -> check -> act.

Called by handlers.py (watch events of tasks, pods, policies, approvals), by runtime.py
(start-up resync, sweeps) and by its own scheduler (expiry and rotation deadlines, retries).
One lock per task serialises all of them in this process; across processes, every move to
Active is a status write conditioned on the resourceVersion that was read, so two operators
can never both issue for one task.

Each reconcile gathers the facts (tasks/gather.py), runs the chain of pure checks
(tasks/checks.py), looks up the action for the task's phase and the verdict in one table
(tasks/transitions.py) and calls an actor (tasks/issue.py, tasks/revoke.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from taskwarden import metrics, timeutil
from taskwarden.config import Settings
from taskwarden.credentials.keymanager import KeyManager
from taskwarden.index import Index, TaskRef
from taskwarden.kube import POLICIES, TASKS, ApiError, Kube
from taskwarden.ledger import Ledger
from taskwarden.policy.evaluation import NO_MATCHING_POLICY
from taskwarden.publishing import RevocationPublisher
from taskwarden.tasks import checks, gather, issue, revoke, sweep, transitions
from taskwarden.tasks.context import Context
from taskwarden.tasks.facts import Body, Facts, Key, Verdict, meta
from taskwarden.tasks.scheduler import ROTATE, Scheduler

log = logging.getLogger(__name__)
RETRY_DELAY = 1.0
CONFLICT_DELAY = 0.05


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        index: Index,
        keys: KeyManager,
        revocations: RevocationPublisher,
        ledger: Ledger,
        clock: Callable[[], float],
        instance: str | None = None,
    ) -> None:
        self.kube, self.settings, self.index, self.clock = kube, settings, index, clock
        self.scheduler = Scheduler(
            self._on_deadline,
            clock,
            rotation_concurrency=settings.lifecycle.rotation_concurrency,
        )
        self.ctx = Context(
            kube=kube,
            settings=settings,
            index=index,
            keys=keys,
            revocations=revocations,
            ledger=ledger,
            clock=clock,
            scheduler=self.scheduler,
            instance=instance or socket.gethostname(),
            refresh_soon=self.refresh_soon,
        )
        self._locks: dict[Key, tuple[asyncio.Lock, list[int]]] = {}
        self.active = asyncio.Event()
        """Set while this replica is the active one (always, when standalone)."""

    # ------------------------------------------------------------------ entry points

    @contextlib.asynccontextmanager
    async def lock(self, key: Key) -> AsyncIterator[None]:
        """Serialise all work on one task in this process. Locks exist only while in use, so
        10,000 idle tasks hold none."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        entry[1][0] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1][0] -= 1
            if entry[1][0] == 0:
                self._locks.pop(key, None)

    def owns(self, key: Key) -> bool:
        """Sharding (h5): whether this replica acts on the task now; every entry point asks,
        again under the task's lock. A task of a shard we do not hold is dropped here."""
        if self.ctx.owns(key[0]):
            return True
        self.ctx.forget(key)
        return False

    def drop_shards(self, lost: Callable[[str], bool]) -> None:
        """Sharding (h5): forget every task of namespaces `lost` says we gave up."""
        for key in {*self.index.tasks, *self.scheduler.keys(), *self.ctx.active}:
            if lost(key[0]):
                self.ctx.forget(key)

    async def on_task_event(self, event_type: str | None, body: Body) -> None:
        await self.active.wait()
        key = meta(body)[:2]
        if not self.owns(key):
            return
        async with self.lock(key):
            if not self.owns(key):
                return
            echo = self.ctx.echoes.pop(key, None)
            if event_type == "DELETED":
                await revoke.on_deleted(self.ctx, body)
            elif echo is None or echo != body["metadata"].get("resourceVersion"):
                await self._guarded(key, body)
            # else: the watch bringing back this process's own issuing write: nothing new.

    async def refresh(self, key: Key, *, cached: bool = False) -> None:
        """Re-read a task and reconcile it: after a pod, policy, approval or parent change.
        `cached` (rotations): read from the API server's watch cache, no etcd read; the body
        then counts as possibly stale (issue.keep re-reads when it names an older jti than
        this process wrote, and the status write is conditioned on its resourceVersion)."""
        await self.active.wait()
        if not self.owns(key):
            return
        async with self.lock(key):
            if not self.owns(key):
                return
            try:
                body = await self.kube.get(TASKS, *key, cached=cached)
            except ApiError as e:
                if e.status == 404:
                    self.ctx.forget(key)
                    return
                raise
            await self._guarded(key, body, fresh=not cached)

    def refresh_soon(self, keys: list[Key]) -> None:
        for key in keys:
            self._spawn(self.refresh(key))

    async def _on_deadline(self, key: Key, kind: str) -> None:
        await self.refresh(key, cached=kind == ROTATE)

    def list_now(self, event_type: str, body: Body) -> None:
        """A watch event that ends the task (facts.ending): put the jti its status names on
        the revocation list at once, before the full revocation (Secret, status, ledger)
        gets its turn. Under a burst of 500 completions the list write otherwise waited for
        the event loop to work through hundreds of revocations (lag p99 1.2-3.3 s). Listing
        is idempotent and the task is ending whatever happens next (completed cannot be
        undone); the reconcile still lists every ledger entry of the task."""
        if not self.active.is_set() or not self.ctx.owns(meta(body)[0]):
            return
        cred = (body.get("status") or {}).get("credential") or {}
        jti, exp = cred.get("jti"), cred.get("expiresAt")
        if jti and exp:
            self.ctx.revocations.add(str(jti), timeutil.parse(str(exp)))

    async def reconcile_now(self, body: Body) -> None:
        """Reconcile a task body read by the start-up resync (the caller knows it is active)."""
        key = meta(body)[:2]
        async with self.lock(key):
            if self.owns(key):
                await self._guarded(key, body)

    async def resync_secrets(self) -> int:
        """Delete credential Secrets whose task is gone, terminal, or holds another jti."""
        return await sweep.resync_secrets(self.ctx, self.lock)

    async def resync_ledger(self, *, background: bool = False) -> int:
        """List (then drop) every ledger entry whose task is gone, terminal or moved on."""
        return await sweep.resync_ledger(self.ctx, self.lock, background=background)

    async def _guarded(self, key: Key, body: Body, *, fresh: bool = False) -> None:
        """`fresh`: the body was just read by a GET; a watch event or a LIST can be older than
        this process's own last write (a lagging watch, a sweep's LIST under rotation)."""
        try:
            await self._reconcile(body, fresh)
        except ApiError as e:
            if e.status == 409:
                # Someone else wrote first (the task changed, or another replica): re-read.
                self.scheduler.schedule(key, "retry", self.clock() + CONFLICT_DELAY)
            elif e.status == 404:
                self.scheduler.schedule(key, "retry", self.clock() + RETRY_DELAY)
            else:
                metrics.reconcile_errors.labels(stage="api").inc()
                log.warning("reconciling %s/%s failed: %s; retrying", *key, e)
                self.scheduler.schedule(key, "retry", self.clock() + RETRY_DELAY)
        except Exception:
            metrics.reconcile_errors.labels(stage="internal").inc()
            log.exception("reconciling %s/%s failed; retrying", *key)
            self.scheduler.schedule(key, "retry", self.clock() + RETRY_DELAY * 5)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.ctx.spawn(coro)

    # ------------------------------------------------------------------ gather, check, act

    async def _reconcile(self, body: Body, fresh: bool) -> None:
        ns, name, uid = meta(body)
        key = (ns, name)
        spec = body.get("spec") or {}
        phase = (body.get("status") or {}).get("phase")
        now = self.clock()
        if transitions.settled(phase):
            await revoke.settle(self.ctx, body)
            return
        agent = spec.get("agent") or {}
        self.index.put_task(
            key,
            TaskRef(
                uid=uid,
                service_account=agent.get("serviceAccountName", ""),
                pod_name=agent.get("podName"),
                phase=phase,
                delegated_from=spec.get("delegatedFrom"),
            ),
        )
        facts = await gather.gather(
            self.kube, self.index, self.settings.identity.trust_domain, body
        )
        stopped_at, verdict = checks.run(facts, now)
        if verdict.reason == NO_MATCHING_POLICY or stopped_at == checks.policy_allows.__name__:
            # A policy and its task applied together: the task's watch can be faster than the
            # policies' (kopf's), and another policy of the namespace may already be indexed
            # (ScopeNotCovered rather than NoMatchingPolicy). A denial is final, so decide again
            # on what the API holds.
            await self._catch_up_policies(ns)
            facts = await gather.gather(
                self.kube, self.index, self.settings.identity.trust_domain, body
            )
            stopped_at, verdict = checks.run(facts, now)
        if not verdict.final:
            self.scheduler.schedule(key, "expire", facts.expires_at)
        needed_approval = bool(
            ((body.get("status") or {}).get("decision") or {}).get("needsApproval")
        )
        action = transitions.action(phase, needed_approval, verdict)
        new_phase, issued = await self._act(action, facts, verdict, now, fresh)
        if new_phase != phase or issued:
            self._count(stopped_at, facts)

    async def _catch_up_policies(self, ns: str) -> None:
        """Read the namespace's policies from the API server's watch cache and put any the
        index has not seen yet (or holds in an older version) into it."""
        known = self.index.policies.get(ns, {})
        for pol in await self.kube.list_cached(POLICIES, ns):
            name = (pol.get("metadata") or {}).get("name")
            if name not in known or known[name].get("spec") != (pol.get("spec") or {}):
                self.index.put_policy(pol)

    def _count(self, stopped_at: str, facts: Facts) -> None:
        """The decision metrics, counted only for a reconcile that acted on them (moved the
        task to another phase, or issued, rotated or reissued its credential) and once it did:
        re-checks that change nothing (the operator's own status events, sweeps, retries after
        a conflict) are not decisions."""
        if checks.reached(stopped_at, checks.policy_allows):
            allowed = facts.decision.allowed
            metrics.policy_decisions.labels(decision="allow" if allowed else "deny").inc()
        if checks.reached(stopped_at, checks.identity_attested):
            att = facts.attestation
            metrics.identity_verifications.labels(result="ok" if att.ok else att.reason).inc()

    async def _act(
        self, action: str, facts: Facts, verdict: Verdict, now: float, fresh: bool = False
    ) -> tuple[str | None, bool]:
        """Call the actor; returns the phase the task is in afterwards, and whether a
        credential was issued (first issue, rotation, reissue)."""
        ctx, body = self.ctx, facts.body
        if action == transitions.KEEP:
            issued = await issue.keep(
                ctx, body, facts.req, verdict, facts.expires_at, now, fresh=fresh
            )
            return (body.get("status") or {}).get("phase"), issued
        return await self._change(action, facts, verdict, now), action == transitions.ISSUE

    async def _change(self, action: str, facts: Facts, verdict: Verdict, now: float) -> str:
        ctx, body = self.ctx, facts.body
        if action == transitions.END:
            at = verdict.at if verdict.at is not None else now
            await revoke.end(
                ctx,
                body,
                verdict.phase,
                verdict.reason,
                verdict.message,
                trigger_at=at,
                verdict=verdict,
            )
            return verdict.phase
        if action == transitions.ISSUE:
            await issue.issue(ctx, body, facts.req, verdict, facts.expires_at, kind="issue")
            return "Active"
        if action == transitions.WAIT:
            await revoke.wait(ctx, body, verdict, facts.expires_at, now)
            return verdict.phase
        if action == transitions.WITHDRAW:
            reason = transitions.withdrawal_reason(bool(facts.approvals))
            await revoke.end(
                ctx, body, "Revoked", reason, verdict.message, trigger_at=now, verdict=verdict
            )
            return "Revoked"
        if action in (transitions.REVOKE, transitions.DENY):
            ended = "Revoked" if action == transitions.REVOKE else "Denied"
            await revoke.end(
                ctx, body, ended, verdict.reason, verdict.message, trigger_at=now, verdict=verdict
            )
            return ended
        raise AssertionError(f"no actor for {action}")
