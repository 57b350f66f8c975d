"""Where the operator's memory per live task goes: RSS and a tracemalloc diff.

Starts a local control plane and a `taskwarden run` subprocess with a sitecustomize hook
(SIGUSR1 starts tracemalloc once the operator is idle, SIGUSR2 dumps a snapshot), creates N
tasks as their agent and prints RSS at idle, with N tasks, and after SIGKILL + restart +
resync, plus the top allocation sites still held per task. Not a benchmark: tracemalloc slows
the process and adds its own memory; for RSS alone pass --no-trace.

    .venv/bin/python bench/profile_memory.py --tasks 2000 [--no-trace] [--top 25]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client  # noqa: E402
from tests.integration import helpers as h  # noqa: E402

from taskwarden import controlplane  # noqa: E402

HOOK = r"""
import os, signal, tracemalloc
def _start(signum, frame):
    tracemalloc.start(int(os.environ.get("TW_FRAMES", "6")))
def _dump(signum, frame):
    import collections, gc, sys
    base = os.environ["TW_SNAPSHOT"]
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(base + "." + str(os.getpid()))
    kinds = collections.Counter(type(o).__name__ for o in gc.get_objects())
    with open(base + ".objects", "a") as f:
        f.write(f"blocks {sys.getallocatedblocks()} objects {sum(kinds.values())}\n")
        for name, n in kinds.most_common(25):
            f.write(f"  {name} {n}\n")
    open(base + ".done", "w").close()
if os.environ.get("TW_SNAPSHOT"):
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _dump)
"""


def rss(op: h.OperatorProcess) -> tuple[float, float]:
    assert op.proc is not None
    out = {}
    for line in Path(f"/proc/{op.proc.pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    return out["VmRSS"], out["VmHWM"]


def snapshot(op: h.OperatorProcess, base: Path) -> tracemalloc.Snapshot | None:
    """Live Python objects by type go to <base>.objects; a tracemalloc snapshot if tracing."""
    assert op.proc is not None
    done = Path(str(base) + ".done")
    done.unlink(missing_ok=True)
    os.kill(op.proc.pid, signal.SIGUSR2)
    h.wait_for(done.exists, timeout=120, what="snapshot")
    path = Path(f"{base}.{op.proc.pid}")
    return tracemalloc.Snapshot.load(str(path)) if path.exists() else None


def active(api: client.ApiClient, ns: str) -> int:
    n, token = 0, None
    while True:
        page = h.custom(api).list_namespaced_custom_object(
            h.GROUP, h.VERSION, ns, "agenttasks", limit=500, _continue=token
        )
        n += sum(1 for t in page["items"] if (t.get("status") or {}).get("phase") == "Active")
        token = page["metadata"].get("continue")
        if not token:
            return n


def create(agents: dict[str, client.ApiClient], ns: str, i: int, ttl: str | None) -> None:
    agent = agents[ns]
    body = h.task_body(f"m-{i:06d}", **({"ttl": ttl, "credential_ttl": ttl} if ttl else {}))
    for _ in range(20):  # a traced operator can be slow enough for a webhook to time out
        try:
            h.create(agent, ns, "agenttasks", body)
            return
        except client.ApiException as e:
            if e.status == 409:
                return
            time.sleep(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-trace", action="store_true")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument(
        "--namespaces",
        type=int,
        default=1,
        help="spread the tasks over this many agent namespaces (the ledger's ConfigMaps are"
        " grouped by namespace: 100,000 tasks in one namespace make each ledger write ~0.5 MB)",
    )
    ap.add_argument(
        "--ttl",
        help="ttl and credentialTTL of every task (e.g. 2h: no rotation while measuring; the"
        " default 5m credentials rotate 10,000 tasks at about this machine's capacity)",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tw-mem-"))
    (work / "hook").mkdir()
    (work / "hook" / "sitecustomize.py").write_text(HOOK)
    cp = controlplane.start(work / "cp")
    op: h.OperatorProcess | None = None
    try:
        api = cp.api_client()
        controlplane.install_crds(api, ROOT / "crds")
        with contextlib.suppress(client.ApiException):
            client.RbacAuthorizationV1Api(api).create_cluster_role(
                {
                    "metadata": {"name": "taskwarden:agent"},
                    "rules": [
                        {
                            "apiGroups": ["taskwarden.dev"],
                            "resources": ["agenttasks"],
                            "verbs": ["create", "get", "list", "watch", "patch", "update"],
                        }
                    ],
                }
            )
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "taskwarden-system"}})
        spaces = (
            [f"mem-{j:02d}" for j in range(args.namespaces)] if args.namespaces > 1 else ["mem"]
        )
        agents = {}
        policy = h.policy_body(accounts=("agent",))
        if args.ttl:
            policy["spec"].update({"maxTTL": args.ttl, "maxCredentialTTL": args.ttl})
        for ns in spaces:
            h.agent_namespace(api, ns)
            agents[ns] = h.agent_env(api, ns, cluster=cp, policy=policy).as_agent()
        penv = dict(os.environ)
        penv["PYTHONPATH"] = f"{work / 'hook'}:{penv.get('PYTHONPATH', '')}"
        penv["TW_FRAMES"] = str(args.frames)
        penv["TW_SNAPSHOT"] = str(work / "snap")
        op = h.OperatorProcess(cp.kubeconfig, work / "op", "taskwarden-system", penv)
        (work / "op").mkdir()
        op.start(wait=False)
        h.wait_for(op.healthy, timeout=600, interval=1)
        time.sleep(3)
        idle = rss(op)
        if not args.no_trace:  # trace from here: what the tasks add, not start-up
            assert op.proc is not None
            os.kill(op.proc.pid, signal.SIGUSR1)
            time.sleep(1)
        s0 = snapshot(op, work / "snap")
        t0 = time.monotonic()
        with ThreadPoolExecutor(4 if not args.no_trace else 8) as pool:
            list(
                pool.map(
                    lambda i: create(agents, spaces[i % len(spaces)], i, args.ttl),
                    range(args.tasks),
                )
            )
        # The operator's own count (a LIST of 100,000 tasks every second would be the load).
        h.wait_for(
            lambda: op.metric("taskwarden_active_credentials") >= args.tasks,
            timeout=1200 + args.tasks / 20,
            interval=2,
        )
        assert sum(active(api, ns) for ns in spaces) == args.tasks
        took = time.monotonic() - t0
        time.sleep(3)
        running = rss(op)
        s1 = snapshot(op, work / "snap")
        op.kill()
        t1 = time.monotonic()
        op.start(wait=False)
        h.wait_for(op.healthy, timeout=600 + args.tasks / 50, interval=1)
        started = time.monotonic() - t1
        h.wait_for(
            lambda: op.metric("taskwarden_live_tasks") >= args.tasks,
            timeout=600 + args.tasks / 50,
            interval=1,
        )
        resynced = time.monotonic() - t1
        time.sleep(3)
        after = rss(op)
        snapshot(op, work / "snap")
        print((work / "snap.objects").read_text())
        n = args.tasks
        print(
            f"tasks {n}: created and Active in {took:.1f}s; restart to healthy {started:.1f}s,"
            f" to every task known again {resynced:.1f}s"
        )
        print(f"idle RSS {idle[0]:.1f} MiB")
        print(
            f"running RSS {running[0]:.1f} MiB ({(running[0] - idle[0]) * 1024 / n:.2f} KiB/task)"
        )
        print(
            f"after restart RSS {after[0]:.1f} MiB"
            f" ({(after[0] - idle[0]) * 1024 / n:.2f} KiB/task),"
            f" peak {after[1]:.1f} MiB ({(after[1] - idle[0]) * 1024 / n:.2f} KiB/task)"
        )
        if s0 is not None and s1 is not None:
            print(f"\ntracemalloc: top {args.top} sites held per task (running vs idle)")
            for stat in s1.compare_to(s0, "traceback")[: args.top]:
                print(f"{stat.size_diff / n:9.1f} B/task {stat.count_diff:+7d} blocks")
                for line in stat.traceback.format()[-2 * args.frames :]:
                    print("   ", line)
            total = sum(s.size_diff for s in s1.compare_to(s0, "filename"))
            print(f"traced total: {total / n:.1f} B/task")
        op.stop()
    finally:
        if op is not None:
            op.kill()  # its own session: it would outlive the control plane otherwise
        cp.stop()


if __name__ == "__main__":
    main()
