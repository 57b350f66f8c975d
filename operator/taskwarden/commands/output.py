"""Printing AgentTasks as kubectl does: a table (`-o wide` adds columns), `-o name`, and
`-o json|yaml` (one object, or a `List` of them). Pure: objects in, text out."""

from __future__ import annotations

import json
from typing import Any

from taskwarden import names, timeutil

FORMATS = ("json", "yaml", "wide", "name")
RESOURCE = f"agenttask.{names.GROUP}"


def age(ts: str | None, now: float) -> str:
    if not ts:
        return "-"
    s = int(now - timeutil.parse(ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def expires(ts: str | None, now: float) -> str:
    if not ts:
        return "-"
    secs = int(timeutil.parse(ts) - now)
    return f"in {secs}s" if secs > 0 else f"{-secs}s ago"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def requester(task: dict[str, Any]) -> str:
    raw = (task["metadata"].get("annotations") or {}).get(names.REQUESTER_ANNOTATION)
    try:
        return str(json.loads(raw)["username"]) if raw else "-"
    except (ValueError, KeyError, TypeError):
        return "?"


def task_rows(
    tasks: list[dict[str, Any]], now: float, *, all_namespaces: bool, wide: bool
) -> list[list[str]]:
    """Header and one row per task, sorted by namespace and name."""
    head = ["NAME", "PHASE", "AGENT", "EXPIRES", "REASON", "POLICY", "AGE"]
    if wide:
        head += ["RULE", "REQUESTER", "SECRET"]
    rows = [(["NAMESPACE"] if all_namespaces else []) + head]
    for t in sorted(tasks, key=lambda t: (t["metadata"]["namespace"], t["metadata"]["name"])):
        md, st = t["metadata"], t.get("status") or {}
        decision = st.get("decision") or {}
        row = [
            md["name"],
            st.get("phase", "-"),
            t["spec"]["agent"]["serviceAccountName"],
            expires(st.get("expiresAt"), now),
            st.get("reason") or "-",
            decision.get("policy") or "-",
            age(md.get("creationTimestamp"), now),
        ]
        if wide:
            secret = (st.get("credential") or {}).get("secretName")
            row += [decision.get("rule") or "-", requester(t), secret or "-"]
        rows.append(([md["namespace"]] if all_namespaces else []) + row)
    return rows


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def render(
    tasks: list[dict[str, Any]],
    fmt: str | None,
    now: float,
    *,
    all_namespaces: bool = False,
    single: bool = False,
) -> str:
    """The text `taskwarden get` prints; "" when a table would have no rows."""
    if fmt in ("json", "yaml"):
        doc = tasks[0] if single and len(tasks) == 1 else as_list(tasks)
        if fmt == "json":
            return json.dumps(doc, indent=2)
        import yaml

        return str(yaml.safe_dump(doc, sort_keys=False)).rstrip("\n")
    if fmt == "name":
        return "\n".join(f"{RESOURCE}/{t['metadata']['name']}" for t in tasks)
    if not tasks:
        return ""
    return table(task_rows(tasks, now, all_namespaces=all_namespaces, wide=fmt == "wide"))
