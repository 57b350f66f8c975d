"""Policy evaluation: does an AgentPolicy allow an AgentTask?

The task controller calls `evaluate` at request time, before every rotation and whenever a
policy changes; admission calls it to find the policy behind a parent task and through
`covering_policies` for requester checks. Pure and stdlib only.

Decisions are default deny and are made by short chains of named checks; each failing check
returns a CamelCase reason and one human sentence naming the first thing that was not covered.
That reason and message go to `status.decision`, the Event and the audit record.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskwarden import durations, names
from taskwarden.policy import globs, pgscopes, rules
from taskwarden.policy import spec as taskspec

ALLOWED = "Allowed"
APPROVAL_REQUIRED = "ApprovalRequired"
NO_MATCHING_POLICY = "NoMatchingPolicy"
SCOPE_NOT_COVERED = "ScopeNotCovered"
AUDIENCE_NOT_ALLOWED = "AudienceNotAllowed"
DATA_CLASS_TOO_HIGH = "DataClassTooHigh"
EXCHANGE_REQUIRED = "ExchangeRequired"
TTL_TOO_LONG = "TTLTooLong"
CREDENTIAL_TTL_TOO_LONG = "CredentialTTLTooLong"
INVALID_POLICY = "InvalidPolicy"
BACKEND_CANNOT_EXPRESS = "BackendCannotExpress"


@dataclass(frozen=True)
class Decision:
    """Outcome of policy evaluation.

    ApprovalRequired is `allowed=True, needs_approval=True`: issue only with a valid approval
    (`issuable` is False). `rule` is set only when allowed: the index of the rule that covered
    the task's first scope triple.
    """

    allowed: bool
    needs_approval: bool
    policy: str | None
    rule: int | None
    reason: str
    message: str
    candidates: tuple[str, ...] = ()
    """Every policy that names the task's service account, by name (set by `evaluate`)."""

    @property
    def issuable(self) -> bool:
        """A credential may be issued now, without an approval."""
        return self.allowed and not self.needs_approval


@dataclass(frozen=True)
class _Failure:
    reason: str
    message: str


@dataclass(frozen=True)
class _Coverage:
    """The rule chosen for each triple, in triple order."""

    chosen: tuple[tuple[taskspec.Triple, rules.Rule], ...]


def _check_task_shape(task: taskspec.TaskRequest) -> _Failure | None:
    count = len(taskspec.triples(task))
    if count == 0:
        return _Failure(SCOPE_NOT_COVERED, "the task requests no tool:action:resource scope")
    if count > taskspec.MAX_TRIPLES:
        return _Failure(
            SCOPE_NOT_COVERED,
            f"the task expands to {count} scope triples; "
            f"at most {taskspec.MAX_TRIPLES} are allowed",
        )
    if not task.audiences:
        return _Failure(AUDIENCE_NOT_ALLOWED, "the task requests no audience")
    if task.data_class not in names.DATA_CLASSES:
        return _Failure(
            DATA_CLASS_TOO_HIGH,
            f"data class {task.data_class} is not one of {', '.join(names.DATA_CLASSES)}",
        )
    return None


def _scope_matches(rule: rules.Rule, triple: taskspec.Triple) -> bool:
    """A rule's tool `*` matches any tool and an action `*` any action (the CRD allows both in
    rules only; tasks always name concrete tools and actions)."""
    tool, action, resource = triple
    return (
        (rule.tool == tool or rule.tool == "*")
        and (action in rule.actions or "*" in rule.actions)
        and any(globs.glob_covers(pattern, resource) for pattern in rule.resources)
    )


def _rule_failure(
    task: taskspec.TaskRequest, rule: rules.Rule, policy: rules.Policy
) -> _Failure | None:
    """Why `rule`, which matches a triple's scope, does not cover it; None if it does."""
    for audience in task.audiences:
        if audience not in rule.audiences:
            return _Failure(
                AUDIENCE_NOT_ALLOWED,
                f"audience {audience} is not allowed by rule {rule.index} of policy {policy.name}",
            )
    if names.DATA_CLASSES.index(task.data_class) > rule.max_data_class:
        return _Failure(
            DATA_CLASS_TOO_HIGH,
            f"data class {task.data_class} exceeds maxDataClass "
            f"{names.DATA_CLASSES[rule.max_data_class]} of rule {rule.index} "
            f"of policy {policy.name}",
        )
    if rule.exchange_required and task.delivery != names.DELIVERY_EXCHANGE:
        return _Failure(
            EXCHANGE_REQUIRED,
            f"spec.delivery {task.delivery} is not allowed by rule {rule.index} of policy "
            f"{policy.name}, which requires spec.delivery: exchange (no credential Secret)",
        )
    return None


def _cover_triples(
    task: taskspec.TaskRequest, policy: rules.Policy
) -> tuple[_Coverage | _Failure, int]:
    """The rule for each triple, or the first triple's failure and how many triples failed."""
    chosen: list[tuple[taskspec.Triple, rules.Rule]] = []
    failed: list[_Failure] = []
    for triple in taskspec.triples(task):
        inexpressible = _backend_failure(task, policy, triple)  # credential backends
        if inexpressible is not None:
            failed.append(inexpressible)
            continue
        matching = [rule for rule in policy.rules if _scope_matches(rule, triple)]
        if not matching:
            failed.append(
                _Failure(
                    SCOPE_NOT_COVERED,
                    f"scope {taskspec.show(triple)} is not covered by any rule of policy "
                    f"{policy.name}",
                )
            )
            continue
        failures = [_rule_failure(task, rule, policy) for rule in matching]
        covering = [rule for rule, failure in zip(matching, failures, strict=True) if not failure]
        if not covering:  # explain with the first rule that matched the scope
            failed.append(next(failure for failure in failures if failure is not None))
            continue
        # Prefer a rule that needs no approval, so that approval is asked only when unavoidable.
        rule = next((r for r in covering if not r.approval_required), covering[0])
        chosen.append((triple, rule))
    if failed:
        return failed[0], len(failed)
    return _Coverage(tuple(chosen)), 0


def _backend_failure(
    task: taskspec.TaskRequest, policy: rules.Policy, triple: taskspec.Triple
) -> _Failure | None:
    """A tool whose rules name the postgres backend: the triple must map to table grants, and
    the credential reaches the pod in its Secret."""
    backed = rules.backend_of(policy, triple[0])
    if backed is None:
        return None
    error = pgscopes.action_error(triple[1]) or pgscopes.resource_error(triple[2])
    if error is None and task.delivery == names.DELIVERY_EXCHANGE:
        error = "spec.delivery exchange cannot carry its credential yet; use delivery: secret"
    if error is None:
        return None
    return _Failure(
        BACKEND_CANNOT_EXPRESS,
        f"scope {taskspec.show(triple)} cannot be expressed by backend {backed.backend} of "
        f"rule {backed.index} of policy {policy.name}: {error}",
    )


def _check_ttl(task: taskspec.TaskRequest, policy: rules.Policy) -> _Failure | None:
    if policy.max_ttl is not None and not task.ttl <= policy.max_ttl:
        return _Failure(
            TTL_TOO_LONG,
            f"ttl {_fmt(task.ttl)} exceeds maxTTL {_fmt(policy.max_ttl)} of policy {policy.name}",
        )
    return None


def _check_credential_ttl(task: taskspec.TaskRequest, policy: rules.Policy) -> _Failure | None:
    limit = policy.max_credential_ttl
    if limit is not None and not task.credential_ttl <= limit:
        return _Failure(
            CREDENTIAL_TTL_TOO_LONG,
            f"credentialTTL {_fmt(task.credential_ttl)} exceeds maxCredentialTTL "
            f"{_fmt(limit)} of policy {policy.name}",
        )
    return None


def _fmt(seconds: float) -> str:
    return durations.format_duration(seconds) if math.isfinite(seconds) else str(seconds)


_LIMIT_CHECKS = (_check_ttl, _check_credential_ttl)


NEVER_CLOSE = 1 << 30
"""The gap of a candidate that cannot be judged (malformed, or not applicable)."""


def evaluate_policy(task: taskspec.TaskRequest, policy: Mapping[str, Any]) -> Decision:
    """Decide the task against one policy, as `evaluate` does for each candidate."""
    return _assess(task, policy)[0]


def _assess(task: taskspec.TaskRequest, policy: Mapping[str, Any]) -> tuple[Decision, int]:
    """The decision of one policy and its gap: how many scope triples and limits (ttl,
    credentialTTL) it leaves uncovered. 0 when allowed. A denial is explained by the first
    uncovered item."""
    name = rules.policy_name(policy)
    if not rules.applies(task, policy):
        msg = (
            f"policy {name} does not apply to service account {task.service_account} "
            f"in namespace {task.namespace}"
        )
        return _deny(NO_MATCHING_POLICY, msg, name), NEVER_CLOSE
    try:
        parsed = rules.parse_policy(policy)
    except rules.Invalid as err:
        msg = f"policy {name} is invalid and was skipped: {err}"
        return _deny(INVALID_POLICY, msg, name), NEVER_CLOSE

    failure = _check_task_shape(task)
    if failure is not None:
        return _deny(failure.reason, failure.message, parsed.name), NEVER_CLOSE
    coverage, gap = _cover_triples(task, parsed)
    failures = [f for f in (check(task, parsed) for check in _LIMIT_CHECKS) if f is not None]
    gap += len(failures)
    if isinstance(coverage, _Failure):
        return _deny(coverage.reason, coverage.message, parsed.name), gap
    if failures:
        return _deny(failures[0].reason, failures[0].message, parsed.name), gap
    return _allow(parsed, coverage), 0


def _allow(policy: rules.Policy, coverage: _Coverage) -> Decision:
    first_rule = coverage.chosen[0][1].index
    gated = [(triple, rule) for triple, rule in coverage.chosen if rule.approval_required]
    if gated:
        triple, rule = gated[0]
        return Decision(
            allowed=True,
            needs_approval=True,
            policy=policy.name,
            rule=first_rule,
            reason=APPROVAL_REQUIRED,
            message=(
                f"policy {policy.name} allows the task only with approval: rule {rule.index} "
                f"requires approval for scope {taskspec.show(triple)}"
            ),
        )
    used = sorted({rule.index for _, rule in coverage.chosen})
    which = f"rule {used[0]}" if len(used) == 1 else "rules " + ", ".join(map(str, used))
    return Decision(
        allowed=True,
        needs_approval=False,
        policy=policy.name,
        rule=first_rule,
        reason=ALLOWED,
        message=f"allowed by {which} of policy {policy.name}",
    )


def _deny(reason: str, message: str, policy: str | None) -> Decision:
    return Decision(
        allowed=False,
        needs_approval=False,
        policy=policy,
        rule=None,
        reason=reason,
        message=message,
    )


def _candidates(
    task: taskspec.TaskRequest, policies: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    return sorted(
        (p for p in policies if rules.applies(task, p)), key=lambda p: rules.policy_name(p) or ""
    )


def evaluate(task: taskspec.TaskRequest, policies: Sequence[Mapping[str, Any]]) -> Decision:
    """Default-deny decision over all AgentPolicies (any namespace; others are ignored).

    Candidates are the policies of the task's namespace naming its service account, by name.
    The first that allows without approval wins, else the first that allows with approval;
    otherwise the closest candidate explains the denial: the one leaving the fewest scope
    triples and limits uncovered (ties by name). Every decision names all candidates.
    """
    candidates = _candidates(task, policies)
    if not candidates:
        return _deny(
            NO_MATCHING_POLICY,
            f"no AgentPolicy in namespace {task.namespace} lists service account "
            f"{task.service_account} in spec.subjects.serviceAccounts",
            None,
        )
    assessed = [_assess(task, policy) for policy in candidates]
    names_ = tuple(rules.policy_name(p) or "" for p in candidates)
    decisions = [d for d, _ in assessed]
    chosen = (
        next((d for d in decisions if d.allowed and not d.needs_approval), None)
        or next((d for d in decisions if d.allowed), None)
        or min(assessed, key=lambda dg: dg[1])[0]  # min keeps the first (by name) on ties
    )
    return dataclasses.replace(chosen, candidates=names_)


def covering_policies(
    task: taskspec.TaskRequest, policies: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The policies that would allow the task (with or without approval), sorted by name."""
    return [p for p in _candidates(task, policies) if evaluate_policy(task, p).allowed]
