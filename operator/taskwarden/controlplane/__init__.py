"""A real local Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and kwok playing the kubelet for one Node (pods really run, schedule and terminate).

Used by the integration tests (one session-scoped fixture), by `make demo` and by
`taskwarden controlplane up|down|env|build`. Everything here is real: RBAC, admission webhooks,
TokenRequest/TokenReview, impersonation and garbage collection all work.

- `binaries`: the pinned release, its cache, building it when missing;
- `files`: the PKI (via taskwarden.pki) and the admin kubeconfig;
- `nodes`: kube-scheduler, kwok and its Node (`NODE`, `FAIL_LABEL`);
- `cluster`: starting, re-attaching to and stopping the processes;
- `crds`: installing the CRDs.
This module re-exports what callers use, so `controlplane.start(...)` keeps working.
"""

from __future__ import annotations

from taskwarden.controlplane.binaries import (
    BINARIES,
    BUILD_SCRIPT,
    K8S_VERSION,
    KWOK_STAGES,
    ControlPlaneError,
    cache_dir,
    default_state_dir,
    find_binaries,
)
from taskwarden.controlplane.cluster import (
    CONTROLLERS,
    ControlPlane,
    _running,
    free_port,
    start,
    stop_dir,
)
from taskwarden.controlplane.crds import install_crds
from taskwarden.controlplane.files import SANS, write_kubeconfig, write_pki
from taskwarden.controlplane.nodes import FAIL_LABEL, NODE

__all__ = [
    "BINARIES",
    "BUILD_SCRIPT",
    "CONTROLLERS",
    "FAIL_LABEL",
    "K8S_VERSION",
    "KWOK_STAGES",
    "NODE",
    "SANS",
    "ControlPlane",
    "ControlPlaneError",
    "_running",
    "cache_dir",
    "default_state_dir",
    "find_binaries",
    "free_port",
    "install_crds",
    "start",
    "stop_dir",
    "write_kubeconfig",
    "write_pki",
]
