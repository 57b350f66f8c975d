"""Gather the facts a decision about one AgentTask needs: the only reads before deciding.

Called by tasks/reconciler.py for each live task. Pods, policies and approvals come from the
in-memory index (kept current by watch events); the delegation chain is read from the API,
because a parent's phase must be current when a child is judged against it.
"""

from __future__ import annotations

from typing import Any

from taskwarden.index import Index
from taskwarden.kube import TASKS, ApiError, Kube
from taskwarden.policy import delegation
from taskwarden.tasks.facts import Body, Facts, meta, parse_request


async def parent_chain(kube: Kube, ns: str, first: str | None) -> tuple[list[Body], str | None]:
    """The delegation chain from `first` upwards, nearest first, and the name of the first
    task in it that does not exist. Reads what `policy.delegation.next_to_read` asks for: at
    most MAX_CHAIN tasks, stopping at a loop, so the check can tell a chain that is too deep."""
    read: dict[str, Body | None] = {}
    chain: list[Body] = []
    while (name := delegation.next_to_read(first, read)) is not None:
        try:
            parent: dict[str, Any] = await kube.get(TASKS, ns, name)
        except ApiError as e:
            if e.status != 404:
                raise
            return chain, name
        read[name] = parent
        chain.append(parent)
    return chain, None


async def gather(kube: Kube, index: Index, trust_domain: str, body: Body) -> Facts:
    ns, name, _ = meta(body)
    req, error = parse_request(body)
    parents: list[Body] = []
    missing = None
    if req is not None and req.delegated_from:
        parents, missing = await parent_chain(kube, ns, req.delegated_from)
    return Facts(
        body=body,
        trust_domain=trust_domain,
        request=req,
        spec_error=error,
        policies=index.policies.get(ns, {}),
        pods=index.pods_in(ns),
        approvals=tuple(index.approvals_for(ns, name)),
        parents=tuple(parents),
        missing_parent=missing,
    )
