"""Taking a credential back: revoke it, end a task, hold a task that must wait, and clean up
after a deleted one.

Called by tasks/reconciler.py (the `end`, `terminate-as-*` and `wait` actions, and deletions)
and by tasks/issue.py (a token that would already be expired ends the task). Order of writes:
the jti goes on the revocation list and the Secret is deleted, concurrently; then status. A
crash in between is repaired by the next reconcile. Ledger entries of the task (its current
token, and one a rotation replaced that is still valid) are listed too, and leave the ledger
only after that (`retire`); a crash before then leaves them for the next sweep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from taskwarden import audit, delivery, metrics, names, timeutil
from taskwarden.kube import TASKS, ApiError
from taskwarden.tasks import backing, explain
from taskwarden.tasks.context import Context
from taskwarden.tasks.facts import Body, Verdict, meta

log = logging.getLogger(__name__)


async def drop_secret(ctx: Context, ns: str, name: str, uid: str) -> None:
    """Delete the task's credential Secret, only if it is its own (delivery.owned)."""
    await delivery.remove(ctx.kube, ns, name, uid)
    ctx.index.secrets.pop((ns, delivery.secret_name(name)), None)


def retire(ctx: Context, uid: str, jtis: dict[str, float]) -> None:
    """List each jti (jti -> exp) now, and drop it from the ledger in the background once the
    list is published: the order that never forgets a live token."""
    listed = [ctx.revocations.add(j, exp) for j, exp in jtis.items()]

    async def then() -> None:
        await asyncio.gather(*listed)
        await _unledger(ctx, uid, list(jtis))

    ctx.spawn(then())


async def revoke_credential(ctx: Context, body: Body, reason: str, *, trigger_at: float) -> str:
    """Revocation proper: jti listed and Secret deleted, concurrently; returns the jti ("" if
    the task held none)."""
    ns, name, uid = meta(body)
    cred = (body.get("status") or {}).get("credential") or {}
    jti = cred.get("jti")
    listed = {e.jti: e.exp for e in ctx.ledger.entries_of(uid, ns) if e.exp > ctx.clock()}
    if jti and cred.get("expiresAt"):
        listed[jti] = timeutil.parse(cred["expiresAt"])
    waits: list[Awaitable[None]] = [drop_secret(ctx, ns, name, uid)]
    waits.append(backing.revoke_all(ctx, body, reason))  # credential backends: role dropped
    waits += [ctx.revocations.add(j, exp) for j, exp in listed.items()]
    await asyncio.gather(*waits)
    if listed:
        ctx.spawn(_unledger(ctx, uid, list(listed), ns))
    ctx.holds_credential((ns, name), False)
    if jti:
        metrics.credentials_revoked.labels(reason=reason).inc()
        metrics.revocation_lag.observe(max(0.0, ctx.clock() - trigger_at))
    return str(jti) if jti else ""


async def _unledger(ctx: Context, uid: str, jtis: list[str], ns: str | None = None) -> None:
    try:
        await ctx.ledger.remove(uid, jtis, ns)
    except Exception as e:  # listed already; the next sweep drops what is left
        log.warning("ledger entries of task %s not removed yet: %s", uid, e)


def cascade(ctx: Context, ns: str, name: str) -> None:
    """Delegated children of an ended task are re-checked (they lose their parent)."""
    children = ctx.index.children_of(ns, name)
    if children:
        ctx.refresh_soon(children)


async def end(
    ctx: Context,
    body: Body,
    phase: str,
    reason: str,
    message: str,
    *,
    trigger_at: float,
    verdict: Verdict | None = None,
) -> None:
    """Move the task to terminal `phase`, taking its credential back first."""
    ns, name, _ = meta(body)
    jti = await revoke_credential(ctx, body, reason, trigger_at=trigger_at)
    now = ctx.clock()
    patch = explain.end_patch(body, phase, reason, message, now, verdict)
    # Unconditional: a terminal phase must land even if the object moved on meanwhile.
    try:
        await ctx.kube.patch_status(TASKS, ns, name, patch)
    except ApiError as e:
        if e.status != 404:
            raise
    ctx.forget((ns, name))
    cascade(ctx, ns, name)
    ctx.post_event(
        body,
        "Normal" if phase in ("Completed", "Expired") else "Warning",
        reason,
        message,
        phase,
    )
    audit.emit(
        explain.with_(
            explain.audit_record(body, explain.end_event(phase), verdict),
            jti=jti,
            reason=reason,
            message=message,
        ),
        now,
    )


async def wait(ctx: Context, body: Body, verdict: Verdict, expires_at: float, now: float) -> None:
    """Pending or AwaitingApproval: write status only when something changed."""
    ns, name, _ = meta(body)
    st = body.get("status") or {}
    if st.get("credential", {}).get("jti"):
        # Back from Active (approval withdrawn or now required): the credential goes.
        await revoke_credential(ctx, body, verdict.reason, trigger_at=now)
    if explain.wait_unchanged(st, verdict):
        return
    patch = explain.wait_patch(body, verdict, expires_at, now)
    await ctx.kube.patch_status(
        TASKS, ns, name, patch, resource_version=body["metadata"]["resourceVersion"]
    )
    ctx.post_event(body, "Normal", verdict.reason, verdict.message, "Wait")
    event = "awaiting-approval" if verdict.phase == "AwaitingApproval" else "pending"
    audit.emit(explain.audit_record(body, event, verdict), now)


async def settle(ctx: Context, body: Body) -> None:
    """A task already in a terminal phase: forget it, and delete a Secret left behind."""
    ns, name, uid = meta(body)
    ctx.forget((ns, name))
    if (ns, delivery.secret_name(name)) in ctx.index.secrets:
        await drop_secret(ctx, ns, name, uid)


async def on_deleted(ctx: Context, body: Body) -> None:
    ns, name, _ = meta(body)
    st = body.get("status") or {}
    if st.get("phase") not in names.TERMINAL:
        await revoke_credential(ctx, body, "Deleted", trigger_at=ctx.clock())
        audit.emit(
            explain.with_(
                explain.audit_record(body, "revoked", None),
                reason="Deleted",
                jti=(st.get("credential") or {}).get("jti", ""),
            ),
            ctx.clock(),
        )
    ctx.forget((ns, name))
    cascade(ctx, ns, name)
