"""Reading AgentPolicy bodies: which policies apply to a task, and their rules parsed.

A malformed policy raises `Invalid` naming the field; evaluation then skips that policy with
reason InvalidPolicy. Called by evaluation, requester/approver checks and delegation in this
package. Pure and stdlib only: policies are plain AgentPolicy dicts as the API returns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskwarden import durations, names
from taskwarden.policy import spec as taskspec


class Invalid(ValueError):
    """A policy field is malformed; the message names it."""


@dataclass(frozen=True)
class Rule:
    """One entry of spec.rules; `max_data_class` is an index into names.DATA_CLASSES."""

    index: int
    tool: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    audiences: tuple[str, ...]
    max_data_class: int
    approval_required: bool
    exchange_required: bool = False
    """`delivery: exchange`: a task under this rule must use spec.delivery: exchange."""


@dataclass(frozen=True)
class Policy:
    """An AgentPolicy parsed for evaluation; limits in seconds, None when not set."""

    name: str
    rules: tuple[Rule, ...]
    max_ttl: float | None
    max_credential_ttl: float | None


def policy_name(policy: Mapping[str, Any]) -> str | None:
    """metadata.name, or None if it is missing or not a non-empty string."""
    metadata = policy.get("metadata") if isinstance(policy, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) and name else None


def policy_spec(policy: Mapping[str, Any]) -> Mapping[str, Any]:
    """spec, or an empty mapping if it is missing or not an object."""
    spec = policy.get("spec") if isinstance(policy, Mapping) else None
    return spec if isinstance(spec, Mapping) else {}


def applies(task: taskspec.TaskRequest, policy: Mapping[str, Any]) -> bool:
    """The policy is in the task's namespace and lists the task's service account as subject."""
    if policy_name(policy) is None:
        return False
    metadata = policy.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("namespace") != task.namespace:
        return False
    subjects = policy_spec(policy).get("subjects")
    accounts = subjects.get("serviceAccounts") if isinstance(subjects, Mapping) else None
    return taskspec.is_list(accounts) and task.service_account in accounts


def parse_policy(policy: Mapping[str, Any]) -> Policy:
    """The policy's rules and limits; `Invalid` names the first malformed field."""
    spec = policy.get("spec")
    if not isinstance(spec, Mapping):
        raise Invalid("spec must be an object")
    raw_rules = spec.get("rules", [])
    if not taskspec.is_list(raw_rules):
        raise Invalid("spec.rules must be a list")
    return Policy(
        name=policy_name(policy) or "",
        rules=tuple(_parse_rule(i, raw) for i, raw in enumerate(raw_rules)),
        max_ttl=_policy_duration(spec.get("maxTTL"), "spec.maxTTL"),
        max_credential_ttl=_policy_duration(spec.get("maxCredentialTTL"), "spec.maxCredentialTTL"),
    )


def _parse_rule(index: int, raw: Any) -> Rule:
    path = f"spec.rules[{index}]"
    if not isinstance(raw, Mapping):
        raise Invalid(f"{path} must be an object")
    try:
        tool = taskspec.nonempty_str(raw.get("tool"), f"{path}.tool")
        actions = taskspec.strings(raw.get("actions", []), f"{path}.actions")
        resources = taskspec.strings(raw.get("resources", []), f"{path}.resources")
        audiences = taskspec.strings(raw.get("audiences", []), f"{path}.audiences")
    except ValueError as err:
        raise Invalid(str(err)) from None
    max_class = raw.get("maxDataClass", taskspec.DEFAULT_MAX_DATA_CLASS)
    if max_class not in names.DATA_CLASSES:
        raise Invalid(
            f"{path}.maxDataClass {max_class!r} is not one of {', '.join(names.DATA_CLASSES)}"
        )
    approval = raw.get("approval", "none")
    if approval not in ("none", "required"):
        raise Invalid(f"{path}.approval {approval!r} must be none or required")
    delivery = raw.get("delivery")
    if delivery not in (None, names.DELIVERY_EXCHANGE):
        raise Invalid(f"{path}.delivery {delivery!r} must be exchange or unset")
    return Rule(
        index=index,
        tool=tool,
        actions=actions,
        resources=resources,
        audiences=audiences,
        max_data_class=names.DATA_CLASSES.index(max_class),
        approval_required=approval == "required",
        exchange_required=delivery == names.DELIVERY_EXCHANGE,
    )


def _policy_duration(raw: Any, path: str) -> float | None:
    if raw is None:
        return None
    try:
        return durations.parse_duration(raw)
    except ValueError as err:
        raise Invalid(f"{path}: {err}") from None
