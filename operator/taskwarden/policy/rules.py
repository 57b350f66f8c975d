"""Reading AgentPolicy bodies: which policies apply to a task, and their rules parsed.

A malformed policy raises `Invalid` naming the field; evaluation then skips that policy with
reason InvalidPolicy. Called by evaluation, requester/approver checks and delegation in this
package. Pure and stdlib only: policies are plain AgentPolicy dicts as the API returns them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskwarden import durations, names
from taskwarden.policy import pgscopes
from taskwarden.policy import spec as taskspec

BACKEND_JWT = "jwt"
BACKENDS = (BACKEND_JWT, pgscopes.NAME)
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


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
    backend: str = BACKEND_JWT
    """`backend.name`: which backend issues the tool's credential (credential backends)."""
    backend_secret: str = ""
    """`backend.secretRef`: the Secret in the operator namespace holding its settings."""


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
    parsed = tuple(_parse_rule(i, raw) for i, raw in enumerate(raw_rules))
    _check_one_backend_per_tool(parsed)
    return Policy(
        name=policy_name(policy) or "",
        rules=parsed,
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
    backend, secret = _parse_backend(raw.get("backend"), path)
    if backend == pgscopes.NAME:
        _check_postgres(path, tool, actions, resources, delivery)
    return Rule(
        index=index,
        tool=tool,
        actions=actions,
        resources=resources,
        audiences=audiences,
        max_data_class=names.DATA_CLASSES.index(max_class),
        approval_required=approval == "required",
        exchange_required=delivery == names.DELIVERY_EXCHANGE,
        backend=backend,
        backend_secret=secret,
    )


# --- Credential backends (docs/backends.md) ------------------------------------------------------


def _parse_backend(raw: Any, path: str) -> tuple[str, str]:
    """`backend: {name, secretRef}`; unset is the JWT issuer."""
    if raw is None:
        return BACKEND_JWT, ""
    if not isinstance(raw, Mapping):
        raise Invalid(f"{path}.backend must be an object with name and secretRef")
    name = raw.get("name")
    if name not in BACKENDS:
        raise Invalid(f"{path}.backend.name {name!r} must be one of {', '.join(BACKENDS)}")
    secret = raw.get("secretRef", "")
    if name == BACKEND_JWT:
        if secret:
            raise Invalid(f"{path}.backend.secretRef must be unset for the jwt backend")
        return BACKEND_JWT, ""
    if not isinstance(secret, str) or not _DNS_NAME.match(secret):
        raise Invalid(
            f"{path}.backend.secretRef must name a Secret in the operator namespace "
            "(a DNS subdomain name)"
        )
    return str(name), secret


def _check_postgres(
    path: str,
    tool: str,
    actions: tuple[str, ...],
    resources: tuple[str, ...],
    delivery: Any,
) -> None:
    """A rule naming the postgres backend covers only scopes that map to table grants."""
    if tool == "*":
        raise Invalid(f"{path}.tool must name one tool when backend.name is postgres, not *")
    if delivery == names.DELIVERY_EXCHANGE:
        raise Invalid(
            f"{path}.delivery: exchange is not supported with backend postgres yet "
            "(the credential reaches the pod in its Secret)"
        )
    for i, action in enumerate(actions):
        error = pgscopes.action_error(action)
        if error:
            raise Invalid(f"{path}.actions[{i}]: {error}")
    for i, resource in enumerate(resources):
        error = pgscopes.resource_error(resource)
        if error:
            raise Invalid(f"{path}.resources[{i}]: {error}")


def _check_one_backend_per_tool(parsed: tuple[Rule, ...]) -> None:
    """The backend is the tool's: every rule of one policy for a tool names the same one."""
    seen: dict[str, Rule] = {}
    for rule in parsed:
        first = seen.setdefault(rule.tool, rule)
        if (first.backend, first.backend_secret) != (rule.backend, rule.backend_secret):
            raise Invalid(
                f"spec.rules[{rule.index}].backend differs from spec.rules[{first.index}].backend"
                f" for tool {rule.tool}: all rules of a policy for one tool name the same backend"
            )


def backend_of(policy: Policy, tool: str) -> Rule | None:
    """The rule naming a backend other than the JWT issuer for `tool`, if any."""
    return next((r for r in policy.rules if r.tool == tool and r.backend != BACKEND_JWT), None)


def _policy_duration(raw: Any, path: str) -> float | None:
    if raw is None:
        return None
    try:
        return durations.parse_duration(raw)
    except ValueError as err:
        raise Invalid(f"{path}: {err}") from None
