"""Policy decisions: does an AgentPolicy allow an AgentTask, and is a delegated task a narrowing?

The issuing service calls `evaluate` at request time, before every rotation and whenever a
policy changes; admission calls `task_request` (spec validation), `requester_allowed`,
`approver_allowed` and `narrowing_violation`; approvals are bound to `spec_hash`. Pure and stdlib
only: policies are plain AgentPolicy dicts, nothing here reads the clock or calls the API.

Decisions are default deny and are made by short chains of named checks; each failing check
returns a CamelCase reason and one human sentence naming the first thing that was not covered.
That reason and message go to `status.decision`, the Event and the audit record.

Resource patterns are globs: `*` matches a run of characters other than `/`, `**` matches any
run, `?` one character other than `/`, everything else is literal. A task's own resources are
patterns too, so "covered" means *language inclusion*: `repo:acme/*` covers the task resource
`repo:acme/w*` but not `repo:acme/**`, even though the string "repo:acme/**" matches
`repo:acme/*` character by character. Matching runs on a small NFA, never on a backtracking
regex, so hostile patterns cannot cause catastrophic backtracking.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeGuard

from taskwarden import durations

__all__ = [
    "DATA_CLASSES",
    "Decision",
    "Scope",
    "TaskRequest",
    "approver_allowed",
    "clamp_expiry",
    "covering_policies",
    "delegation_limits",
    "evaluate",
    "evaluate_policy",
    "glob_covers",
    "glob_match",
    "narrowing_violation",
    "requester_allowed",
    "spec_hash",
    "task_request",
    "triples",
]

DATA_CLASSES = ("public", "internal", "confidential", "restricted")

ALLOWED = "Allowed"
APPROVAL_REQUIRED = "ApprovalRequired"
NO_MATCHING_POLICY = "NoMatchingPolicy"
SCOPE_NOT_COVERED = "ScopeNotCovered"
AUDIENCE_NOT_ALLOWED = "AudienceNotAllowed"
DATA_CLASS_TOO_HIGH = "DataClassTooHigh"
TTL_TOO_LONG = "TTLTooLong"
CREDENTIAL_TTL_TOO_LONG = "CredentialTTLTooLong"
INVALID_POLICY = "InvalidPolicy"

DEFAULT_TTL = 30 * 60.0
DEFAULT_CREDENTIAL_TTL_CAP = 10 * 60.0
DEFAULT_MAX_DATA_CLASS = "internal"
MAX_TRIPLES = 4096
"""A task expanding to more tool:action:resource triples is denied: the token's `scope` claim
and the per-decision work must stay bounded."""

REQUESTER_ANNOTATION = "metadata.annotations[taskwarden.dev/requester]"


# --- Types ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    tool: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]


@dataclass(frozen=True)
class TaskRequest:
    """What an AgentTask asks for, validated; durations in seconds."""

    namespace: str
    name: str
    service_account: str
    scopes: tuple[Scope, ...]
    audiences: tuple[str, ...]
    data_class: str
    ttl: float
    credential_ttl: float
    delegated_from: str | None = None


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

    @property
    def issuable(self) -> bool:
        """A credential may be issued now, without an approval."""
        return self.allowed and not self.needs_approval


Triple = tuple[str, str, str]


def triples(task: TaskRequest) -> list[Triple]:
    """The task's scopes expanded to (tool, action, resource), in spec order."""
    return [
        (scope.tool, action, resource)
        for scope in task.scopes
        for action in scope.actions
        for resource in scope.resources
    ]


def _show(triple: Triple) -> str:
    return ":".join(triple)


# --- Globs ---------------------------------------------------------------------------------------

_OTHER = ""  # stands for every non-'/' character that is not a literal of either pattern
_MAX_COVER_STEPS = 20_000  # real patterns need a few hundred; this bounds hostile ones


@dataclass(frozen=True)
class _Glob:
    """A glob as a bit-parallel NFA: state i means "tokens before i are matched"; bit `size` is
    the accepting state. Adjacent stars are merged when compiling, so an epsilon closure is a
    single shift."""

    size: int
    literals: Mapping[str, int]  # character -> bits of the literal tokens equal to it
    one: int  # bits of '?' tokens
    star: int  # bits of '*' tokens
    any: int  # bits of '**' tokens

    def close(self, states: int) -> int:
        return states | ((states & (self.star | self.any)) << 1)

    def advance(self, states: int, char: str) -> int:
        if char == "/":
            move, loop = self.literals.get(char, 0), self.any
        else:
            move, loop = self.literals.get(char, 0) | self.one, self.star | self.any
        return self.close(((states & move) << 1) | (states & loop))

    def accepts(self, states: int) -> bool:
        return bool(states >> self.size & 1)


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> _Glob:
    kinds: list[str] = []  # "*", "**", "?" or a literal character
    i = 0
    while i < len(pattern):
        if pattern.startswith("*", i):
            kind = "**" if pattern.startswith("**", i) else "*"
            i += len(kind)
            if kinds and kinds[-1] in ("*", "**"):  # "***" and "*" next to "**" mean "**"
                kind = "**" if "**" in (kind, kinds.pop()) else "*"
            kinds.append(kind)
        else:
            kinds.append(pattern[i])
            i += 1
    literals: dict[str, int] = {}
    for index, kind in enumerate(kinds):
        if kind not in ("*", "**", "?"):
            literals[kind] = literals.get(kind, 0) | 1 << index

    def bits(wanted: str) -> int:
        return sum(1 << index for index, kind in enumerate(kinds) if kind == wanted)

    return _Glob(len(kinds), literals, bits("?"), bits("*"), bits("**"))


def glob_match(pattern: str, value: str) -> bool:
    """True if the string `value` matches the glob `pattern` (see the module docstring)."""
    glob = _compile(pattern)
    states = glob.close(1)
    for char in value:
        states = glob.advance(states, char)
        if not states:
            return False
    return glob.accepts(states)


@lru_cache(maxsize=8192)
def glob_covers(outer: str, inner: str) -> bool:
    """True if every string the glob `inner` matches is matched by the glob `outer`.

    For an `inner` without wildcards this is `glob_match(outer, inner)`. Otherwise it explores
    the product of both pattern automata, determinised, over a finite alphabet (the literals of
    both patterns, '/', and one symbol for "any other character"), looking for a string `inner`
    accepts and `outer` rejects. Past a fixed budget the answer is False: not covered is the
    safe side.
    """
    if inner == outer:
        return True
    if not any(char in "*?" for char in inner):
        return glob_match(outer, inner)
    a, b = _compile(inner), _compile(outer)
    alphabet = sorted({*a.literals, *b.literals, "/", _OTHER})
    start = (a.close(1), b.close(1))
    stack, seen = [start], {start}
    steps = 0
    while stack:
        inner_states, outer_states = stack.pop()
        if a.accepts(inner_states) and not b.accepts(outer_states):
            return False
        for char in alphabet:
            steps += 1
            if steps > _MAX_COVER_STEPS:
                return False
            pair = (a.advance(inner_states, char), b.advance(outer_states, char))
            if pair[0] and pair not in seen:
                seen.add(pair)
                stack.append(pair)
    return True


# --- Task specs ----------------------------------------------------------------------------------


def task_request(namespace: str, name: str, spec: Mapping[str, Any]) -> TaskRequest:
    """Validate an AgentTask spec into a TaskRequest; ValueError names the offending field."""
    agent = spec.get("agent")
    if not isinstance(agent, Mapping):
        raise ValueError("spec.agent is required and must be an object with serviceAccountName")
    service_account = _nonempty_str(
        agent.get("serviceAccountName"), "spec.agent.serviceAccountName"
    )

    raw_scopes = _list(spec.get("scopes"), "spec.scopes")
    if not raw_scopes:
        raise ValueError("spec.scopes must list at least one scope")
    scopes = tuple(_scope(raw, f"spec.scopes[{i}]") for i, raw in enumerate(raw_scopes))

    audiences = _strings(spec.get("audiences"), "spec.audiences")
    if not audiences:
        raise ValueError("spec.audiences must list at least one audience")

    data_class = spec.get("dataClass", DEFAULT_MAX_DATA_CLASS)
    if data_class not in DATA_CLASSES:
        raise ValueError(f"spec.dataClass {data_class!r} is not one of {', '.join(DATA_CLASSES)}")

    ttl = _duration(spec.get("ttl"), "spec.ttl", DEFAULT_TTL)
    credential_ttl = _duration(
        spec.get("credentialTTL"), "spec.credentialTTL", min(ttl, DEFAULT_CREDENTIAL_TTL_CAP)
    )
    delegated_from = spec.get("delegatedFrom")
    if delegated_from is not None:
        delegated_from = _nonempty_str(delegated_from, "spec.delegatedFrom")
    count = sum(len(scope.actions) * len(scope.resources) for scope in scopes)
    if count > MAX_TRIPLES:
        raise ValueError(
            f"spec.scopes expands to {count} tool:action:resource triples; "
            f"at most {MAX_TRIPLES} are allowed"
        )
    return TaskRequest(
        namespace=namespace,
        name=name,
        service_account=service_account,
        scopes=scopes,
        audiences=audiences,
        data_class=data_class,
        ttl=ttl,
        credential_ttl=credential_ttl,
        delegated_from=delegated_from,
    )


def _scope_triples(scope: Scope) -> list[Triple]:
    return [(scope.tool, a, r) for a in scope.actions for r in scope.resources]


def _scope(raw: Any, path: str) -> Scope:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path} must be an object with tool, actions and resources")
    tool = _nonempty_str(raw.get("tool"), f"{path}.tool")
    actions = _strings(raw.get("actions"), f"{path}.actions")
    resources = _strings(raw.get("resources"), f"{path}.resources")
    if not actions or not resources:
        # An empty list would expand to no triples and so be "covered" by any policy.
        raise ValueError(f"{path} must list at least one action and one resource")
    return Scope(tool=tool, actions=actions, resources=resources)


def _duration(raw: Any, path: str, default: float) -> float:
    if raw is None:
        return default
    try:
        seconds = durations.parse_duration(raw)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if seconds <= 0:
        raise ValueError(f"{path} must be longer than zero")
    return seconds


def spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 over canonical JSON of the spec without `completed` (what an approval binds to)."""
    body = {key: value for key, value in spec.items() if key != "completed"}
    canonical = json.dumps(
        _plain(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    # kopf hands out Mapping views rather than dicts; json only serialises real dicts and lists.
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if _is_list(value):
        return [_plain(item) for item in value]
    return value


# --- Reading policies ----------------------------------------------------------------------------


class _Invalid(ValueError):
    """A policy field is malformed; the message names it."""


@dataclass(frozen=True)
class _Rule:
    index: int
    tool: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    audiences: tuple[str, ...]
    max_data_class: int
    approval_required: bool


@dataclass(frozen=True)
class _Policy:
    name: str
    rules: tuple[_Rule, ...]
    max_ttl: float | None
    max_credential_ttl: float | None


def _name(policy: Mapping[str, Any]) -> str | None:
    metadata = policy.get("metadata") if isinstance(policy, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) and name else None


def _spec(policy: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = policy.get("spec") if isinstance(policy, Mapping) else None
    return spec if isinstance(spec, Mapping) else {}


def _applies(task: TaskRequest, policy: Mapping[str, Any]) -> bool:
    """The policy is in the task's namespace and lists the task's service account as subject."""
    if _name(policy) is None:
        return False
    metadata = policy.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("namespace") != task.namespace:
        return False
    subjects = _spec(policy).get("subjects")
    accounts = subjects.get("serviceAccounts") if isinstance(subjects, Mapping) else None
    return _is_list(accounts) and task.service_account in accounts


def _parse_policy(policy: Mapping[str, Any]) -> _Policy:
    spec = policy.get("spec")
    if not isinstance(spec, Mapping):
        raise _Invalid("spec must be an object")
    raw_rules = spec.get("rules", [])
    if not _is_list(raw_rules):
        raise _Invalid("spec.rules must be a list")
    return _Policy(
        name=_name(policy) or "",
        rules=tuple(_parse_rule(i, raw) for i, raw in enumerate(raw_rules)),
        max_ttl=_policy_duration(spec.get("maxTTL"), "spec.maxTTL"),
        max_credential_ttl=_policy_duration(spec.get("maxCredentialTTL"), "spec.maxCredentialTTL"),
    )


def _parse_rule(index: int, raw: Any) -> _Rule:
    path = f"spec.rules[{index}]"
    if not isinstance(raw, Mapping):
        raise _Invalid(f"{path} must be an object")
    try:
        tool = _nonempty_str(raw.get("tool"), f"{path}.tool")
        actions = _strings(raw.get("actions", []), f"{path}.actions")
        resources = _strings(raw.get("resources", []), f"{path}.resources")
        audiences = _strings(raw.get("audiences", []), f"{path}.audiences")
    except ValueError as err:
        raise _Invalid(str(err)) from None
    max_class = raw.get("maxDataClass", DEFAULT_MAX_DATA_CLASS)
    if max_class not in DATA_CLASSES:
        raise _Invalid(f"{path}.maxDataClass {max_class!r} is not one of {', '.join(DATA_CLASSES)}")
    approval = raw.get("approval", "none")
    if approval not in ("none", "required"):
        raise _Invalid(f"{path}.approval {approval!r} must be none or required")
    return _Rule(
        index=index,
        tool=tool,
        actions=actions,
        resources=resources,
        audiences=audiences,
        max_data_class=DATA_CLASSES.index(max_class),
        approval_required=approval == "required",
    )


def _policy_duration(raw: Any, path: str) -> float | None:
    if raw is None:
        return None
    try:
        return durations.parse_duration(raw)
    except ValueError as err:
        raise _Invalid(f"{path}: {err}") from None


def _nonempty_str(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"{path} must be a non-empty string")
    return raw


def _is_list(raw: Any) -> TypeGuard[Sequence[Any]]:
    return isinstance(raw, Sequence) and not isinstance(raw, str | bytes)


def _list(raw: Any, path: str) -> list[Any]:
    if not _is_list(raw):
        raise ValueError(f"{path} must be a list")
    return list(raw)


def _strings(raw: Any, path: str) -> tuple[str, ...]:
    items = _list(raw, path)
    for i, item in enumerate(items):
        _nonempty_str(item, f"{path}[{i}]")
    return tuple(items)


# --- Evaluation: the chain of checks -------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    reason: str
    message: str


@dataclass(frozen=True)
class _Coverage:
    """The rule chosen for each triple, in triple order."""

    chosen: tuple[tuple[Triple, _Rule], ...]


def _check_task_shape(task: TaskRequest) -> _Failure | None:
    count = len(triples(task))
    if count == 0:
        return _Failure(SCOPE_NOT_COVERED, "the task requests no tool:action:resource scope")
    if count > MAX_TRIPLES:
        return _Failure(
            SCOPE_NOT_COVERED,
            f"the task expands to {count} scope triples; at most {MAX_TRIPLES} are allowed",
        )
    if not task.audiences:
        return _Failure(AUDIENCE_NOT_ALLOWED, "the task requests no audience")
    if task.data_class not in DATA_CLASSES:
        return _Failure(
            DATA_CLASS_TOO_HIGH,
            f"data class {task.data_class} is not one of {', '.join(DATA_CLASSES)}",
        )
    return None


def _scope_matches(rule: _Rule, triple: Triple) -> bool:
    """A rule's tool `*` matches any tool and an action `*` any action (the CRD allows both in
    rules only; tasks always name concrete tools and actions)."""
    tool, action, resource = triple
    return (
        (rule.tool == tool or rule.tool == "*")
        and (action in rule.actions or "*" in rule.actions)
        and any(glob_covers(pattern, resource) for pattern in rule.resources)
    )


def _rule_failure(task: TaskRequest, rule: _Rule, policy: _Policy) -> _Failure | None:
    """Why `rule`, which matches a triple's scope, does not cover it; None if it does."""
    for audience in task.audiences:
        if audience not in rule.audiences:
            return _Failure(
                AUDIENCE_NOT_ALLOWED,
                f"audience {audience} is not allowed by rule {rule.index} of policy {policy.name}",
            )
    if DATA_CLASSES.index(task.data_class) > rule.max_data_class:
        return _Failure(
            DATA_CLASS_TOO_HIGH,
            f"data class {task.data_class} exceeds maxDataClass "
            f"{DATA_CLASSES[rule.max_data_class]} of rule {rule.index} of policy {policy.name}",
        )
    return None


def _cover_triples(task: TaskRequest, policy: _Policy) -> _Coverage | _Failure:
    chosen: list[tuple[Triple, _Rule]] = []
    for triple in triples(task):
        matching = [rule for rule in policy.rules if _scope_matches(rule, triple)]
        if not matching:
            return _Failure(
                SCOPE_NOT_COVERED,
                f"scope {_show(triple)} is not covered by any rule of policy {policy.name}",
            )
        failures = [_rule_failure(task, rule, policy) for rule in matching]
        covering = [rule for rule, failure in zip(matching, failures, strict=True) if not failure]
        if not covering:  # explain with the first rule that matched the scope
            return next(failure for failure in failures if failure is not None)
        # Prefer a rule that needs no approval, so that approval is asked only when unavoidable.
        rule = next((r for r in covering if not r.approval_required), covering[0])
        chosen.append((triple, rule))
    return _Coverage(tuple(chosen))


def _check_ttl(task: TaskRequest, policy: _Policy) -> _Failure | None:
    if policy.max_ttl is not None and not task.ttl <= policy.max_ttl:
        return _Failure(
            TTL_TOO_LONG,
            f"ttl {_fmt(task.ttl)} exceeds maxTTL {_fmt(policy.max_ttl)} of policy {policy.name}",
        )
    return None


def _check_credential_ttl(task: TaskRequest, policy: _Policy) -> _Failure | None:
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


def evaluate_policy(task: TaskRequest, policy: Mapping[str, Any]) -> Decision:
    """Decide the task against one policy, as `evaluate` does for each candidate."""
    name = _name(policy)
    if not _applies(task, policy):
        return _deny(
            NO_MATCHING_POLICY,
            f"policy {name} does not apply to service account {task.service_account} "
            f"in namespace {task.namespace}",
            name,
        )
    try:
        parsed = _parse_policy(policy)
    except _Invalid as err:
        return _deny(INVALID_POLICY, f"policy {name} is invalid and was skipped: {err}", name)

    failure = _check_task_shape(task)
    if failure is not None:
        return _deny(failure.reason, failure.message, parsed.name)
    coverage = _cover_triples(task, parsed)
    if isinstance(coverage, _Failure):
        return _deny(coverage.reason, coverage.message, parsed.name)
    for check in _LIMIT_CHECKS:
        failure = check(task, parsed)
        if failure is not None:
            return _deny(failure.reason, failure.message, parsed.name)
    return _allow(parsed, coverage)


def _allow(policy: _Policy, coverage: _Coverage) -> Decision:
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
                f"requires approval for scope {_show(triple)}"
            ),
        )
    used = sorted({rule.index for _, rule in coverage.chosen})
    rules = f"rule {used[0]}" if len(used) == 1 else "rules " + ", ".join(map(str, used))
    return Decision(
        allowed=True,
        needs_approval=False,
        policy=policy.name,
        rule=first_rule,
        reason=ALLOWED,
        message=f"allowed by {rules} of policy {policy.name}",
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
    task: TaskRequest, policies: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    return sorted((p for p in policies if _applies(task, p)), key=lambda p: _name(p) or "")


def evaluate(task: TaskRequest, policies: Sequence[Mapping[str, Any]]) -> Decision:
    """Default-deny decision over all AgentPolicies (any namespace; others are ignored).

    Candidates are the policies of the task's namespace naming its service account, by name.
    The first that allows without approval wins, else the first that allows with approval;
    otherwise the decision of the first candidate explains the denial.
    """
    candidates = _candidates(task, policies)
    if not candidates:
        return _deny(
            NO_MATCHING_POLICY,
            f"no AgentPolicy in namespace {task.namespace} lists service account "
            f"{task.service_account} in spec.subjects.serviceAccounts",
            None,
        )
    decisions = [evaluate_policy(task, policy) for policy in candidates]
    for decision in decisions:
        if decision.allowed and not decision.needs_approval:
            return decision
    for decision in decisions:
        if decision.allowed:
            return decision
    return decisions[0]


def covering_policies(
    task: TaskRequest, policies: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The policies that would allow the task (with or without approval), sorted by name."""
    return [p for p in _candidates(task, policies) if evaluate_policy(task, p).allowed]


# --- Who may request and approve -----------------------------------------------------------------


def _principal_matches(entry: Any, username: str, groups: Sequence[str]) -> bool:
    """`user:<name>` and bare entries match the username, `group:<name>` a group membership."""
    if not isinstance(entry, str):
        return False
    if entry.startswith("group:"):
        group = entry[len("group:") :]
        return bool(group) and group in groups
    if entry.startswith("user:"):
        entry = entry[len("user:") :]
    return bool(entry) and entry == username


def _listed(policy: Mapping[str, Any], field: str, username: str, groups: Sequence[str]) -> bool:
    entries = _spec(policy).get(field)
    if not _is_list(entries) or not username:
        return False
    groups = (groups,) if isinstance(groups, str) else tuple(g for g in groups if g)
    return any(_principal_matches(entry, username, groups) for entry in entries)


def requester_allowed(
    task: TaskRequest,
    username: str,
    groups: Sequence[str],
    policies: Sequence[Mapping[str, Any]],
) -> tuple[bool, str]:
    """May `username` (with `groups`) create this task? Returns (allowed, message)."""
    own = f"system:serviceaccount:{task.namespace}:{task.service_account}"
    if username and username == own:
        return True, f"requester {username} is the agent's own service account"
    covering = covering_policies(task, policies)
    for policy in covering:
        if _listed(policy, "requesters", username, groups):
            return (
                True,
                f"requester {username} is listed in spec.requesters of policy {_name(policy)}",
            )
    if not covering:
        return False, (
            f"requester {username or '<none>'} in {REQUESTER_ANNOTATION} is not the agent's "
            f"service account {own}, and no AgentPolicy covers the task, so no spec.requesters "
            "applies"
        )
    names = ", ".join(_name(p) or "" for p in covering)
    return False, (
        f"requester {username or '<none>'} in {REQUESTER_ANNOTATION} is neither the agent's "
        f"service account {own} nor listed in spec.requesters of a policy covering the task "
        f"({names})"
    )


def approver_allowed(policy: Mapping[str, Any], username: str, groups: Sequence[str]) -> bool:
    """True if `username` or one of `groups` is listed in the policy's spec.approvers."""
    return _listed(policy, "approvers", username, groups)


# --- Delegation ----------------------------------------------------------------------------------


def delegation_limits(policy: Mapping[str, Any]) -> tuple[bool, int]:
    """(allowed, maxDepth) from spec.delegation; absent or malformed means (False, 0).

    `maxDepth` defaults to 1 (children only) when delegation is allowed but no depth is given.
    """
    delegation = _spec(policy).get("delegation")
    if not isinstance(delegation, Mapping) or delegation.get("allowed") is not True:
        return False, 0
    depth = delegation.get("maxDepth", 1)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        return False, 0
    return True, depth


def clamp_expiry(child_expires_at: float, parent_expires_at: float) -> float:
    """A delegated task never outlives its parent: the earlier of the two expiry times."""
    if math.isnan(child_expires_at):
        return parent_expires_at
    return min(child_expires_at, parent_expires_at)


def narrowing_violation(
    child: TaskRequest,
    parent: TaskRequest,
    *,
    parent_depth: int,
    max_depth: int,
    child_expires_at: float,
    parent_expires_at: float,
) -> str | None:
    """None if `child` is a narrowing of `parent`, else one sentence naming the field and rule.

    `parent_depth` is 0 for a task that is not itself delegated; the child's depth is one more
    and must not exceed `max_depth` (delegation.maxDepth of the parent's policy). Expiry never
    makes a violation: the caller clamps it with `clamp_expiry(child_expires_at,
    parent_expires_at)`.
    """
    del child_expires_at, parent_expires_at  # clamped by the caller, never rejected
    delegation = _Delegation(child, parent, parent_depth, max_depth)
    for check in _NARROWING_CHECKS:
        message = check(delegation)
        if message is not None:
            return message
    return None


@dataclass(frozen=True)
class _Delegation:
    child: TaskRequest
    parent: TaskRequest
    parent_depth: int
    max_depth: int


def _check_parent_link(d: _Delegation) -> str | None:
    child, parent = d.child, d.parent
    if child.namespace != parent.namespace or child.delegated_from != parent.name:
        return (
            f"spec.delegatedFrom: {child.delegated_from} must name the parent task "
            f"{parent.namespace}/{parent.name} in the child's own namespace {child.namespace}"
        )
    return None


def _check_child_scopes(d: _Delegation) -> str | None:
    for index, scope in enumerate(d.child.scopes):
        for triple in _scope_triples(scope):
            detail = _uncovered_by_parent(triple, d.parent)
            if detail is not None:
                return (
                    f"spec.scopes[{index}]: {_show(triple)} is not within the scopes of parent "
                    f"task {d.parent.name} ({detail}); a delegated task may only narrow them"
                )
    return None


def _uncovered_by_parent(triple: Triple, parent: TaskRequest) -> str | None:
    tool, action, resource = triple
    same_tool = [s for s in parent.scopes if s.tool == tool]
    if not same_tool:
        return f"the parent has no scope for tool {tool}"
    same_action = [s for s in same_tool if action in s.actions]
    if not same_action:
        return f"the parent does not grant action {action} on tool {tool}"
    patterns = [p for s in same_action for p in s.resources]
    if not any(glob_covers(pattern, resource) for pattern in patterns):
        return f"resource {resource} is not covered by the parent's {', '.join(patterns)}"
    return None


def _check_child_audiences(d: _Delegation) -> str | None:
    for audience in d.child.audiences:
        if audience not in d.parent.audiences:
            return (
                f"spec.audiences: audience {audience} is not among the audiences of parent task "
                f"{d.parent.name}; a delegated task may only narrow them"
            )
    return None


def _check_child_data_class(d: _Delegation) -> str | None:
    child, parent = d.child.data_class, d.parent.data_class
    if (
        child not in DATA_CLASSES
        or parent not in DATA_CLASSES
        or DATA_CLASSES.index(child) > DATA_CLASSES.index(parent)
    ):
        return (
            f"spec.dataClass: {child} is higher than dataClass {parent} of parent task "
            f"{d.parent.name}; a delegated task may only keep or lower it"
        )
    return None


def _check_depth(d: _Delegation) -> str | None:
    depth = d.parent_depth + 1
    if depth > d.max_depth:
        return (
            f"spec.delegatedFrom: delegation depth {depth} exceeds delegation.maxDepth "
            f"{d.max_depth} of the parent's policy"
        )
    return None


_NARROWING_CHECKS: tuple[Callable[[_Delegation], str | None], ...] = (
    _check_parent_link,
    _check_child_scopes,
    _check_child_audiences,
    _check_child_data_class,
    _check_depth,
)
