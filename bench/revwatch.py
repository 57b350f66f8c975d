"""An idle observer for the revocation burst (bench/hotpath.py), in its own process.

The bench's own watches share one Python process (and its GIL) with the 20 agent threads of
the burst, so their first-seen times include waiting for the interpreter. This process does
nothing else: it watches the tasks of one namespace and the published revocation list, and
appends one line per first sighting, with the wall clock (the agents' marks are wall clock
too, so the two compare on one machine):

    C <task> <unix time>   the task's watch event with spec.completed first arrived
    L <jti> <unix time>    the jti first appeared in the revocations ConfigMap

Splitting the burst's lag: mark -> C is the API server writing the completion and fanning it
out (what any watcher, the operator included, waits for); C -> L is the operator's part plus
the list write coming back through the watch.

Usage: python bench/revwatch.py KUBECONFIG TASK_NAMESPACE OPERATOR_NAMESPACE OUT_FILE
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from kubernetes import client, config, watch

REVOCATIONS = "taskwarden-revocations"


def _loop(fn: Any, handle: Any, **kw: Any) -> None:
    while True:
        try:
            for ev in watch.Watch().stream(fn, timeout_seconds=300, _request_timeout=330, **kw):
                handle(ev, time.time())
        except Exception:
            time.sleep(0.1)


def main() -> None:
    kubeconfig, task_ns, op_ns, out_path = sys.argv[1:5]
    api = config.new_client_from_config(config_file=kubeconfig)
    out: TextIO = open(out_path, "a", buffering=1)  # lives as long as the process
    lock = threading.Lock()
    completed: set[str] = set()
    listed: set[str] = set()

    def on_task(ev: dict[str, Any], now: float) -> None:
        obj = ev["object"]
        name = obj["metadata"]["name"]
        if (obj.get("spec") or {}).get("completed") and name not in completed:
            completed.add(name)
            with lock:
                out.write(f"C {name} {now:.6f}\n")

    def on_list(ev: dict[str, Any], now: float) -> None:
        data = (ev["object"].data or {}).get("revocations.json")
        if not data:
            return
        new = [e["jti"] for e in json.loads(data).get("revoked", []) if e["jti"] not in listed]
        listed.update(new)
        if new:
            with lock:
                out.write("".join(f"L {j} {now:.6f}\n" for j in new))

    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    threading.Thread(
        target=_loop,
        args=(custom.list_namespaced_custom_object, on_task),
        kwargs={
            "group": "taskwarden.dev",
            "version": "v1alpha1",
            "namespace": task_ns,
            "plural": "agenttasks",
        },
        daemon=True,
    ).start()
    _loop(
        core.list_namespaced_config_map,
        on_list,
        namespace=op_ns,
        field_selector=f"metadata.name={REVOCATIONS}",
    )


def read(path: str) -> tuple[dict[str, float], dict[str, float]]:
    """(task -> completion seen, jti -> listed seen) from an OUT_FILE."""
    completed: dict[str, float] = {}
    listed: dict[str, float] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return completed, listed
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue  # a line being written
        kind, key, t = parts
        (completed if kind == "C" else listed).setdefault(key, float(t))
    return completed, listed


if __name__ == "__main__":
    main()
