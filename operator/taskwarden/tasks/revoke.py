"""Taking a credential back: revoke it, end a task, hold a task that must wait, and clean up
after a deleted one.

Called by tasks/reconciler.py (the `end`, `terminate-as-*` and `wait` actions, and deletions)
and by tasks/issue.py (a token that would already be expired ends the task). Order of writes:
the jti goes on the revocation list and the Secret is deleted, concurrently; then status. A
crash in between is repaired by the next reconcile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from taskwarden import audit, delivery, metrics, names, timeutil
from taskwarden.kube import TASKS, ApiError
from taskwarden.tasks import explain
from taskwarden.tasks.context import Context
from taskwarden.tasks.facts import Body, Verdict, meta


async def drop_secret(ctx: Context, ns: str, name: str, uid: str) -> None:
    """Delete the task's credential Secret, only if it is its own (delivery.owned)."""
    await delivery.remove(ctx.kube, ns, name, uid)
    ctx.index.secrets.pop((ns, delivery.secret_name(name)), None)


async def revoke_credential(ctx: Context, body: Body, reason: str, *, trigger_at: float) -> str:
    """Revocation proper: jti listed and Secret deleted, concurrently; returns the jti ("" if
    the task held none)."""
    ns, name, uid = meta(body)
    cred = (body.get("status") or {}).get("credential") or {}
    jti = cred.get("jti")
    waits: list[Awaitable[None]] = [drop_secret(ctx, ns, name, uid)]
    if jti and cred.get("expiresAt"):
        waits.append(ctx.revocations.add(jti, timeutil.parse(cred["expiresAt"])))
    await asyncio.gather(*waits)
    ctx.holds_credential((ns, name), False)
    if jti:
        metrics.credentials_revoked.labels(reason=reason).inc()
        metrics.revocation_lag.observe(max(0.0, ctx.clock() - trigger_at))
    return str(jti) if jti else ""


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
