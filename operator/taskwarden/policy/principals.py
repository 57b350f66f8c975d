"""Who may create a task and who may approve one, by the lists in covering AgentPolicies.

Admission calls `requester_allowed` for every new root task and `approver_allowed` (through
approvals) for every AgentApproval. Pure and stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from taskwarden import names
from taskwarden.policy import evaluation, rules
from taskwarden.policy import spec as taskspec

REQUESTER_FIELD = f"metadata.annotations[{names.REQUESTER_ANNOTATION}]"
"""Where the requester is read from, as messages name the field."""


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
    entries = rules.policy_spec(policy).get(field)
    if not taskspec.is_list(entries) or not username:
        return False
    groups = (groups,) if isinstance(groups, str) else tuple(g for g in groups if g)
    return any(_principal_matches(entry, username, groups) for entry in entries)


def requester_allowed(
    task: taskspec.TaskRequest,
    username: str,
    groups: Sequence[str],
    policies: Sequence[Mapping[str, Any]],
) -> tuple[bool, str]:
    """May `username` (with `groups`) create this task? Returns (allowed, message)."""
    own = f"system:serviceaccount:{task.namespace}:{task.service_account}"
    if username and username == own:
        return True, f"requester {username} is the agent's own service account"
    covering = evaluation.covering_policies(task, policies)
    for policy in covering:
        if _listed(policy, "requesters", username, groups):
            return (
                True,
                f"requester {username} is listed in spec.requesters of policy "
                f"{rules.policy_name(policy)}",
            )
    if not covering:
        return False, (
            f"requester {username or '<none>'} in {REQUESTER_FIELD} is not the agent's "
            f"service account {own}, and no AgentPolicy covers the task, so no spec.requesters "
            "applies"
        )
    covering_names = ", ".join(rules.policy_name(p) or "" for p in covering)
    return False, (
        f"requester {username or '<none>'} in {REQUESTER_FIELD} is neither the agent's "
        f"service account {own} nor listed in spec.requesters of a policy covering the task "
        f"({covering_names})"
    )


SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"


def is_service_account(username: str, groups: Sequence[str]) -> bool:
    """A ServiceAccount by its username, or anyone claiming a ServiceAccounts group
    (system:serviceaccounts[:<namespace>]), as an impersonating client can."""
    return username.startswith(SERVICE_ACCOUNT_PREFIX) or any(
        g == SERVICE_ACCOUNTS_GROUP or g.startswith(SERVICE_ACCOUNTS_GROUP + ":") for g in groups
    )


def approver_allowed(policy: Mapping[str, Any], username: str, groups: Sequence[str]) -> bool:
    """True if `username` or one of `groups` is listed in the policy's spec.approvers. A
    ServiceAccount (`is_service_account`) counts only when its own username is listed: a group
    such as system:serviceaccounts:<ns> never makes every workload of a namespace an approver."""
    if is_service_account(username, groups):
        return _listed(policy, "approvers", username, ())
    return _listed(policy, "approvers", username, groups)
