"""The API reads an admission review needs: exactly what `admission.needs` asks for.

Called by taskwarden.server.https for each review, and by the approval status controller
(`task_or_none`). Policies come from the API, not from the operator's index, so a standby
replica (whose watches are paused) cannot decide by a stale policy.
"""

from __future__ import annotations

import asyncio
from typing import Any

from taskwarden import admission
from taskwarden.kube import POLICIES, TASKS, ApiError, Kube
from taskwarden.policy import delegation


async def task_or_none(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return await kube.get(TASKS, ns, name)
    except ApiError as e:
        if e.status == 404:
            return None
        raise


async def gather(
    kube: Kube, webhook: str, body: Any, *, consistent: bool = False
) -> admission.Facts:
    """Read from the API what `admission.needs` asks for. Never raises: errors land in
    Facts.error and the review denies (fail closed).

    By default policies are read from the apiserver's watch cache (milliseconds behind; a
    consistent LIST waits up to ~100 ms); the server repeats a refusal's reads with
    `consistent=True`, so a policy created just before the task is never missed. A delegation
    chain is walked upwards from the parent as policy.delegation.next_to_read asks (at most
    MAX_CHAIN tasks), the same walk the task controller makes."""
    need = admission.needs(webhook, body)
    if need is None or not need.namespace:
        return admission.Facts()
    ns = need.namespace

    async def policies() -> tuple[dict[str, Any], ...]:
        if not need.policies:
            return ()
        read = kube.list if consistent else kube.list_cached
        return tuple(await read(POLICIES, ns))

    async def tasks() -> dict[str, dict[str, Any] | None]:
        found = dict(
            zip(
                need.tasks,
                await asyncio.gather(*(task_or_none(kube, ns, n) for n in need.tasks)),
                strict=True,
            )
        )
        if need.follow_delegation:
            for start in need.tasks:
                while (name := delegation.next_to_read(start, found)) is not None:
                    found[name] = await task_or_none(kube, ns, name)
        return found

    async def secrets() -> dict[str, dict[str, Any] | None]:
        found = await asyncio.gather(*(kube.get_secret(ns, n) for n in need.secrets))
        # Only what a review reads (type, metadata): the data is dropped at once.
        return {
            n: None if s is None else {"type": s.get("type"), "metadata": s.get("metadata") or {}}
            for n, s in zip(need.secrets, found, strict=True)
        }

    try:
        pols, found, secs = await asyncio.gather(policies(), tasks(), secrets())
    except ApiError as e:
        return admission.Facts(
            error=f"could not read AgentPolicies, AgentTasks or Secrets of namespace {ns} from the "
            f"Kubernetes API ({e.status} {e.reason}); try again"
        )
    except Exception as e:
        return admission.Facts(
            error=f"could not read AgentPolicies, AgentTasks or Secrets of namespace {ns} "
            f"({type(e).__name__}); try again"
        )
    return admission.Facts(policies=pols, tasks=found, secrets=secs)
