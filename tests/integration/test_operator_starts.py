"""The operator starts against the real control plane and serves health and metrics."""

from __future__ import annotations

import urllib.request

from tests.integration.helpers import OperatorProcess


def test_health_endpoint_answers(operator: OperatorProcess) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz") as r:
        assert r.status == 200


def test_metrics_endpoint_lists_contract_metrics(operator: OperatorProcess) -> None:
    text = operator.metrics()
    for name in (
        "taskwarden_credentials_issued_total",
        "taskwarden_credentials_revoked_total",
        "taskwarden_active_credentials",
        "taskwarden_policy_decisions_total",
        "taskwarden_issuance_duration_seconds",
        "taskwarden_revocation_lag_seconds",
        "taskwarden_admission_requests_total",
        "taskwarden_admission_duration_seconds",
        "taskwarden_identity_verifications_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
