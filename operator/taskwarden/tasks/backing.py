"""The credential backends in a task's life: plan, issue, revoke, and sweep their orphans.

Called by tasks/issue.py (`plan` before the status write, whose credential then names each
downstream credential: `status_entries`; `issue_all` after it, before the Secret), by
tasks/revoke.py (`revoke_all`, alongside the Secret deletion and the jti listing, on every
trigger) and by tasks/sweep.py (`held` before the tasks are listed, `sweep` after). Order of
writes for a task whose tool is backed: ledger (jti), status (jti and, e.g., the role name),
the role, the Secret. A crash after the role leaves an Active task without its Secret, which
`keep` reissues (a new password); a task gone or ended by then has its role dropped by the
sweep, which lists roles before tasks (a role is created only after its task's status named
it, so a role missing its task in the later LIST has no live task).

Never logs or emits a password: audit lines name the backend, the credential and its grants.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskwarden import audit, metrics, policy, timeutil
from taskwarden.backends import Backend, Held, TaskRef
from taskwarden.backends.registry import Registry, Unconfigured
from taskwarden.policy import pgscopes, rules
from taskwarden.tasks.context import Context
from taskwarden.tasks.facts import Body, Key, Verdict, meta

log = logging.getLogger(__name__)
Unavailable = Unconfigured


@dataclass(frozen=True)
class Plan:
    backend: str
    secret_ref: str
    triples: tuple[tuple[str, str, str], ...]


def registry(ctx: Context) -> Registry:
    if ctx.backends is None:
        ctx.backends = Registry(ctx.kube, ctx.settings.watch.operator_namespace)
    return ctx.backends


def plan(ctx: Context, body: Body, req: policy.TaskRequest, verdict: Verdict) -> list[Plan]:
    """Which backends the deciding policy names for the task's tools, with their triples."""
    decision = verdict.decision
    if decision is None or not decision.policy:
        return []
    ns = meta(body)[0]
    raw = ctx.index.policies.get(ns, {}).get(decision.policy)
    if raw is None:
        return []
    parsed = rules.parse_policy(raw)
    plans: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for triple in policy.triples(req):
        rule = rules.backend_of(parsed, triple[0])
        if rule is not None:
            plans.setdefault((rule.backend, rule.backend_secret), []).append(triple)
    return [Plan(b, s, tuple(t)) for (b, s), t in sorted(plans.items())]


def status_entries(uid: str, plans: Sequence[Plan]) -> list[dict[str, str]]:
    """status.credential.backends: what each backend will issue, named before it exists."""
    return [{"name": p.backend, "credential": _credential_name(p.backend, uid)} for p in plans]


def _credential_name(backend: str, uid: str) -> str:
    if backend == pgscopes.NAME:
        return pgscopes.role_name(uid)
    raise AssertionError(f"no credential name for backend {backend}")


def _audit(event: str, body: Body, now: float, **fields: Any) -> None:
    ns, name, uid = meta(body)
    record = {
        "time": audit.now_rfc3339(now),
        "event": event,
        "namespace": ns,
        "name": name,
        "task": {"namespace": ns, "name": name, "uid": uid},
        **fields,
    }
    audit.logger.info(json.dumps(record, sort_keys=True, separators=(",", ":")))


async def issue_all(
    ctx: Context, body: Body, plans: Sequence[Plan], expires_at: float, *, kind: str
) -> dict[str, str]:
    """Issue (or rotate) each planned credential; returns the Secret keys they add. Raises
    Unavailable when a rule's backend Secret is not usable (the task then fails)."""
    ns, name, uid = meta(body)
    data: dict[str, str] = {}
    for p in plans:
        backend = await registry(ctx).get(p.backend, p.secret_ref)
        op = "rotate" if kind == "rotate" else "issue"
        ref = TaskRef(uid, ns, name, p.triples, expires_at)
        started = ctx.clock()
        try:
            issued = await (backend.rotate(ref) if op == "rotate" else backend.issue(ref))
        except Exception:
            metrics.backend_errors.labels(backend=p.backend, operation=op).inc()
            raise
        metrics.backend_duration.labels(backend=p.backend, operation=op).observe(
            ctx.clock() - started
        )
        metrics.backend_issued.labels(backend=p.backend, kind=kind).inc()
        _audit(
            f"backend-{kind}d" if kind != "reissue" else "backend-reissued",
            body,
            ctx.clock(),
            backend=p.backend,
            credential=issued.credential,
            grants=list(issued.grants),
            expiresAt=timeutil.rfc3339(issued.expires_at),
        )
        data.update(issued.secret_data)
    return data


def _named(body: Body) -> list[str]:
    cred = (body.get("status") or {}).get("credential") or {}
    entries = cred.get("backends") or []
    return sorted({str(e.get("name")) for e in entries if isinstance(e, Mapping) and e.get("name")})


async def revoke_all(ctx: Context, body: Body, reason: str) -> None:
    """Revoke the task's downstream credentials on every configured server of each backend
    its status names (idempotent). A failure is logged and counted, never raised: the task
    ends anyway, and the sweep revokes what is left."""
    uid = meta(body)[2]
    for name in _named(body):
        try:
            backends = await registry(ctx).configured(name)
        except Exception as e:
            metrics.backend_errors.labels(backend=name, operation="revoke").inc()
            log.warning("backend %s of task %s not revoked yet: %s", name, uid, e)
            continue
        for backend in backends:
            await _revoke_one(ctx, backend, body, uid, reason)


async def _revoke_one(ctx: Context, backend: Backend, body: Body, uid: str, reason: str) -> None:
    started = ctx.clock()
    try:
        revoked = await backend.revoke(uid)
    except Exception as e:
        metrics.backend_errors.labels(backend=backend.name, operation="revoke").inc()
        log.warning("backend %s credential of task %s not revoked yet: %s", backend.name, uid, e)
        return
    metrics.backend_duration.labels(backend=backend.name, operation="revoke").observe(
        ctx.clock() - started
    )
    if revoked:
        metrics.backend_revoked.labels(backend=backend.name, reason=reason).inc()
        _audit(
            "backend-revoked",
            body,
            ctx.clock(),
            backend=backend.name,
            credential=_credential_name(backend.name, uid),
            reason=reason,
        )


async def held(ctx: Context) -> list[tuple[Backend, Held]]:
    """What every configured backend holds now (read before the sweep lists tasks)."""
    out: list[tuple[Backend, Held]] = []
    try:
        backends = await registry(ctx).configured()
    except Exception as e:
        log.warning("credential backends not listed: %s", e)
        return out
    for backend in backends:
        try:
            out += [(backend, h) for h in await backend.list()]
        except Exception as e:
            metrics.backend_errors.labels(backend=backend.name, operation="list").inc()
            log.warning("backend %s not listed: %s", backend.name, e)
    return out


async def sweep(
    ctx: Context, found: Sequence[tuple[Backend, Held]], tasks: Mapping[Key, Mapping[str, Any]]
) -> int:
    """Revoke each credential whose task is gone (no task with its UID) or not Active."""
    live = {
        (t.get("metadata") or {}).get("uid")
        for t in tasks.values()
        if ((t.get("status") or {}).get("phase")) == "Active"
    }
    revoked = 0
    watched = ctx.settings.watch.namespaces
    for backend, h in found:
        if h.task_uid in live or (watched and h.namespace not in watched):
            continue
        if not ctx.owns(h.namespace):
            continue  # sharding: another replica's task (its owner sweeps it)
        body: Body = {"metadata": {"namespace": h.namespace, "name": "", "uid": h.task_uid}}
        await _revoke_one(ctx, backend, body, h.task_uid, "Orphaned")
        log.info("revoked orphaned %s credential %s (task %s)", backend.name, h.role, h.task_uid)
        revoked += 1
    return revoked
