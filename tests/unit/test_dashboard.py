"""The Grafana dashboard filters every query by `$cluster`, `$namespace` and `$job`.

One Grafana often reads several clusters and several Taskwarden releases: a panel that ignores a
variable silently sums them. The chart ships the file as is (templates/grafana-dashboard.yaml).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).parents[2] / "charts" / "taskwarden" / "dashboards" / "taskwarden.json"
VARIABLES = ("cluster", "namespace", "job")
# A series name in a query: taskwarden_* or up, with its selector when it has one.
SERIES = re.compile(r"\b(taskwarden_[a-z_]+|up)\b(\{[^}]*\})?")


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def _targets() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def _missing(expr: str) -> list[str]:
    """Every series in `expr` whose selector lacks one of the three variable matchers."""
    found = SERIES.findall(expr)
    assert found, f"no series in {expr!r}"
    return [
        f"{name}: {var}"
        for name, selector in found
        for var in VARIABLES
        if f'{var}=~"${var}"' not in selector
    ]


def test_the_dashboard_defines_cluster_namespace_and_job() -> None:
    by_name = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    for var in VARIABLES:
        assert by_name[var]["type"] == "query", var
        assert "taskwarden_build_info" in by_name[var]["definition"], var
    # "All" clusters must also match series without a cluster label (one-cluster Prometheus).
    assert by_name["cluster"]["allValue"] == ".*"
    # Narrower variables are listed within the wider ones.
    assert '$cluster"' in by_name["namespace"]["definition"]
    assert '$namespace"' in by_name["job"]["definition"]


def test_every_panel_query_uses_all_three_variables() -> None:
    targets = _targets()
    assert len(targets) >= 16
    problems = {f"{title}: {expr}": _missing(expr) for title, expr in targets if _missing(expr)}
    assert not problems, problems


def test_the_check_catches_a_query_that_ignores_a_variable() -> None:
    assert _missing('sum(up{cluster=~"$cluster", namespace=~"$namespace", job=~"$job"})') == []
    assert _missing('max(taskwarden_live_tasks{namespace=~"$namespace"})') == [
        "taskwarden_live_tasks: cluster",
        "taskwarden_live_tasks: job",
    ]
    assert _missing("sum(rate(taskwarden_credentials_issued_total[5m]))") == [
        f"taskwarden_credentials_issued_total: {v}" for v in VARIABLES
    ]
