"""Workload identity: SPIFFE IDs and attestation of an agent's pod.

The issuing and rotation services call `attest` before every credential they sign, with the pods
they listed in the task's namespace; the result goes into `status.identity`, the
`IdentityVerified` condition, the audit record and the token's `sub`. Admission and the token
verifier use `spiffe_id` / `parse_spiffe_id`. Pure and stdlib only: pods are plain dicts as the
Kubernetes API returns them, and nothing here reads the clock or calls the API.

The SPIFFE ID is built only from attested facts (the pod's own namespace and
`spec.serviceAccountName`), never from what the task asks for, so a task cannot name an identity
that no running pod holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "POD_NOT_FOUND",
    "POD_NOT_RUNNING",
    "POD_REPLACED",
    "SERVICE_ACCOUNT_MISMATCH",
    "Attestation",
    "attest",
    "parse_spiffe_id",
    "pod_selectors",
    "spiffe_id",
]

POD_NOT_FOUND = "PodNotFound"
POD_NOT_RUNNING = "PodNotRunning"
SERVICE_ACCOUNT_MISMATCH = "ServiceAccountMismatch"
POD_REPLACED = "PodReplaced"

# SPIFFE trust domain names: lowercase letters, digits, '.', '-' and '_'.
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
# Kubernetes namespace: DNS-1123 label.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Kubernetes ServiceAccount name: DNS-1123 subdomain.
_SERVICE_ACCOUNT = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """Return spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>; ValueError if invalid."""
    _check(_TRUST_DOMAIN, trust_domain, "trust domain")
    _check(_NAMESPACE, namespace, "namespace")
    _check(_SERVICE_ACCOUNT, service_account, "service account name")
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def parse_spiffe_id(s: str) -> tuple[str, str, str]:
    """Split a Taskwarden SPIFFE ID into (trust_domain, namespace, service_account).

    Only the exact shape `spiffe_id` produces is accepted: no port, user info, query, fragment,
    trailing slash or extra path segments.
    """
    if not isinstance(s, str) or not s.startswith("spiffe://"):
        raise ValueError(f"{s!r} is not a SPIFFE ID: it must start with 'spiffe://'")
    parts = s[len("spiffe://") :].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
        raise ValueError(
            f"{s!r} is not a workload SPIFFE ID of the form "
            "spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
        )
    trust_domain, namespace, service_account = parts[0], parts[2], parts[4]
    if spiffe_id(trust_domain, namespace, service_account) != s:  # also validates each part
        raise ValueError(f"{s!r} is not in canonical SPIFFE ID form")
    return trust_domain, namespace, service_account


def _check(pattern: re.Pattern[str], value: str, what: str) -> None:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a valid {what} for a SPIFFE ID")


@dataclass(frozen=True)
class Attestation:
    """What attestation found. `reason` is "" when ok, else one of the reason constants."""

    ok: bool
    reason: str
    message: str
    spiffe_id: str | None
    pod_name: str | None
    pod_uid: str | None
    node_name: str | None


@dataclass(frozen=True)
class _Pod:
    """The attested facts of one pod, read defensively from a plain pod dict."""

    name: str
    namespace: str
    uid: str | None
    service_account: str | None
    node_name: str | None
    phase: str | None
    terminating: bool
    created: datetime | None

    @property
    def running(self) -> bool:
        return self.phase == "Running" and not self.terminating

    def state(self) -> str:
        if self.terminating:
            return "terminating"
        return f"in phase {self.phase}" if self.phase else "without a phase"


def attest(
    *,
    trust_domain: str,
    namespace: str,
    service_account: str,
    pod_name: str | None,
    recorded_uid: str | None,
    pods: Iterable[Mapping[str, Any]],
) -> Attestation:
    """Attest the agent's pod among `pods` (plain pod dicts; pods of other namespaces are ignored).

    With `pod_name`, that pod must exist, keep `recorded_uid` (when one was recorded), be Running
    and not terminating, and run as `service_account`, checked in that order. Without it, the
    oldest Running, non-terminating pod running as `service_account` is chosen (ties by name);
    `recorded_uid` is not used then, because the binding is to the service account only.
    """
    _check(_TRUST_DOMAIN, trust_domain, "trust domain")
    in_namespace = [p for p in (_read_pod(raw) for raw in pods) if p and p.namespace == namespace]
    if pod_name is not None:
        return _attest_named(
            trust_domain, namespace, service_account, pod_name, recorded_uid, in_namespace
        )
    return _attest_by_service_account(trust_domain, namespace, service_account, in_namespace)


def _attest_named(
    trust_domain: str,
    namespace: str,
    service_account: str,
    pod_name: str,
    recorded_uid: str | None,
    pods: list[_Pod],
) -> Attestation:
    pod = next((p for p in pods if p.name == pod_name), None)
    if pod is None:
        return _failed(
            POD_NOT_FOUND,
            f"pod {namespace}/{pod_name} was not found; expected it to be Running as "
            f"service account {service_account}",
        )
    if recorded_uid is not None and pod.uid != recorded_uid:
        return _failed(
            POD_REPLACED,
            f"pod {namespace}/{pod_name} has UID {pod.uid}, not the UID {recorded_uid} recorded "
            "at first issue; the pod was replaced",
            pod,
        )
    if not pod.running:
        return _failed(
            POD_NOT_RUNNING,
            f"pod {namespace}/{pod_name} is {pod.state()}; expected it to be Running and not "
            "terminating",
            pod,
        )
    if pod.service_account != service_account:
        return _failed(
            SERVICE_ACCOUNT_MISMATCH,
            f"pod {namespace}/{pod_name} runs as service account {pod.service_account or '<none>'}"
            f", not {service_account} as the task requires",
            pod,
        )
    return _succeeded(trust_domain, pod)


def _attest_by_service_account(
    trust_domain: str, namespace: str, service_account: str, pods: list[_Pod]
) -> Attestation:
    as_account = [p for p in pods if p.service_account == service_account]
    if not as_account:
        return _failed(
            POD_NOT_FOUND,
            f"no pod in namespace {namespace} runs as service account {service_account}; "
            "expected at least one Running pod",
        )
    running = [p for p in as_account if p.running]
    if not running:
        return _failed(
            POD_NOT_RUNNING,
            f"none of the {len(as_account)} pod(s) in namespace {namespace} running as service "
            f"account {service_account} is Running and not terminating (e.g. pod "
            f"{_oldest(as_account).name} is {_oldest(as_account).state()})",
        )
    return _succeeded(trust_domain, _oldest(running))


def _oldest(pods: list[_Pod]) -> _Pod:
    # Pods without a creationTimestamp sort last, so a well-formed pod is always preferred.
    far_future = datetime.max.replace(tzinfo=UTC)
    return min(pods, key=lambda p: (p.created is None, p.created or far_future, p.name))


def _succeeded(trust_domain: str, pod: _Pod) -> Attestation:
    account = pod.service_account or ""  # callers matched it against the task's account
    try:
        sid = spiffe_id(trust_domain, pod.namespace, account)
    except ValueError as err:  # not reachable with names the API server validated
        return _failed(
            SERVICE_ACCOUNT_MISMATCH,
            f"pod {pod.namespace}/{pod.name} cannot be given a SPIFFE ID: {err}",
            pod,
        )
    return Attestation(
        ok=True,
        reason="",
        message=(
            f"pod {pod.namespace}/{pod.name} (UID {pod.uid}) on node {pod.node_name or '<none>'} "
            f"is Running as service account {account}"
        ),
        spiffe_id=sid,
        pod_name=pod.name,
        pod_uid=pod.uid,
        node_name=pod.node_name,
    )


def _failed(reason: str, message: str, pod: _Pod | None = None) -> Attestation:
    return Attestation(
        ok=False,
        reason=reason,
        message=message,
        spiffe_id=None,
        pod_name=pod.name if pod else None,
        pod_uid=pod.uid if pod else None,
        node_name=pod.node_name if pod else None,
    )


def pod_selectors(pod: Mapping[str, Any]) -> list[str]:
    """Map a pod to SPIRE-style `k8s:` selectors (for audit records and debugging), sorted."""
    facts = _read_pod(pod)
    if facts is None:
        return []
    selectors = [f"k8s:ns:{facts.namespace}", f"k8s:pod-name:{facts.name}"]
    for key, value in (
        ("sa", facts.service_account),
        ("pod-uid", facts.uid),
        ("node-name", facts.node_name),
    ):
        if value:
            selectors.append(f"k8s:{key}:{value}")
    return sorted(selectors)


def _read_pod(raw: Mapping[str, Any]) -> _Pod | None:
    """Read the facts attestation needs; None for something that is not a usable pod dict."""
    if not isinstance(raw, Mapping):
        return None
    metadata = _mapping(raw.get("metadata"))
    spec = _mapping(raw.get("spec"))
    status = _mapping(raw.get("status"))
    name = _str(metadata.get("name"))
    namespace = _str(metadata.get("namespace"))
    if not name or not namespace:
        return None
    return _Pod(
        name=name,
        namespace=namespace,
        uid=_str(metadata.get("uid")),
        service_account=_str(spec.get("serviceAccountName")),
        node_name=_str(spec.get("nodeName")),
        phase=_str(status.get("phase")),
        terminating=metadata.get("deletionTimestamp") is not None,
        created=_timestamp(metadata.get("creationTimestamp")),
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
