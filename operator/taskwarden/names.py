"""Every name Taskwarden shares with the cluster: API group, annotations, labels, Secret type,
phases and data classes. One home for each, so that admission, the task controller, the CLI
and the verifier can never disagree. Stdlib only; imported by every layer.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "taskwarden.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# --- annotations and labels ------------------------------------------------------------------
REQUESTER_ANNOTATION: Final = "taskwarden.dev/requester"
"""Stamped by admission on an AgentTask: who created it (JSON: username, groups, extras)."""
APPROVER_ANNOTATION: Final = "taskwarden.dev/approver"
"""Stamped by admission on an AgentApproval: who approved or denied."""
REVOKE_ANNOTATION: Final = "taskwarden.dev/revoke"
"""Set (e.g. by `taskwarden revoke`) to revoke a task at once; the value is the reason."""
TASK_ANNOTATION: Final = "taskwarden.dev/task"
"""On a pod: the task whose credential the pod mutation mounts."""
TASK_LABEL: Final = "taskwarden.dev/task"
"""On a credential Secret: the name of the task it belongs to."""
GUARD_LABEL: Final = "taskwarden.dev/guard"
GUARD_DISABLED: Final = "disabled"
"""A namespace labelled `taskwarden.dev/guard: disabled` opts out of the credential pod guard,
which is on by default everywhere else (never in kube-system or the operator's namespace)."""
JTI_ANNOTATION: Final = "taskwarden.dev/jti"
EXP_ANNOTATION: Final = "taskwarden.dev/expires-at"
SECRET_TYPE: Final = "taskwarden.dev/credential"

# --- AgentTask phases --------------------------------------------------------------------------
TERMINAL: Final = frozenset({"Completed", "Expired", "Revoked", "Denied", "Failed"})
"""Phases a task never leaves."""

# --- data classes, least to most sensitive ------------------------------------------------------
DATA_CLASSES: Final = ("public", "internal", "confidential", "restricted")

# --- delivery (spec.delivery) -------------------------------------------------------------------
DELIVERY_SECRET: Final = "secret"
DELIVERY_EXCHANGE: Final = "exchange"
"""`spec.delivery: exchange`: no Secret; the pod exchanges its pod-bound ServiceAccount token
for the task token at the operator's EXCHANGE_PATH (RFC 8693)."""
EXCHANGE_PATH: Final = "/token"
EXCHANGE_RESOURCE_PREFIX: Final = "taskwarden://"
"""The exchange names its task as `resource` (or `audience`) `taskwarden://<namespace>/<task>`."""
