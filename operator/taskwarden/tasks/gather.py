"""Gather the facts a decision about one AgentTask needs: the only reads before deciding.

Called by tasks/reconciler.py for each live task. Pods, policies and approvals come from the
in-memory index (kept current by watch events); the delegation chain is read from the API,
because a parent's phase must be current when a child is judged against it.
"""

from __future__ import annotations

from typing import Any

from taskwarden.index import Index
from taskwarden.kube import TASKS, ApiError, Kube
from taskwarden.tasks import checks
from taskwarden.tasks.facts import Body, Facts, meta, parse_request


async def parent_chain(kube: Kube, ns: str, first: str | None) -> tuple[list[Body], str | None]:
    """The delegation chain from `first` upwards, nearest first, and the name of the first
    parent that does not exist. Reads at most one parent more than checks.MAX_PARENTS, so the
    check can tell a chain that is too deep."""
    chain: list[Body] = []
    name = first
    while name and len(chain) <= checks.MAX_PARENTS:
        try:
            parent: dict[str, Any] = await kube.get(TASKS, ns, name)
        except ApiError as e:
            if e.status != 404:
                raise
            return chain, name
        chain.append(parent)
        name = (parent.get("spec") or {}).get("delegatedFrom")
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
