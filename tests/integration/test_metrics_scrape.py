"""A real scrape: the running operator's /metrics, after an issue and a revocation, passes
`promtool check metrics` (metric names, help, units and types as Prometheus lints them) and
carries the operational gauges the alerts and the dashboard rely on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

import taskwarden
from tests.integration import helpers as h

# Built by hack/install-promtool.sh (`make tools`); the same binary test_chart.py uses.
PROMTOOL = (
    Path(os.environ.get("TASKWARDEN_CACHE", Path.home() / ".cache" / "taskwarden"))
    / "tools"
    / "promtool-v0.316.0"
    / "bin"
    / "promtool"
)


def test_scrape_after_issue_and_revoke_passes_promtool(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    active_task: Callable[..., h.Task],
) -> None:
    if not PROMTOOL.is_file():
        pytest.skip(f"promtool not built at {PROMTOOL} (run `make tools`)")
    issued = operator.metric("taskwarden_credentials_issued_total", kind="issue")
    revoked = operator.metric("taskwarden_credentials_revoked_total", reason="Completed")
    jti = active_task("scraped", pod_name="agent-0").jti
    h.patch(
        h.as_user(api, f"system:serviceaccount:{namespace}:agent"),
        namespace,
        "agenttasks",
        "scraped",
        {"spec": {"completed": True}},
    )
    h.wait_phase(api, namespace, "scraped", "Completed")
    h.wait_for(lambda: jti in h.revoked_jtis(api, operator_namespace), what="jti listed")

    text = operator.metrics()
    proc = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "", proc.stdout  # no lint findings at all

    # Every series of one scrape, with the labels the rules and dashboard select on.
    assert operator.metric("taskwarden_credentials_issued_total", kind="issue") >= issued + 1
    assert operator.metric("taskwarden_credentials_revoked_total", reason="Completed") >= (
        revoked + 1
    )
    assert operator.metric("taskwarden_replica_active") == 1  # standalone: always active
    assert operator.metric("taskwarden_revocation_list_entries") >= 1  # holds `jti` at least
    assert operator.metric("taskwarden_revocation_list_capacity") == 10000
    assert (
        operator.metric(
            "taskwarden_build_info",
            version=taskwarden.__version__,
            python=platform.python_version(),
            kopf=importlib.metadata.version("kopf"),
        )
        == 1
    )
    assert jti not in text  # no per-credential label
