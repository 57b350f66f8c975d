"""The control plane binaries: where they are cached, and building them when missing.

Used by taskwarden.controlplane.cluster (`start`), the CLI (`taskwarden controlplane build`)
and tests. Binaries (and kwok's Stage file) are built from Go modules at a pinned Kubernetes
release by scripts/build-controlplane.sh and cached under ~/.cache/taskwarden/controlplane/<ver>/;
KUBEBUILDER_ASSETS is honoured for binaries a user already has.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

K8S_VERSION = os.environ.get("TASKWARDEN_K8S_VERSION", "v1.36.3")
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)
KWOK_STAGES = "kwok-stages.yaml"
"""kwok's own "fast" node and pod Stages (and its container-failure chaos Stage), concatenated by
the build script from the kwok module; kwok refuses to start without Stages."""
BUILD_SCRIPT = Path(__file__).parents[1] / "scripts" / "build-controlplane.sh"


def cache_dir() -> Path:
    return Path(os.environ.get("TASKWARDEN_CACHE", Path.home() / ".cache" / "taskwarden"))


def default_state_dir() -> Path:
    return cache_dir() / "run" / "default"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says which part and why."""


def find_binaries(*, build: bool = True) -> dict[str, Path]:
    """Locate the binaries: KUBEBUILDER_ASSETS first, then the per-version cache, else build."""
    found: dict[str, Path] = {}
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    cached = cache_dir() / "controlplane" / K8S_VERSION
    for name in BINARIES:
        for d in ([Path(assets)] if assets else []) + [cached]:
            if (d / name).is_file() and os.access(d / name, os.X_OK):
                found[name] = d / name
                break
    if (cached / KWOK_STAGES).is_file():
        found[KWOK_STAGES] = cached / KWOK_STAGES
    missing = [n for n in (*BINARIES, KWOK_STAGES) if n not in found]
    if missing and build:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
        )
        if proc.returncode != 0:
            raise ControlPlaneError(
                f"building the control plane ({K8S_VERSION}) failed with exit code "
                f"{proc.returncode}; see the build output above"
            )
        return find_binaries(build=False)
    if missing:
        raise ControlPlaneError(f"control plane binaries missing: {', '.join(missing)}")
    return found
