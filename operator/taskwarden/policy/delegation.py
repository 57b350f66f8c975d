"""The one decision for a delegated task: may it exist, and may it hold a credential now?

A task with spec.delegatedFrom lives under its parent. Admission (may this child be created?)
and the task controller (may it hold a credential now?) both call `decide`, so they can never
disagree: same chain walk, same depth limit, same narrowing checks, in the same order.

Callers gather, this module decides. `tasks` maps task names of the child's namespace to the
AgentTask bodies read from the API (None: read and not found; a missing name: not read). Read
them by calling `next_to_read` until it returns None; that reads the parent and at most
`MAX_CHAIN` tasks in all. `policies` are the AgentPolicies of the child's namespace.

The checks, in order, each with its `Code` (the first that fails decides):

1. the parent exists (ParentMissing), has not ended (ParentEnded: a terminal phase or
   spec.completed), and, when `requester` is given, the requester is the parent's agent service
   account (RequesterNotParentAgent); its spec is valid (ParentInvalid);
2. the parent's policy (the one recorded in its status.decision, else the one that would decide
   it) exists (NoParentPolicy) and allows delegation (DelegationNotAllowed);
3. the chain above the parent neither loops (ChainLoops) nor misses a task (AncestorMissing);
4. the child narrows the parent: scopes, audiences, data class (NotANarrowing), and its depth
   is at most the parent policy's maxDepth (DepthExceeded; ChainTooLong when the chain is longer
   than was read, which is deeper than any maxDepth);
5. the parent is Active (ParentNotActive: not refused, the child waits).

Then the result is Delegated, with the parent's expiry (the child's is clamped to it) and,
when a trust domain is given, the RFC 8693 `act` chain for the child's token.

Each caller keeps its own words: `Result.message` is admission's sentence (field path first),
`task_verdict` gives the controller's (phase, reason, message). Pure: no API, no clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from taskwarden import identity, names, timeutil
from taskwarden.credentials import claims as claims_mod
from taskwarden.policy import evaluation, narrowing, rules
from taskwarden.policy import spec as taskspec

MAX_DEPTH: Final = 16
"""The deepest delegation any policy may allow: the CRD's maximum for spec.delegation.maxDepth
(and `credentials.claims.MAX_ACT_DEPTH`, so the deepest child's act chain still verifies)."""
MAX_CHAIN: Final = MAX_DEPTH + 1
"""Tasks read walking up from the child, parent first: one more than MAX_DEPTH, so a chain
that goes on past what was read is deeper than any maxDepth."""

Body = Mapping[str, Any]
Tasks = Mapping[str, Body | None]


class Code(enum.StrEnum):
    """What `decide` found; `Result.refused` says which codes refuse the child."""

    DELEGATED = "Delegated"
    PARENT_MISSING = "ParentMissing"
    PARENT_ENDED = "ParentEnded"
    REQUESTER_NOT_PARENT_AGENT = "RequesterNotParentAgent"
    PARENT_INVALID = "ParentInvalid"
    NO_PARENT_POLICY = "NoParentPolicy"
    DELEGATION_NOT_ALLOWED = "DelegationNotAllowed"
    CHAIN_LOOPS = "ChainLoops"
    ANCESTOR_MISSING = "AncestorMissing"
    NOT_A_NARROWING = "NotANarrowing"
    DEPTH_EXCEEDED = "DepthExceeded"
    CHAIN_TOO_LONG = "ChainTooLong"
    PARENT_NOT_ACTIVE = "ParentNotActive"


@dataclass(frozen=True)
class Result:
    """The decision. `message` is one sentence naming the field (admission's words)."""

    code: Code
    message: str
    parent: str
    subject: str = ""
    """The task the code is about: the parent, or the missing ancestor (AncestorMissing)."""
    state: str = ""
    """The parent's phase, or "completed" (ParentEnded)."""
    policy: str = ""
    """The parent's policy, once known."""
    depth: int = 0
    """The child's delegation depth (1 for a child of a root task), once known."""
    max_depth: int = 0
    parent_expires_at: float | None = None
    """The parent's status.expiresAt (Delegated only): the child never outlives it."""
    act: dict[str, Any] | None = None
    """The RFC 8693 `act` claim for the child's token (Delegated, with a trust domain)."""

    @property
    def ok(self) -> bool:
        """The child may hold a credential now."""
        return self.code is Code.DELEGATED

    @property
    def refused(self) -> bool:
        """The child may not exist (admission refuses it; the controller denies or revokes)."""
        return self.code not in (Code.DELEGATED, Code.PARENT_NOT_ACTIVE)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def delegated_from(task: Body | None) -> str | None:
    """The parent named by an AgentTask body's spec.delegatedFrom, if any."""
    parent = _map(_map(task).get("spec")).get("delegatedFrom")
    return parent if isinstance(parent, str) and parent else None


def next_to_read(parent: str | None, tasks: Tasks) -> str | None:
    """The next task a gatherer should read for the chain above `parent`, or None when done.

    Done means: the chain ends, loops, misses a task, or MAX_CHAIN tasks have been read.
    Both gatherers loop ``while (name := next_to_read(child.delegated_from, tasks))``,
    storing each body (or None for a 404) under its name.
    """
    seen: set[str] = set()
    name = parent
    while name and name not in seen and len(seen) < MAX_CHAIN:
        if name not in tasks:
            return name
        body = tasks[name]
        if body is None:
            return None
        seen.add(name)
        name = delegated_from(body)
    return None


@dataclass(frozen=True)
class _Walk:
    """The chain above the parent: the ancestors' bodies (nearest first) and how it ends."""

    ancestors: tuple[Body, ...]
    code: Code | None  # ChainLoops, AncestorMissing or ChainTooLong; None when complete
    missing: str = ""


def _walk(parent_name: str, parent: Body, tasks: Tasks) -> _Walk:
    seen = {parent_name}
    ancestors: list[Body] = []
    name = delegated_from(parent)
    while name:
        if name in seen:
            return _Walk(tuple(ancestors), Code.CHAIN_LOOPS)
        if name not in tasks:
            return _Walk(tuple(ancestors), Code.CHAIN_TOO_LONG)
        ancestor = tasks[name]
        if ancestor is None:
            return _Walk(tuple(ancestors), Code.ANCESTOR_MISSING, missing=name)
        seen.add(name)
        ancestors.append(ancestor)
        name = delegated_from(ancestor)
    return _Walk(tuple(ancestors), None)


def _parent_policy(
    parent: Body, parent_req: taskspec.TaskRequest, policies: Sequence[Body]
) -> tuple[str, Body | None]:
    """The policy that decided the parent (status.decision.policy), else the one that would."""
    name = _map(_map(parent.get("status")).get("decision")).get("policy")
    if not name:
        name = evaluation.evaluate(parent_req, policies).policy
    name = name if isinstance(name, str) else ""
    for pol in policies:
        if name and rules.policy_name(pol) == name:
            return name, pol
    return name, None


def decide(
    child: taskspec.TaskRequest,
    tasks: Tasks,
    policies: Sequence[Body],
    *,
    requester: str | None = None,
    trust_domain: str | None = None,
) -> Result:
    """Decide a delegated `child` (spec.delegatedFrom set) against its parent chain.

    `requester`: admission passes the creating user, who must be the parent's agent service
    account; the controller passes None. `trust_domain`: the controller passes it to get the
    `act` chain; admission needs none.
    """
    ns, p = child.namespace, child.delegated_from or ""
    parent = tasks.get(p)
    if parent is None:
        return Result(
            Code.PARENT_MISSING,
            f"spec.delegatedFrom: parent task {p} does not exist in namespace {ns}; "
            "a task can only be delegated from an existing task",
            p,
            subject=p,
        )
    status, pspec = _map(parent.get("status")), _map(parent.get("spec"))
    phase = status.get("phase")
    if phase in names.TERMINAL or pspec.get("completed") is True:
        state = str(phase) if phase in names.TERMINAL else "completed"
        return Result(
            Code.PARENT_ENDED,
            f"spec.delegatedFrom: parent task {p} is {state}; "
            "a task can only be delegated from a live task",
            p,
            subject=p,
            state=state,
        )
    if requester is not None:
        agent = _map(pspec.get("agent")).get("serviceAccountName")
        owner = f"system:serviceaccount:{ns}:{agent if isinstance(agent, str) else ''}"
        if requester != owner:
            return Result(
                Code.REQUESTER_NOT_PARENT_AGENT,
                f"metadata.annotations[{names.REQUESTER_ANNOTATION}]: a delegated task must be "
                f"created by its parent's agent service account {owner}, not by {requester}",
                p,
                subject=p,
            )
    try:
        parent_req = taskspec.task_request(ns, p, pspec)
    except ValueError as err:
        message = f"spec.delegatedFrom: parent task {p} is invalid ({err})"
        return Result(Code.PARENT_INVALID, message, p, subject=p)
    return _decide_under_policy(child, parent, parent_req, tasks, policies, trust_domain)


def _decide_under_policy(
    child: taskspec.TaskRequest,
    parent: Body,
    parent_req: taskspec.TaskRequest,
    tasks: Tasks,
    policies: Sequence[Body],
    trust_domain: str | None,
) -> Result:
    ns, p = child.namespace, parent_req.name
    pol_name, pol = _parent_policy(parent, parent_req, policies)
    if pol is None:
        return Result(
            Code.NO_PARENT_POLICY,
            f"spec.delegatedFrom: no AgentPolicy in namespace {ns} allows parent task {p}, "
            "so nothing can be delegated from it",
            p,
            subject=p,
            policy=pol_name,
        )
    allowed, max_depth = narrowing.delegation_limits(pol)
    if not allowed:
        return Result(
            Code.DELEGATION_NOT_ALLOWED,
            f"spec.delegatedFrom: policy {pol_name} of parent task {p} does not allow "
            "delegation (spec.delegation.allowed)",
            p,
            subject=p,
            policy=pol_name,
        )
    walk = _walk(p, parent, tasks)
    if walk.code is Code.CHAIN_LOOPS:
        message = f"spec.delegatedFrom: the delegation chain above {p} loops"
        return Result(walk.code, message, p, subject=p, policy=pol_name, max_depth=max_depth)
    if walk.code is Code.ANCESTOR_MISSING:
        return Result(
            walk.code,
            f"spec.delegatedFrom: task {walk.missing}, an ancestor of parent task {p}, no "
            "longer exists; the delegation chain is broken",
            p,
            subject=walk.missing,
            policy=pol_name,
            max_depth=max_depth,
        )
    # A chain longer than was read is deeper than any maxDepth.
    parent_depth = MAX_CHAIN if walk.code is Code.CHAIN_TOO_LONG else len(walk.ancestors)
    depth = parent_depth + 1
    found = narrowing.first_violation(
        child, parent_req, parent_depth=parent_depth, max_depth=max_depth
    )
    if found is not None:
        check, message = found
        code = Code.NOT_A_NARROWING
        if check == "depth":
            code = walk.code or Code.DEPTH_EXCEEDED
        return Result(
            code,
            message.rstrip("."),
            p,
            subject=p,
            policy=pol_name,
            depth=depth,
            max_depth=max_depth,
        )
    status = _map(parent.get("status"))
    if status.get("phase") != "Active":
        return Result(
            Code.PARENT_NOT_ACTIVE,
            f"spec.delegatedFrom: parent task {p} is not Active yet",
            p,
            subject=p,
            state=str(status.get("phase") or ""),
            policy=pol_name,
            depth=depth,
            max_depth=max_depth,
        )
    expires = status.get("expiresAt")
    chain = (parent, *walk.ancestors)
    return Result(
        Code.DELEGATED,
        f"delegated from parent task {p} at depth {depth} (maxDepth {max_depth} of policy "
        f"{pol_name})",
        p,
        subject=p,
        state="Active",
        policy=pol_name,
        depth=depth,
        max_depth=max_depth,
        parent_expires_at=timeutil.parse(expires) if isinstance(expires, str) else None,
        act=None if trust_domain is None else act_chain(chain, ns, trust_domain),
    )


def act_chain(chain: Sequence[Body], namespace: str, trust_domain: str) -> dict[str, Any]:
    """The RFC 8693 `act` claim for a child of `chain[0]`: the parent, its parent as the prior
    actor, and so on up to the root. Each actor's subject is the SPIFFE ID recorded in its
    status.identity, else the one of its agent service account."""
    act: dict[str, Any] | None = None
    for ancestor in reversed(chain):
        md = _map(ancestor.get("metadata"))
        recorded = _map(_map(ancestor.get("status")).get("identity")).get("spiffeID")
        account = _map(_map(ancestor.get("spec")).get("agent")).get("serviceAccountName", "")
        act = claims_mod.actor(
            spiffe_id=recorded or identity.spiffe_id(trust_domain, namespace, account),
            task={"namespace": namespace, "name": md.get("name", ""), "uid": md.get("uid", "")},
            parent_act=act,
        )
    if act is None:
        raise ValueError("act_chain needs at least the parent task")
    return act


# --- The controller's words -----------------------------------------------------------------


def _gone(r: Result) -> str:
    return f"parent task {r.subject} is gone"


def _not_allowed(r: Result) -> str:
    return (
        f"policy {r.policy} of the parent task does not allow delegation (spec.delegation.allowed)"
    )


def _not_active(r: Result) -> str:
    return f"parent task {r.parent} is not Active yet"


def _too_deep(r: Result) -> str:
    del r
    return "spec.delegatedFrom chain too deep"


def _ended(r: Result) -> str:
    return f"parent task {r.parent} is {r.state}"


def _as_is(r: Result) -> str:
    return r.message


TASK_VERDICTS: Final[Mapping[Code, tuple[str, str, Callable[[Result], str]]]] = {
    Code.PARENT_MISSING: ("Revoked", "ParentRevoked", _gone),
    Code.ANCESTOR_MISSING: ("Revoked", "ParentRevoked", _gone),
    Code.PARENT_ENDED: ("Revoked", "ParentRevoked", _ended),
    Code.REQUESTER_NOT_PARENT_AGENT: ("Denied", "DelegationNotAllowed", _as_is),
    Code.PARENT_INVALID: ("Pending", "ParentNotActive", _not_active),
    Code.PARENT_NOT_ACTIVE: ("Pending", "ParentNotActive", _not_active),
    Code.NO_PARENT_POLICY: ("Denied", "DelegationNotAllowed", _not_allowed),
    Code.DELEGATION_NOT_ALLOWED: ("Denied", "DelegationNotAllowed", _not_allowed),
    Code.CHAIN_LOOPS: ("Denied", "DelegationTooDeep", _too_deep),
    Code.CHAIN_TOO_LONG: ("Denied", "DelegationTooDeep", _too_deep),
    Code.NOT_A_NARROWING: ("Denied", "NotANarrowing", _as_is),
    Code.DEPTH_EXCEEDED: ("Denied", "NotANarrowing", _as_is),
}
"""Code -> (phase, reason, message) as the task controller words it in status and Events."""


def task_verdict(result: Result) -> tuple[str, str, str] | None:
    """The controller's (phase, reason, message) for a result; None when Delegated.

    The phase is the one the checks propose (an Active child whose parent went is Revoked
    through it, a new one Denied; the controller's transitions decide that, as before).
    """
    if result.ok:
        return None
    phase, reason, words = TASK_VERDICTS[result.code]
    return phase, reason, words(result)
