"""Prometheus metric definitions (names fixed by the contract). Definitions only, no logic;
`taskwarden_build_info` is set here, once, from installed package metadata (kopf is not imported).

Services import this module and update the metrics; cli.py serves them on the metrics port.
No label ever carries a token, a jti or any other per-credential value (bounded cardinality).
"""

from __future__ import annotations

import importlib.metadata
import platform

from prometheus_client import Counter, Gauge, Histogram

from taskwarden import __version__

_LATENCY = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

credentials_issued = Counter(
    "taskwarden_credentials_issued",
    "Credentials issued (first issue and rotations).",
    ["kind"],
)
credentials_revoked = Counter(
    "taskwarden_credentials_revoked", "Credentials revoked, by reason.", ["reason"]
)
active_credentials = Gauge("taskwarden_active_credentials", "Tasks holding a live credential.")
policy_decisions = Counter(
    "taskwarden_policy_decisions", "Policy decisions, by outcome.", ["decision"]
)
issuance_duration = Histogram(
    "taskwarden_issuance_duration_seconds",
    "From the task event to the credential Secret written and status Active.",
    buckets=_LATENCY,
)
revocation_lag = Histogram(
    "taskwarden_revocation_lag_seconds",
    "From the revocation trigger (completion, expiry, context change) to Secret gone, jti listed.",
    buckets=_LATENCY,
)
revocation_publish = Histogram(
    "taskwarden_revocation_publish_seconds",
    "From a revoked jti added to the revocation list to the ConfigMap write that holds it.",
    buckets=_LATENCY,
)
admission_requests = Counter(
    "taskwarden_admission_requests", "Admission reviews answered.", ["webhook", "allowed"]
)
admission_duration = Histogram(
    "taskwarden_admission_duration_seconds",
    "Time to answer an admission review, in process.",
    ["webhook"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)
identity_verifications = Counter(
    "taskwarden_identity_verifications", "Pod attestations, by result.", ["result"]
)
signing_key_age = Gauge("taskwarden_signing_key_age_seconds", "Age of the active signing key.")
revocation_list_entries = Gauge(
    "taskwarden_revocation_list_entries",
    "Revoked jti this replica holds and publishes; none is dropped before its token expires "
    "or its signing key is retired.",
)
revocation_list_capacity = Gauge(
    "taskwarden_revocation_list_capacity",
    "Live entries above which every signing key is retired (TASKWARDEN_REVOCATION_MAX_ENTRIES).",
)
revocation_overflow_rotations = Counter(
    "taskwarden_revocation_overflow_rotations",
    "Emergency key rotations because the revocation list went over its capacity: each one "
    "invalidates every token signed before it.",
)
revocation_entries_retired = Counter(
    "taskwarden_revocation_entries_retired",
    "Revocation entries dropped before expiry because their signing key was retired.",
)
reconcile_errors = Counter(
    "taskwarden_reconcile_errors", "Errors while reconciling a task, by stage.", ["stage"]
)
live_tasks = Gauge(
    "taskwarden_live_tasks", "Non-terminal tasks the operator is tracking (Pending to Active)."
)
replica_active = Gauge(
    "taskwarden_replica_active",
    "1 while this replica reconciles tasks (on the shards it holds); 0 before start and at "
    "shutdown.",
)
shards_owned = Gauge(
    "taskwarden_shards_owned",
    "Task shards this replica holds the Lease of and acts on (all of them when standalone).",
)
shards_configured = Gauge(
    "taskwarden_shards_configured",
    "Task shards configured (TASKWARDEN_SHARDS); sum(taskwarden_shards_owned) should equal it.",
)
shard_rebalances = Counter(
    "taskwarden_shard_rebalances",
    "Shards this replica gained or lost (a join, a leave, a missed renewal).",
    ["change"],
)
rotation_lag = Gauge(
    "taskwarden_rotation_lag_seconds",
    "How far rotation is behind: the longest any due rotation has waited past its deadline "
    "(0 when none waits). Updated every second while rotations wait.",
)
rotation_slack_used = Gauge(
    "taskwarden_rotation_slack_used_ratio",
    "Of the time between a waiting rotation's deadline and the expiry of the credential it "
    "replaces, the largest fraction already spent waiting: 1 means a credential expired "
    "un-rotated. Independent of the credential TTL; what TaskwardenRotationBehind watches.",
)
rotations_waiting = Gauge(
    "taskwarden_rotations_waiting",
    "Due rotations queued behind the rotation concurrency limit (TASKWARDEN_ROTATION_CONCURRENCY).",
)
rotation_delay = Histogram(
    "taskwarden_rotation_delay_seconds",
    "From a rotation's deadline to the moment it starts (queueing behind the concurrency limit).",
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
build_info = Gauge(
    "taskwarden_build_info",
    "Always 1; the labels say which build runs.",
    ["version", "python", "kopf"],
)


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


build_info.labels(
    version=__version__, python=platform.python_version(), kopf=_dist_version("kopf")
).set(1)

# --- Credential backends (backends/, tasks/backing.py; docs/backends.md) ---
backend_issued = Counter(
    "taskwarden_backend_credentials_issued",
    "Downstream credentials issued or rotated by a credential backend.",
    ["backend", "kind"],
)
backend_revoked = Counter(
    "taskwarden_backend_credentials_revoked",
    "Downstream credentials revoked by a credential backend (task end, deletion, sweep).",
    ["backend", "reason"],
)
backend_errors = Counter(
    "taskwarden_backend_errors",
    "Failed credential backend operations, by operation (issue, rotate, revoke, list).",
    ["backend", "operation"],
)
backend_duration = Histogram(
    "taskwarden_backend_operation_duration_seconds",
    "Time a credential backend took for one operation (issue, rotate, revoke).",
    ["backend", "operation"],
    buckets=_LATENCY,
)
