"""Issuing, rotating and keeping a task's credential: claims, sign, ledger, status, Secret.

Called by tasks/reconciler.py for the `issue` and `keep` actions. Writes in this order: the
ledger entry of the new jti (durable before anything else names it, so that a task deleted
while no operator runs can still have it revoked), then status (naming the new jti,
conditioned on the resourceVersion that was read, so two replicas can never both issue), then
the Secret. A crash after the ledger write leaves an entry the next sweep lists; a crash
after status leaves a status whose Secret is missing; `keep` finds that and reissues
(revoking the jti that status named). A task with `spec.delivery: exchange` gets no Secret:
the token signed here is dropped, and server/exchange.py signs the jti status names for the pod.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from taskwarden import audit, delivery, lifecycle, metrics, names, policy, rotation, timeutil
from taskwarden.credentials import ledger, tokens
from taskwarden.kube import TASKS
from taskwarden.tasks import backing, explain, revoke, scheduler
from taskwarden.tasks.context import Context
from taskwarden.tasks.facts import Body, Verdict, meta

SECRET_GRACE = 3.0
"""Seconds after an issue during which a missing Secret is awaited, not reissued."""


def _sign(
    ctx: Context,
    body: Body,
    req: policy.TaskRequest,
    verdict: Verdict,
    now: float,
    not_after: float,
) -> tuple[dict[str, Any], str, str]:
    """Claims and signed token for the task, and the key id: the one place a token is signed."""
    ns, name, uid = meta(body)
    att = verdict.attestation
    assert att is not None and att.spiffe_id
    spec = body.get("spec") or {}
    pod = {"name": att.pod_name, "uid": att.pod_uid} if att.pod_name and att.pod_uid else None
    claims = tokens.build_claims(
        issuer=ctx.settings.identity.issuer,
        spiffe_id=att.spiffe_id,
        audiences=list(req.audiences),
        now=now,
        ttl=req.credential_ttl,
        not_after=not_after,
        task={"namespace": ns, "name": name, "uid": uid},
        scopes=[dict(s) for s in spec.get("scopes") or []],
        data_class=req.data_class,
        intent=str(spec.get("intent", "")),
        pod=pod,
        act=verdict.act,
    )
    signer = ctx.keys.signer()  # the private key never leaves the key manager
    return claims, signer.sign(claims, now), signer.kid


async def issue(
    ctx: Context,
    body: Body,
    req: policy.TaskRequest,
    verdict: Verdict,
    expires_at: float,
    *,
    kind: str,
    late: float | None = None,
) -> None:
    """Issue (`issue`), replace (`rotate`) or re-deliver after a crash (`reissue`) a token.
    `late`: seconds a rotation started after its deadline, when it counts as late
    (rotation.late_by): status then says `RotationOnTime=False`."""
    started = ctx.clock()
    ns, name, uid = meta(body)
    key = (ns, name)
    st = body.get("status") or {}
    att = verdict.attestation
    assert att is not None and verdict.decision is not None and att.spiffe_id
    if verdict.parent_expires_at is not None:
        expires_at = min(expires_at, verdict.parent_expires_at)
    now = ctx.clock()
    token_exp = lifecycle.token_expiry(now, req.credential_ttl, expires_at)
    if token_exp <= int(now):
        await revoke.end(ctx, body, "Expired", "Expired", "the task expired", trigger_at=now)
        return
    claims, token, kid = _sign(ctx, body, req, verdict, now, token_exp)
    entry = ledger.Entry(claims["jti"], claims["exp"], claims["iat"], uid, ns, name)
    await ctx.ledger.add(entry)
    if ctx.settings.lifecycle.test_crash_after == "ledger":
        os._exit(70)  # tests only: the crash between ledger and status (config.py)
    exchanged = delivery.exchanged(body.get("spec") or {})
    patch = explain.issue_patch(
        body,
        verdict,
        kind=kind,
        claims=claims,
        kid=kid,
        secret_name="" if exchanged else delivery.secret_name(name),
        expires_at=expires_at,
        now=now,
        rotation_late=late,
    )
    plans = backing.plan(ctx, body, req, verdict)  # credential backends: named in status first
    if plans:
        patch["credential"]["backends"] = backing.status_entries(uid, plans)
    # Status next, conditioned on what we read: loses (409) to any concurrent writer.
    try:
        written = await ctx.kube.patch_status(
            TASKS, ns, name, patch, resource_version=body["metadata"]["resourceVersion"]
        )
    except BaseException:
        # This token never left the process, but a ledger entry leaves only once listed.
        revoke.retire(ctx, uid, {entry.jti: entry.exp})
        raise
    old = st.get("credential") or {}
    if kind == "reissue" and old.get("jti"):
        # The previous token may have reached the pod before the crash: revoke it.
        revoke.retire(ctx, uid, {old["jti"]: timeutil.parse(old["expiresAt"])})
    if not ctx.owns(ns):
        # Sharding: this replica stopped acting on the task's shard while the status was being
        # written (shutdown or a lapsed Lease). Status names the jti, as after a crash here:
        # the shard's next owner finds no credential for it and reissues.
        return
    extra = await _backends(ctx, body, plans, claims, patch, kind, now) if plans else {}
    if extra is None:
        return
    # exchange: this token is dropped; the pod exchanges for this jti (server/exchange.py)
    if not exchanged and not await _deliver(
        ctx, body, att.spiffe_id, claims, token, patch, now, extra, renewing=kind == "rotate"
    ):
        return
    del token
    ctx.holds_credential(key, True)
    rv = (written.get("metadata") or {}).get("resourceVersion")
    if rv:
        ctx.echoes[key] = str(rv)
    metrics.credentials_issued.labels(kind=kind).inc()
    if kind == "issue":
        metrics.issuance_duration.observe(ctx.clock() - started)
    rot = rotation.deadline_of(claims["jti"], claims["iat"], claims["exp"], expires_at)
    if rot is not None:
        ctx.scheduler.schedule(key, scheduler.ROTATE, rot, deadline=claims["exp"])
    ctx.scheduler.schedule(key, "expire", expires_at)
    if kind != "rotate":
        ctx.post_event(body, "Normal", patch["reason"], patch["message"], "Issue")
    elif (
        late is not None and not explain.rotation_behind(st) and ctx.behind_events.take(ctx.clock())
    ):
        # A routine rotation posts no Event (the audit line records it): one API write less
        # per rotation. The first late one does, when the condition flips: while a task stays
        # behind, further Events would only add writes to an operator that is short of them.
        # Rate-limited across tasks (rotation.EVENT_RATE): when the whole operator falls
        # behind, thousands flip at once; the condition on each task and the alert say it.
        msg = explain.rotation_late_message(late, (st.get("credential") or {}).get("expiresAt"))
        ctx.post_event(body, "Warning", rotation.BEHIND, msg, "Rotate")
    audit.emit(
        explain.with_(
            explain.audit_record(body, explain.ISSUE_EVENTS[kind], verdict),
            jti=claims["jti"],
            keyID=kid,
            issuedAt=timeutil.rfc3339(claims["iat"]),
            expiresAt=timeutil.rfc3339(claims["exp"]),
        ),
        now,
    )


async def _backends(
    ctx: Context,
    body: Body,
    plans: list[backing.Plan],
    claims: dict[str, Any],
    patch: dict[str, Any],
    kind: str,
    now: float,
) -> dict[str, str] | None:
    """Issue the downstream credentials status now names (tasks/backing.py); None when the
    task failed instead (its backend is not configured: fail closed)."""
    try:
        extra = await backing.issue_all(ctx, body, plans, claims["exp"], kind=kind)
    except backing.Unavailable as e:
        st = body.get("status") or {}
        issued = {**body, "status": {**st, "credential": patch["credential"]}}
        await revoke.end(ctx, issued, "Failed", "BackendUnavailable", str(e), trigger_at=now)
        return None
    if ctx.settings.lifecycle.test_crash_after == "backend":
        os._exit(70)  # tests only: the crash after the role exists, before its Secret
    return extra


async def _deliver(
    ctx: Context,
    body: Body,
    spiffe_id: str,
    claims: dict[str, Any],
    token: str,
    patch: dict[str, Any],
    now: float,
    extra: dict[str, str] | None = None,
    *,
    renewing: bool = False,
) -> bool:
    """Write the credential Secret (secret delivery); False when the task failed instead.
    A rotation of a Secret this process knows holds the previous token is one conditional
    patch (delivery.renew); anything else is create-or-replace after a read."""
    ns, name, uid = meta(body)
    secret = delivery.credential_secret(
        namespace=ns,
        task_name=name,
        task_uid=uid,
        token=token,
        jti=claims["jti"],
        expires_at=claims["exp"],
        spiffe_id=spiffe_id,
        jwks=ctx.keys.jwks(),
    )
    for key, value in (extra or {}).items():  # a backend's DSN and password (backing.py)
        secret["data"][key] = base64.b64encode(value.encode()).decode()
    skey = (ns, delivery.secret_name(name))
    old = ((body.get("status") or {}).get("credential") or {}).get("jti")
    renewed = (
        renewing
        and bool(old)
        and ctx.index.secrets.get(skey) == old
        and await delivery.renew(ctx.kube, secret, str(old))
    )
    try:
        if not renewed:
            await delivery.deliver(ctx.kube, secret)
    except delivery.NotOwned as e:
        # Someone else's Secret holds the name: never overwrite it; the task fails closed (the
        # jti status now names is listed although the token never left this process).
        st = body.get("status") or {}
        issued = {**body, "status": {**st, "credential": patch["credential"]}}
        await revoke.end(ctx, issued, "Failed", "SecretConflict", str(e), trigger_at=now)
        return False
    ctx.index.secrets[skey] = claims["jti"]
    return True


async def keep(
    ctx: Context,
    body: Body,
    req: policy.TaskRequest,
    verdict: Verdict,
    expires_at: float,
    now: float,
    *,
    fresh: bool = True,
) -> bool:
    """An Active task stays Active: make sure its Secret holds the token status names, and
    rotate once its rotation deadline (rotation.deadline_of) has passed. Only the rotation
    queue rotates (tasks/scheduler.py): any other reconcile that finds a rotation due hands
    it to the queue, so that rotations run in order of expiry and within their concurrency
    limit. True when it issued a token (a rotation, or a reissue after a crash). `fresh`: the
    body was just read (GET), not taken from a watch event or a LIST that may predate this
    process's own last write."""
    ns, name, _ = meta(body)
    key = (ns, name)
    cred = (body.get("status") or {}).get("credential") or {}
    jti = cred.get("jti")
    ctx.holds_credential(key, True)
    skey = (ns, delivery.secret_name(name))
    exchanged = delivery.exchanged(body.get("spec") or {})
    written = ctx.index.secrets.get(skey)
    if not exchanged and written is not None and written != jti and not fresh:
        # This process wrote another token into that Secret, after a status that named it:
        # the body is older than our own write (a sweep's LIST taken while tasks rotate, a
        # lagging watch). Read the task again rather than act on it: acting would reissue,
        # and the conditioned status write would only fail, after a ledger write and a
        # revocation for a token that never left this process.
        ctx.scheduler.schedule(key, "retry", now)
        return False
    if not exchanged and written != jti:
        # Not written by this process (another replica, before a restart): look, then act.
        secret = await ctx.kube.get_secret(*skey)
        held = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(
            names.JTI_ANNOTATION
        )
        if held == jti:
            ctx.index.secrets[skey] = str(held)
        elif now - timeutil.parse(cred["issuedAt"]) < SECRET_GRACE:
            # The writer of that status may still be writing the Secret: look again soon.
            ctx.scheduler.schedule(key, "retry", timeutil.parse(cred["issuedAt"]) + SECRET_GRACE)
            return False
        else:
            # Missing or holding another token (a crash between the two writes): reissue.
            await issue(ctx, body, req, verdict, expires_at, kind="reissue")
            return True
    if verdict.approval and verdict.approval.expires_at:
        ctx.scheduler.schedule(key, "approval", verdict.approval.expires_at)
    issued = timeutil.parse(cred["issuedAt"])
    token_exp = timeutil.parse(cred["expiresAt"])
    rot = rotation.deadline_of(str(jti), issued, token_exp, expires_at)
    if rot is None:
        return False
    if now >= rot and scheduler.rotating(key):
        late = rotation.late_by(now, rot, issued, token_exp)
        await issue(ctx, body, req, verdict, expires_at, kind="rotate", late=late)
        return True
    ctx.scheduler.schedule(key, scheduler.ROTATE, rot, deadline=token_exp)
    return False
