"""Issue 13's hot path, side by side in ONE run on one local control plane:

- Taskwarden: `taskwarden run` (admission webhooks on), tasks created by agents with their own
  pod-bound TokenRequest tokens;
- the naive kopf operator (bench/naive: `kopf run ... --standalone -A`, its own CRD, one owned
  Secret of the same data sizes as a Taskwarden credential, `status.phase: Active`);
- the raw floor: one Secret create + one AgentTask status patch from the same Python client
  (bench/issuance.py's floor).

Latency is create call returned -> Secret present AND status Active, both seen through watches
(as bench/issuance.py). Memory is /proc/<pid>/status VmRSS (sampled; steady = median over 5 s
once the process is idle) and VmHWM (peak), with N live tasks and after SIGKILL + restart +
resync. Latency parts are repeated (medians); memory is measured once per run.

Run: make bench-hotpath   or   .venv/bin/python -m bench.hotpath [--quick] [--repeats 3]
     [--live 10000] (100,000: --live 100000 --skip-naive-memory records RSS and resync time)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubernetes import client

import issuance
import procmem
import rotation
from common import OP_NS, ROOT, Observer, environment, h, machine, median, pct
from hotpath_report import report
from taskwarden import controlplane, names

TW_NS, NAIVE_NS = "hotpath", "naive"
NAIVE_GROUP, NAIVE_VERSION, NAIVE_PLURAL = "bench.taskwarden.dev", "v1", "naivetasks"
PROCS: dict[str, int] = {}
"""Processes whose CPU is accounted per issuance: the control plane's, both operators, this."""
TTL = "2h"


OPERATOR: list[h.OperatorProcess] = []
REVWATCH: list[Path] = []
"""The idle observer's output file (bench/revwatch.py), when one runs."""


def _histogram(name: str) -> dict[float, float]:
    """Cumulative bucket counts (le -> count) of an operator histogram."""
    out: dict[float, float] = {}
    if not OPERATOR:
        return out
    for line in OPERATOR[0].metrics().splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = float(line.rpartition(" ")[2])
    return out


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of the observations between two reads of a histogram, interpolated
    linearly within its bucket (as PromQL's histogram_quantile)."""
    les = sorted(after)
    counts = [after[le] - before.get(le, 0.0) for le in les]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank, prev_le, prev_c = q * counts[-1], 0.0, 0.0
    for le, c in zip(les, counts, strict=True):
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return les[-1]


def operator_lag() -> tuple[float, float]:
    """(sum, count) of the operator's revocation lag histogram; zeros without an operator."""
    if not OPERATOR:
        return 0.0, 0.0
    op = OPERATOR[0]
    return (
        op.metric("taskwarden_revocation_lag_seconds_sum"),
        op.metric("taskwarden_revocation_lag_seconds_count"),
    )


def cpu_now() -> dict[str, float]:
    out = {}
    for name, pid in PROCS.items():
        with contextlib.suppress(OSError):
            out[name] = procmem.cpu_seconds(pid)
    return out  # long enough that no rotation or expiry runs during the bench


class Tracker(Observer):
    """common.Observer that also wakes waiting threads on every watch event."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.cond = threading.Condition()
        super().__init__(api, ns)

    def _loop(self, fn: Any, handle: Any, **kw: Any) -> None:
        def notify(ev: dict, now: float) -> None:
            handle(ev, now)
            with self.cond:
                self.cond.notify_all()

        super()._loop(fn, notify, **kw)

    def issued(self, name: str) -> float | None:
        a, s = self.active.get(name), self.secret_added.get(f"{name}-credential")
        return max(a, s) if a and s else None

    def wait(self, name: str, timeout: float = 60) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: self.issued(name), timeout):
                raise RuntimeError(f"{self.ns}/{name} not Active with its Secret in {timeout}s")
        return self.issued(name) or 0.0


class NaiveTracker(Tracker):
    """The same, for NaiveTasks and every Secret of the namespace; no revocation list."""

    def _tasks(self) -> None:
        def handle(ev: dict, now: float) -> None:
            obj = ev["object"]
            if (obj.get("status") or {}).get("phase") == "Active":
                self.active.setdefault(obj["metadata"]["name"], now)

        custom = client.CustomObjectsApi(self.api)
        fn = custom.list_namespaced_custom_object
        self._loop(
            fn,
            handle,
            group=NAIVE_GROUP,
            version=NAIVE_VERSION,
            namespace=self.ns,
            plural=NAIVE_PLURAL,
        )

    def _secrets(self) -> None:
        def handle(ev: dict, now: float) -> None:
            if ev["type"] != "DELETED":
                self.secret_added.setdefault(ev["object"].metadata.name, now)

        self._loop(client.CoreV1Api(self.api).list_namespaced_secret, handle, namespace=self.ns)

    def _revocations(self) -> None:
        return


# --------------------------------------------------------------------------- systems


class System:
    """Creates tasks of one kind as agents (one client per agent) and waits for them."""

    def __init__(self, label: str, ns: str, agents: list[client.ApiClient], tracker: Tracker):
        self.label, self.ns, self.agents, self.tracker = label, ns, agents, tracker
        self.completed = 0

    def live(self) -> int:
        """Tasks this bench created that are issued and not completed."""
        return len(self.tracker.active) - self.completed

    def body(self, name: str) -> dict[str, Any]:
        return h.task_body(name, ttl=TTL, credential_ttl=TTL)

    def create(self, agent: client.ApiClient, name: str) -> None:
        client.CustomObjectsApi(agent).create_namespaced_custom_object(
            h.GROUP, h.VERSION, self.ns, "agenttasks", self.body(name)
        )

    def run(self, names_: list[str], n_agents: int, wait: bool = True) -> dict[str, Any]:
        """Agent i creates names_[i::n_agents] one after another, waiting for each to be issued
        when `wait`; returns create-call and create -> issued latencies (s) and tasks/s."""
        created: list[float] = []
        issued: list[float] = []
        e2e: list[float] = []
        lock = threading.Lock()

        def agent_loop(i: int) -> None:
            agent = self.agents[i % len(self.agents)]
            for name in names_[i::n_agents]:
                c0 = time.monotonic()
                for attempt in range(5):
                    try:
                        self.create(agent, name)
                        break
                    except client.ApiException as e:
                        if e.status == 409 or attempt == 4:
                            raise
                        time.sleep(0.2 * (attempt + 1))  # overloaded apiserver: retry
                c1 = time.monotonic()
                done = self.tracker.wait(name) if wait else c1
                with lock:
                    created.append(c1 - c0)
                    issued.append(done - c1)
                    e2e.append(done - c0)

        t0 = time.monotonic()
        with ThreadPoolExecutor(n_agents) as pool:
            list(pool.map(agent_loop, range(n_agents)))
        return {
            "create": created,
            "issued": issued,
            "e2e": e2e,
            "tps": len(names_) / (time.monotonic() - t0),
        }


class Naive(System):
    def body(self, name: str) -> dict[str, Any]:
        task = h.task_body(name, ttl=TTL, credential_ttl=TTL)
        task.update(apiVersion=f"{NAIVE_GROUP}/{NAIVE_VERSION}", kind="NaiveTask")
        return task

    def create(self, agent: client.ApiClient, name: str) -> None:
        client.CustomObjectsApi(agent).create_namespaced_custom_object(
            NAIVE_GROUP, NAIVE_VERSION, self.ns, NAIVE_PLURAL, self.body(name)
        )


def agents(cp: controlplane.ControlPlane, api: client.ApiClient, ns: str, n: int) -> list[Any]:
    """n running pods of ServiceAccount `agent`; each agent's client uses its own pod-bound
    TokenRequest token, as an agent in that pod would."""
    out = []
    for i in range(n):
        if h.pod_or_none(api, ns, f"agent-{i}") is None:
            h.pod(api, ns, f"agent-{i}", "agent")
        out.append(h.agent_api(cp, api, ns, "agent", f"agent-{i}"))
    return out


def setup(cp: controlplane.ControlPlane, api: client.ApiClient, n_agents: int) -> tuple:
    issuance.setup_namespace(api, TW_NS)  # agent-0, policy, and the floor's AgentTasks
    h.custom(api).patch_namespaced_custom_object(
        h.GROUP,
        h.VERSION,
        TW_NS,
        "agentpolicies",
        "agents",
        {"spec": {"maxTTL": TTL, "maxCredentialTTL": TTL}},
    )
    controlplane.install_crds(api, ROOT / "bench" / "naive")
    client.RbacAuthorizationV1Api(api).create_cluster_role(
        {
            "metadata": {"name": "bench:naive-agent"},
            "rules": [
                {
                    "apiGroups": [NAIVE_GROUP],
                    "resources": [NAIVE_PLURAL],
                    "verbs": ["create", "get", "list", "watch", "patch"],
                }
            ],
        }
    )
    h.agent_namespace(api, NAIVE_NS, role="bench:naive-agent")
    tw = System("taskwarden", TW_NS, agents(cp, api, TW_NS, n_agents), Tracker(api, TW_NS))
    naive = Naive(
        "naive", NAIVE_NS, agents(cp, api, NAIVE_NS, n_agents), NaiveTracker(api, NAIVE_NS)
    )
    return tw, naive


def secret_sizes(api: client.ApiClient, ns: str, name: str) -> dict[str, int]:
    """Decoded bytes per key of a Taskwarden credential Secret."""
    s = client.CoreV1Api(api).read_namespaced_secret(f"{name}-credential", ns)
    return {k: len(base64.b64decode(v)) for k, v in (s.data or {}).items()}


# --------------------------------------------------------------------------- measurements


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over the rounds that measured it (a round may lack a key: the
    API request counts list only the kinds that round made)."""
    keys = dict.fromkeys(k for r in rounds for k in r)
    return {k: median([r[k] for r in rounds if k in r]) for k in keys}


def summary(prefix: str, r: dict[str, Any], ps: tuple[int, ...] = (50, 99)) -> dict[str, float]:
    out = {f"{prefix}.{p}": pct(r["issued"], p) for p in ps}
    out.update({f"{prefix}.e2e{p}": pct(r["e2e"], p) for p in ps})
    out[f"{prefix}.tps"] = r["tps"]
    return out


def status_patches(api: client.ApiClient, n: int, naive_names: list[str]) -> dict[str, float]:
    """A status patch alone, admin client: an AgentTask status of an issued task's shape and
    size (issuance's floor status) and a NaiveTask's `phase` (a CR status with no schema)."""
    custom = client.CustomObjectsApi(api)
    tw: list[float] = []
    nv: list[float] = []
    for i in range(n):
        t0 = time.monotonic()
        custom.patch_namespaced_custom_object_status(
            h.GROUP,
            h.VERSION,
            issuance.FLOOR_NS,
            "agenttasks",
            f"floor-{i % issuance.FLOOR_TASKS}",
            issuance._floor_status(i),
        )
        t1 = time.monotonic()
        custom.patch_namespaced_custom_object_status(
            NAIVE_GROUP,
            NAIVE_VERSION,
            NAIVE_NS,
            NAIVE_PLURAL,
            naive_names[i % len(naive_names)],
            {"status": {"phase": "Active", "observedGeneration": i}},
        )
        tw.append(t1 - t0)
        nv.append(time.monotonic() - t1)
    return {
        "taskwarden.patch.50": pct(tw, 50),
        "taskwarden.patch.99": pct(tw, 99),
        "naive.patch.50": pct(nv, 50),
        "naive.patch.99": pct(nv, 99),
    }


def revocation_burst(
    api: client.ApiClient, tw: System, n: int, run: int, pprof: Path | None = None
) -> dict[str, float]:
    """n live tasks completed by 20 agents at once; lag = the completion patch returned -> the
    task's jti on the published revocation list (and -> its Secret deleted), seen by watches.
    `pprof`: write a 10 s CPU profile of kube-apiserver taken over the burst there (the control
    plane started with TASKWARDEN_CP_PROFILING=1)."""
    burst = [f"rv-r{run}-{i}" for i in range(n)]
    tw.run(burst, 20, wait=False)
    for name in burst:
        tw.tracker.wait(name, 300)
    want = set(burst)
    jtis = {
        t["metadata"]["name"]: t["status"]["credential"]["jti"]
        for t in h.custom(api).list_namespaced_custom_object(
            h.GROUP, h.VERSION, TW_NS, "agenttasks"
        )["items"]
        if t["metadata"]["name"] in want
    }
    marks: dict[str, float] = {}
    walls: dict[str, float] = {}
    lag0 = operator_lag()
    pub0 = _histogram("taskwarden_revocation_publish_seconds")
    cpu0, t0 = cpu_now(), time.monotonic()
    calls0 = rotation.api_requests(api)
    profiling = rotation.apiserver_profile(api, 10, pprof) if pprof is not None else None

    def complete(i: int) -> None:
        agent = client.CustomObjectsApi(tw.agents[i])
        for name in burst[i::20]:
            agent.patch_namespaced_custom_object(
                h.GROUP, h.VERSION, TW_NS, "agenttasks", name, {"spec": {"completed": True}}
            )
            marks[name] = time.monotonic()
            walls[name] = time.time()

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(complete, range(20)))
    tw.completed += len(burst)
    obs = tw.tracker
    with obs.cond:
        obs.cond.wait_for(lambda: all(j in obs.jti_listed for j in jtis.values()), 120)
    listed = [obs.jti_listed[jtis[b]] - marks[b] for b in burst if jtis[b] in obs.jti_listed]
    gone = [
        obs.secret_deleted[f"{b}-credential"] - marks[b]
        for b in burst
        if f"{b}-credential" in obs.secret_deleted
    ]
    lag1 = operator_lag()
    if profiling is not None:
        profiling.join()
    pub1 = _histogram("taskwarden_revocation_publish_seconds")
    cpu1, wall = cpu_now(), time.monotonic() - t0
    split: dict[str, float] = {}
    if REVWATCH:
        import revwatch

        seen, on_list = revwatch.read(str(REVWATCH[0]))
        arrive = [seen[b] - walls[b] for b in burst if b in seen]
        idle_listed = [on_list[jtis[b]] - walls[b] for b in burst if jtis[b] in on_list]
        after = [on_list[jtis[b]] - seen[b] for b in burst if b in seen and jtis[b] in on_list]
        split = {
            # an idle watcher in its own process: the completion's watch event arrives ...
            "revoke.idle.completion_seen.50": pct(arrive, 50),
            "revoke.idle.completion_seen.99": pct(arrive, 99),
            # ... and the jti on the list arrives (the lag without the bench's GIL)
            "revoke.idle.listed.50": pct(idle_listed, 50),
            "revoke.idle.listed.99": pct(idle_listed, 99),
            "revoke.idle.seen_to_listed.50": pct(after, 50),
            "revoke.idle.seen_to_listed.99": pct(after, 99),
        }
    # CPU seconds each process spent during the burst (completions until the last listing),
    # per second of it: 2.0 is both cores.
    split.update({f"revoke.cpu.{k}": (cpu1[k] - cpu0[k]) / wall for k in cpu1 if k in cpu0})
    split["revoke.wall_s"] = wall
    # API requests per completion during the burst, by verb and resource (apiserver metrics)
    calls1 = rotation.api_requests(api)
    split.update(
        {
            f"revoke.calls.{k}": (v - calls0.get(k, 0.0)) / n
            for k, v in calls1.items()
            if v - calls0.get(k, 0.0) >= n / 10
        }
    )
    return {
        **split,
        # The operator's part of listing: event arrived -> the list write holding it returned.
        "revoke.publish.50": _bucket_quantile(pub0, pub1, 0.5),
        "revoke.publish.99": _bucket_quantile(pub0, pub1, 0.99),
        # The operator's own view (taskwarden_revocation_lag_seconds): from its reconcile of
        # the completion to listed and Secret deleted; the rest of the bench's lag is the
        # watch bringing the completion to it and the list back to the bench.
        "revoke.operator_mean": (lag1[0] - lag0[0]) / max(1.0, lag1[1] - lag0[1]),
        "revoke.50": pct(listed, 50),
        "revoke.99": pct(listed, 99),
        "revoke.max": max(listed, default=float("nan")),
        "revoke.listed": len(listed),
        "revoke.secret_gone.50": pct(gone, 50),
        "revoke.secret_gone.99": pct(gone, 99),
    }


def latency_round(
    api: client.ApiClient, tw: System, naive: System, run: int, args: argparse.Namespace
) -> dict[str, float]:
    r: dict[str, float] = {}
    for s in (tw, naive):
        one = s.run([f"a1-r{run}-{i}" for i in range(args.tasks)], 1)
        cpu0 = cpu_now()
        many = s.run([f"a16-r{run}-{i}" for i in range(args.concurrent_tasks)], 16)
        cpu1 = cpu_now()
        # Where the CPU of one issuance goes, per process (the other operator idles meanwhile).
        r.update(
            {
                f"{s.label}.16.cpu_ms.{k}": 1000 * (cpu1[k] - cpu0[k]) / args.concurrent_tasks
                for k in cpu1
                if k in cpu0
            }
        )
        r.update(summary(f"{s.label}.1", one))
        r.update(summary(f"{s.label}.16", many, (50, 90, 99)))
        r[f"{s.label}.create.50"] = pct(one["create"], 50)
        r[f"{s.label}.create.99"] = pct(one["create"], 99)
    fl, fl_tps = issuance.floor(api, TW_NS, args.tasks, 1, run)
    r.update({"floor.1.50": pct(fl, 50), "floor.1.99": pct(fl, 99), "floor.1.tps": fl_tps})
    fl, fl_tps = issuance.floor(api, TW_NS, args.concurrent_tasks, 16, run)
    r.update({f"floor.16.{p}": pct(fl, p) for p in (50, 90, 99)})
    r["floor.16.tps"] = fl_tps
    r.update(status_patches(api, args.tasks, [f"a1-r{run}-{i}" for i in range(args.tasks)]))
    r.update(revocation_burst(api, tw, args.burst, run))
    print(json.dumps({"run": run, **r}), flush=True)
    return r


def memory_taskwarden(op: h.OperatorProcess, tw: System, live: int) -> dict[str, float]:
    assert op.proc is not None
    pid = op.proc.pid
    sampler = procmem.Sampler(pid)
    t0 = time.monotonic()
    tw.run([f"m-{i}" for i in range(max(0, live - tw.live()))], len(tw.agents), wait=False)
    procmem.wait_until(lambda: op.metric("taskwarden_active_credentials") >= live, live / 5 + 300)
    out = {"live": op.metric("taskwarden_live_tasks"), "fill_s": time.monotonic() - t0}
    procmem.settle(pid)
    out["steady"] = procmem.steady_rss(pid)
    out["peak"] = max(sampler.stop(), procmem.status_mib(pid, "VmHWM"))
    op.kill()
    t0 = time.monotonic()
    op.start(wait=False)
    pid = op.proc.pid
    sampler = procmem.Sampler(pid)
    procmem.wait_until(lambda: op.metric("taskwarden_live_tasks") >= out["live"], 900)
    out["resync_s"] = time.monotonic() - t0
    procmem.settle(pid)
    out["restart_steady"] = procmem.steady_rss(pid)
    out["restart_peak"] = max(sampler.stop(), procmem.status_mib(pid, "VmHWM"))
    out["reissued_on_resync"] = op.metric("taskwarden_credentials_issued_total", kind="reissue")
    return out


def memory_naive(nop: procmem.NaiveOperator, naive: System, live: int) -> dict[str, float]:
    sampler = procmem.Sampler(nop.pid)
    t0 = time.monotonic()
    naive.run([f"m-{i}" for i in range(max(0, live - naive.live()))], len(naive.agents), wait=False)
    obs = naive.tracker
    procmem.wait_until(lambda: min(len(obs.active), len(obs.secret_added)) >= live, live / 5 + 300)
    out = {"live": float(len(obs.active)), "fill_s": time.monotonic() - t0}
    procmem.settle(nop.pid)
    out["steady"] = procmem.steady_rss(nop.pid)
    out["peak"] = max(sampler.stop(), procmem.status_mib(nop.pid, "VmHWM"))
    nop.kill()
    t0 = time.monotonic()
    nop.start(wait=False)
    sampler = procmem.Sampler(nop.pid)
    # kopf has no "resynced" signal: resync ends when the process has been idle for 3 s.
    procmem.wait_until(nop.healthy, 120)
    procmem.settle(nop.pid)
    out["resync_s"] = time.monotonic() - t0 - 3.0
    out["restart_steady"] = procmem.steady_rss(nop.pid)
    out["restart_peak"] = max(sampler.stop(), procmem.status_mib(nop.pid, "VmHWM"))
    return out


def idle(pid: int) -> float:
    procmem.settle(pid)
    return procmem.steady_rss(pid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (about 5 minutes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=200, help="tasks per 1-agent run")
    ap.add_argument("--concurrent-tasks", type=int, default=480, help="tasks per 16-agent run")
    ap.add_argument("--burst", type=int, default=500, help="completions in the revocation burst")
    ap.add_argument("--live", type=int, default=10_000, help="live tasks for the memory part")
    ap.add_argument("--skip-naive-memory", action="store_true")
    ap.add_argument(
        "--only-revocation", action="store_true", help="the revocation burst alone, --repeats times"
    )
    ap.add_argument(
        "--py-spy", help="with --only-revocation: py-spy binary to profile the operator"
    )
    ap.add_argument(
        "--pprof",
        action="store_true",
        help="with --only-revocation: a CPU profile of kube-apiserver over each burst",
    )
    ap.add_argument(
        "--skip-memory", action="store_true", help="latency rounds only (memory: profile_memory.py)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if args.pprof:
        os.environ["TASKWARDEN_CP_PROFILING"] = "1"  # read when the control plane starts
    if args.quick:
        args.repeats, args.tasks, args.concurrent_tasks = 1, 40, 160
        args.burst, args.live = 100, min(args.live, 1000)
    started = datetime.datetime.now(datetime.UTC)
    results: dict[str, Any] = {"machine": machine(), "started": started.isoformat(), **vars(args)}
    results["out"] = str(args.out)
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C: the control plane and operators are stopped
    # and what was measured so far is written.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        measure(args, results)
    finally:
        results["wall_s"] = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
        results["complete"] = (
            "naive" in results.get("memory", {})
            or (args.skip_naive_memory and "memory" in results)
            or (
                (args.skip_memory or args.only_revocation)
                and len(results.get("rounds", [])) == args.repeats
            )
        )
        if "median" in results and not args.only_revocation:
            results["markdown"] = report(results)
            print(results["markdown"])
        args.out.mkdir(parents=True, exist_ok=True)
        tag = (
            ("-quick" if args.quick else "")
            + ("-revocation" if args.only_revocation else "")
            + ("" if results["complete"] else "-partial")
        )
        path = args.out / f"hotpath-{started:%Y%m%dT%H%M%SZ}{tag}.json"
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nwritten: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def measure(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Fills `results` as it goes, so an interrupted run still reports what it measured."""
    with environment() as (cp, api, op):
        assert op.proc is not None
        OPERATOR[:] = [op]
        tw, naive = setup(cp, api, 20)
        warm = [f"warm-{i}" for i in range(20)]
        tw.run(warm, 4)
        stamped = h.get(api, TW_NS, "agenttasks", "warm-0")["metadata"].get("annotations") or {}
        assert names.REQUESTER_ANNOTATION in stamped, "admission webhooks are not on"
        results["secret_bytes"] = secret_sizes(api, TW_NS, "warm-0")
        PROCS.update(cp.pids, taskwarden=op.proc.pid, bench=os.getpid())
        REVWATCH[:] = [args.out / f"revwatch-{os.getpid()}.txt"]
        args.out.mkdir(parents=True, exist_ok=True)
        watcher = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("revwatch.py")),
                *(str(cp.kubeconfig), TW_NS, OP_NS, str(REVWATCH[0])),
            ]
        )
        PROCS["revwatch"] = watcher.pid
        try:
            _measure(args, results, cp, api, op, tw, naive, warm)
        finally:
            watcher.terminate()
            watcher.wait(10)
            REVWATCH[0].unlink(missing_ok=True)


def _measure(
    args: argparse.Namespace,
    results: dict[str, Any],
    cp: controlplane.ControlPlane,
    api: client.ApiClient,
    op: h.OperatorProcess,
    tw: System,
    naive: System,
    warm: list[str],
) -> None:
    if args.only_revocation:  # the burst alone, repeated; py-spy on the operator if asked
        rounds = results["rounds"] = []
        for run in range(args.repeats):
            spy = None
            if args.py_spy:
                out = args.out / f"revocation-burst-{run}.speedscope.json"
                spy = subprocess.Popen(
                    [
                        args.py_spy,
                        "record",
                        "-p",
                        str(op.proc.pid),
                        "-r",
                        "200",
                        "-f",
                        "speedscope",
                        "-o",
                        str(out),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            prof = args.out / f"revocation-burst-{run}.pprof" if args.pprof else None
            r = revocation_burst(api, tw, args.burst, run, prof)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            print(json.dumps({"run": run, **r}), flush=True)
            rounds.append(r)
        results["median"] = medians(rounds)
        print(json.dumps(results["median"]), flush=True)
        return
    nop = procmem.naive_operator(cp.kubeconfig, op.workdir, json.dumps(results["secret_bytes"]))
    nop.start()
    PROCS["naive"] = nop.pid
    try:
        naive.run(warm, 4)
        issuance.floor(api, TW_NS, 20, 4, 99)
        results["idle"] = {"taskwarden": idle(op.proc.pid), "naive": idle(nop.pid)}
        rounds = results["rounds"] = []
        for run in range(args.repeats):
            rounds.append(latency_round(api, tw, naive, run, args))
            results["median"] = medians(rounds)
        if args.skip_memory:
            return
        results["memory"] = {"taskwarden": memory_taskwarden(op, tw, args.live)}
        print(json.dumps(results["memory"]), flush=True)
        if not args.skip_naive_memory:
            results["memory"]["naive"] = memory_naive(nop, naive, args.live)
    finally:
        nop.stop()


if __name__ == "__main__":
    main()
