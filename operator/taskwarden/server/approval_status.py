"""The AgentApproval status controller: {approver, approvedAt, expiresAt, valid, reason}.

Fed by handlers.approval_event through `taskwarden.server.on_approval_event`; started and
stopped with the webhook server by `taskwarden.server.start`. It gathers (the task named by the
approval, the namespace's policies), lets the pure `approvals.status` decide (the same
judgement the task controller applies), writes the status when it changed, audits an approval
that became valid, and re-checks at expiresAt so an expired approval says so by itself.

It lives in the server package because it shares the server's lifecycle and serves the same
admission story (an approval is only as good as the stamp admission wrote), not because it
serves HTTP: it imports nothing from https.py and would move to its own module unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from taskwarden import approvals, audit, timeutil
from taskwarden.kube import APPROVALS, POLICIES, ApiError, Kube
from taskwarden.server import reads

log = logging.getLogger(__name__)


def plain(value: Any) -> Any:
    """kopf hands out Mapping views; the status comparison and the API want plain dicts."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class ApprovalStatusController:
    """Keeps every AgentApproval's status current; one per operator process."""

    def __init__(self, kube: Kube, clock: Callable[[], float] = time.time) -> None:
        self.kube, self.clock = kube, clock
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Bring the approval's status up to date. Never raises."""
        try:
            await self.reconcile(event_type, plain(body))
        except Exception as e:
            md = body.get("metadata") or {}
            log.warning(
                "status of AgentApproval %s/%s not written: %s",
                md.get("namespace"),
                md.get("name"),
                e,
            )

    async def reconcile(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Write status {approver, approvedAt, expiresAt, valid, reason}; re-check at expiry."""
        md = body.get("metadata") or {}
        ns, name = md.get("namespace"), md.get("name")
        if not ns or not name:
            return
        timer = self._timers.pop((ns, name), None)
        if timer is not None:
            timer.cancel()
        if event_type == "DELETED":
            return
        task_name = (body.get("spec") or {}).get("taskName") or ""
        task = await reads.task_or_none(self.kube, ns, task_name) if task_name else None
        policies = await self.kube.list_cached(POLICIES, ns)
        now = self.clock()
        new = approvals.status(body, task, policies, now)
        old = dict(body.get("status") or {})
        if any(old.get(k) != v for k, v in new.items()):
            await self.kube.patch_status(APPROVALS, ns, name, new)
            if new["valid"] and not old.get("valid") and task is not None:
                self._audit(body, task, new, now)
        expires = new.get("expiresAt")
        if new["valid"] and expires:
            delay = max(0.0, timeutil.parse(expires) - now) + 0.5
            self._timers[(ns, name)] = asyncio.get_running_loop().call_later(
                delay, self._recheck, ns, name
            )

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        pending = list(self._pending)
        for t in pending:
            t.cancel()
        for t in pending:
            with contextlib.suppress(BaseException):
                await t

    def _recheck(self, ns: str, name: str) -> None:
        async def run() -> None:
            try:
                body = await self.kube.get(APPROVALS, ns, name)
            except ApiError as e:
                if e.status != 404:
                    log.warning("re-reading approval %s/%s failed: %s", ns, name, e)
                return
            await self.on_event("MODIFIED", body)

        t = asyncio.create_task(run())
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)

    def _audit(
        self, body: Mapping[str, Any], task: Mapping[str, Any], st: Mapping[str, Any], now: float
    ) -> None:
        tmd, spec = task.get("metadata") or {}, body.get("spec") or {}
        audit.emit(
            audit.AuditRecord(
                event="approved" if spec.get("decision") == "approve" else "approval-denied",
                namespace=str(tmd.get("namespace") or ""),
                name=str(tmd.get("name") or ""),
                uid=str(tmd.get("uid") or ""),
                approver=str(st.get("approver") or ""),
                reason=str(spec.get("reason") or ""),
                message=f"AgentApproval {(body.get('metadata') or {}).get('name')}: "
                f"{st.get('reason')}; valid until {st.get('expiresAt')}",
            ),
            now,
        )
