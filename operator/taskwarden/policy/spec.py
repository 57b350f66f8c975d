"""The AgentTask spec as a policy decision reads it: `task_request` validates a spec into a
`TaskRequest`, `triples` expands its scopes, `spec_hash` is what an approval binds to.

Called by admission (spec validation), the task controller (before every decision) and policy
evaluation and delegation in this package. Pure and stdlib only; durations are seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from taskwarden import durations, names

DEFAULT_TTL = 30 * 60.0
DEFAULT_CREDENTIAL_TTL_CAP = 10 * 60.0
DEFAULT_MAX_DATA_CLASS = "internal"
MAX_TRIPLES = 4096
"""A task expanding to more tool:action:resource triples is denied: the token's `scope` claim
and the per-decision work must stay bounded."""


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
    delivery: str = names.DELIVERY_SECRET


Triple = tuple[str, str, str]


def triples(task: TaskRequest) -> list[Triple]:
    """The task's scopes expanded to (tool, action, resource), in spec order."""
    return [
        (scope.tool, action, resource)
        for scope in task.scopes
        for action in scope.actions
        for resource in scope.resources
    ]


def show(triple: Triple) -> str:
    """`tool:action:resource`, as messages and the token's `scope` claim spell a triple."""
    return ":".join(triple)


def scope_triples(scope: Scope) -> list[Triple]:
    """One scope expanded to (tool, action, resource), in spec order."""
    return [(scope.tool, a, r) for a in scope.actions for r in scope.resources]


def task_request(namespace: str, name: str, spec: Mapping[str, Any]) -> TaskRequest:
    """Validate an AgentTask spec into a TaskRequest; ValueError names the offending field."""
    agent = spec.get("agent")
    if not isinstance(agent, Mapping):
        raise ValueError("spec.agent is required and must be an object with serviceAccountName")
    service_account = nonempty_str(agent.get("serviceAccountName"), "spec.agent.serviceAccountName")

    raw_scopes = list_of(spec.get("scopes"), "spec.scopes")
    if not raw_scopes:
        raise ValueError("spec.scopes must list at least one scope")
    scopes = tuple(_scope(raw, f"spec.scopes[{i}]") for i, raw in enumerate(raw_scopes))

    audiences = strings(spec.get("audiences"), "spec.audiences")
    if not audiences:
        raise ValueError("spec.audiences must list at least one audience")

    data_class = spec.get("dataClass", DEFAULT_MAX_DATA_CLASS)
    if data_class not in names.DATA_CLASSES:
        raise ValueError(
            f"spec.dataClass {data_class!r} is not one of {', '.join(names.DATA_CLASSES)}"
        )

    ttl = _duration(spec.get("ttl"), "spec.ttl", DEFAULT_TTL)
    credential_ttl = _duration(
        spec.get("credentialTTL"), "spec.credentialTTL", min(ttl, DEFAULT_CREDENTIAL_TTL_CAP)
    )
    delegated_from = spec.get("delegatedFrom")
    if delegated_from is not None:
        delegated_from = nonempty_str(delegated_from, "spec.delegatedFrom")
    delivery = spec.get("delivery", names.DELIVERY_SECRET)
    if delivery not in (names.DELIVERY_SECRET, names.DELIVERY_EXCHANGE):
        raise ValueError(f"spec.delivery {delivery!r} must be secret or exchange")
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
        delivery=delivery,
    )


def _scope(raw: Any, path: str) -> Scope:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path} must be an object with tool, actions and resources")
    tool = nonempty_str(raw.get("tool"), f"{path}.tool")
    actions = strings(raw.get("actions"), f"{path}.actions")
    resources = strings(raw.get("resources"), f"{path}.resources")
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
    if is_list(value):
        return [_plain(item) for item in value]
    return value


# --- Reading plain values -----------------------------------------------------------------------


def nonempty_str(raw: Any, path: str) -> str:
    """`raw` if it is a non-empty string, else ValueError naming `path`."""
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"{path} must be a non-empty string")
    return raw


def is_list(raw: Any) -> TypeGuard[Sequence[Any]]:
    """A JSON array (any non-string sequence: kopf hands out its own sequence types)."""
    return isinstance(raw, Sequence) and not isinstance(raw, str | bytes)


def list_of(raw: Any, path: str) -> list[Any]:
    """`raw` as a list, else ValueError naming `path`."""
    if not is_list(raw):
        raise ValueError(f"{path} must be a list")
    return list(raw)


def strings(raw: Any, path: str) -> tuple[str, ...]:
    """`raw` as a tuple of non-empty strings, else ValueError naming `path` and the item."""
    items = list_of(raw, path)
    for i, item in enumerate(items):
        nonempty_str(item, f"{path}[{i}]")
    return tuple(items)
