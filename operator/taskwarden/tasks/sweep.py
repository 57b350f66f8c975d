"""The orphan sweeps: delete credential Secrets whose task is gone, terminal, or names another
jti, and bring the index of delivered Secrets in line with the cluster (only Secrets of the
credential type controlled by the AgentTask they are named for: `_ours`); list (then drop)
every ledger entry whose task is gone, terminal, or never made it its current token.

Called by tasks/reconciler.py (`resync_secrets`, `resync_ledger`) at start-up, on take-over and
periodically from runtime.py. Each compares one paged LIST of tasks with what it sweeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from taskwarden import delivery, names, timeutil
from taskwarden.credentials import ledger
from taskwarden.kube import TASKS, ApiError
from taskwarden.tasks import backing
from taskwarden.tasks.context import Context
from taskwarden.tasks.facts import Key

log = logging.getLogger(__name__)
Lock = Callable[[Key], AbstractAsyncContextManager[None]]


def _ours(secret: dict[str, Any], task_name: str) -> bool:
    """May the sweep consider deleting this credential-type Secret? Only when it is named for
    AgentTask `task_name` and controlled by an AgentTask of that name. It is then deleted when
    no task of that name exists (what the garbage collector does too), or when its controller
    UID is the live task's (delivery.owned) and that task no longer holds this token. A Secret
    controlled by anything else, or by nothing, is never the operator's to delete."""
    if secret["metadata"].get("name") != delivery.secret_name(task_name):
        return False
    refs = secret["metadata"].get("ownerReferences") or []
    controller = next((r for r in refs if r.get("controller") is True), None)
    if controller is None or controller.get("kind") != "AgentTask":
        return False
    if controller.get("name") != task_name or not controller.get("uid"):
        return False
    return str(controller.get("apiVersion", "")).split("/")[0] == names.GROUP


async def _list_secrets(ctx: Context) -> list[dict[str, Any]]:
    ns_filter = ctx.settings.watch.namespaces
    if not ns_filter:
        return await ctx.kube.list_secrets(None, names.TASK_LABEL, names.SECRET_TYPE)
    secrets: list[dict[str, Any]] = []
    for ns in ns_filter:
        secrets += await ctx.kube.list_secrets(ns, names.TASK_LABEL, names.SECRET_TYPE)
    return secrets


async def _list_tasks(ctx: Context) -> dict[Key, dict[str, Any]]:
    tasks: dict[Key, dict[str, Any]] = {}
    for ns in ctx.settings.watch.namespaces or (None,):
        for t in await ctx.kube.list_tasks_brief(ns):
            tasks[(t["metadata"]["namespace"], t["metadata"]["name"])] = t
    return tasks


async def _get_task(ctx: Context, key: Key) -> dict[str, Any] | None:
    try:
        return await ctx.kube.get(TASKS, *key)
    except ApiError as e:
        if e.status != 404:
            raise
        return None


def _delivered_here(ctx: Context, e: ledger.Entry, task: dict[str, Any] | None) -> bool:
    """The task was listed Active, and this process has since put the entry's token into its
    Secret, after a status that named it: the entry is the task's current one (newer than the
    LIST, which is why judge doubts it), and the task's own end will revoke it. No GET needed
    to keep it (under rotation, a sweep would otherwise read most tasks again)."""
    if task is None or ((task.get("status") or {}).get("phase")) != "Active":
        return False
    return ctx.index.secrets.get((e.namespace, delivery.secret_name(e.name))) == e.jti


async def resync_ledger(ctx: Context, lock: Lock, *, background: bool = False) -> int:
    """List every ledger entry whose task is gone, not Active, or moved past it without ever
    naming it (ledger.judge), then drop it; drop expired entries. Returns how many were
    listed. The ledger is read before the LIST of tasks: an entry in it was written after its
    task was created, so a task missing from the LIST (or of another UID) is gone for good.
    A task that is listed but not (yet) holding the entry is re-checked against a fresh GET
    under its lock: an issuance in flight holds that lock."""
    held = await backing.held(ctx)  # credential backends: listed before the tasks, too
    await ctx.ledger.load(concurrency=2 if background else 32)
    snapshot = ctx.ledger.entries()
    tasks = await _list_tasks(ctx)
    await backing.sweep(ctx, held, tasks)
    now = ctx.clock()
    expired: list[ledger.Entry] = []
    suspects: list[ledger.Entry] = []
    revoked: list[ledger.Entry] = []
    for e in snapshot:
        if ctx.settings.watch.namespaces and e.namespace not in ctx.settings.watch.namespaces:
            continue
        if not ctx.owns(e.namespace):
            continue  # sharding: another replica's task (its owner sweeps it)
        task = tasks.get((e.namespace, e.name))
        verdict = ledger.judge(e, task, now)
        if verdict == ledger.DROP:
            expired.append(e)
        elif verdict == ledger.REVOKE and (task is None or task["metadata"]["uid"] != e.uid):
            revoked.append(e)
        elif verdict == ledger.REVOKE and not _delivered_here(ctx, e, task):
            suspects.append(e)
    sem = asyncio.Semaphore(32)

    async def recheck(e: ledger.Entry) -> None:
        async with sem, lock((e.namespace, e.name)):
            verdict = ledger.judge(e, await _get_task(ctx, (e.namespace, e.name)), ctx.clock())
        if verdict == ledger.REVOKE:
            revoked.append(e)
        elif verdict == ledger.DROP:
            expired.append(e)

    await asyncio.gather(*(recheck(e) for e in suspects))
    await asyncio.gather(*(ctx.revocations.add(e.jti, e.exp) for e in revoked))
    await ctx.ledger.remove_entries(revoked + expired)
    for e in revoked:
        log.info("revoked jti %s of %s/%s from the ledger", e.jti, e.namespace, e.name)
    return len(revoked)


async def resync_secrets(ctx: Context, lock: Lock) -> int:
    """Delete orphaned credential Secrets (under each task's lock); returns how many."""
    before = dict(ctx.index.secrets)
    secrets = await _list_secrets(ctx)
    # One paged LIST of the tasks (uid, phase, jti only) rather than a GET per Secret: at
    # 10,000 credentials that is the difference between half a minute and a few seconds.
    tasks = await _list_tasks(ctx)
    removed = 0
    foreign = 0
    seen: set[Key] = set()
    for s in secrets:
        if s.get("type") != names.SECRET_TYPE:
            continue
        md = s["metadata"]
        ns, sname = md["namespace"], md["name"]
        if not ctx.owns(ns):
            continue  # sharding: another replica's task (its owner sweeps it)
        task_name = (md.get("labels") or {}).get(names.TASK_LABEL, "")
        jti = (md.get("annotations") or {}).get(names.JTI_ANNOTATION, "")
        seen.add((ns, sname))
        task = tasks.get((ns, task_name))
        if task is None:
            try:  # created after the LIST?
                task = await ctx.kube.get(TASKS, ns, task_name)
            except ApiError as e:
                if e.status != 404:
                    raise
        if not _ours(s, task_name):
            foreign += 1
            log.debug(
                "left Secret %s/%s alone: its controller is not task %s", ns, sname, task_name
            )
            continue
        if task is not None and not delivery.owned(s, task["metadata"].get("uid", "")):
            # Controlled by an earlier task of that name: the garbage collector's to delete.
            continue
        tst = (task or {}).get("status") or {}
        live_jti = (tst.get("credential") or {}).get("jti")
        if task is None or tst.get("phase") != "Active" or live_jti != jti:
            if jti and task is None:
                exp = (md.get("annotations") or {}).get(names.EXP_ANNOTATION)
                if exp:
                    ctx.revocations.add(jti, timeutil.parse(exp))
            async with lock((ns, task_name)):
                # Re-check under the lock: an issue may have just landed.
                if ctx.index.secrets.get((ns, sname)) not in (None, jti) and task:
                    continue
                await ctx.kube.delete_secret(ns, sname, uid=md.get("uid") or None)
                ctx.index.secrets.pop((ns, sname), None)
            removed += 1
            log.info("removed orphaned credential secret %s/%s", ns, sname)
        else:
            # What this process wrote since the LIST wins: the Secret and the task were listed
            # at different instants, and rotations went on in between.
            ctx.index.secrets.setdefault((ns, sname), jti)
    # Forget a Secret this process wrote that the LIST did not show (deleted by someone: keep
    # then reads and re-delivers), but not one written after the LIST began: while tasks are
    # created or rotate, forgetting those only cost a GET of each at its next rotation.
    for k, jti in list(ctx.index.secrets.items()):
        if k not in seen and before.get(k) == jti:
            ctx.index.secrets.pop(k, None)
    if foreign:  # one line per sweep, not one per Secret (8,000 lines a minute in a bench)
        log.info(
            "left %d credential-type Secrets alone: not controlled by the task they name", foreign
        )
    return removed
