"""Issue 13: where the tail of the AgentTask create call comes from.

The hot-path bench (bench/hotpath.py) times the agent's create call while the operator issues
the task created just before it. This one takes the same call apart, in rounds of interleaved
phases on one control plane, every create made by the agent's own ServiceAccount with its
pod-bound token (as in hotpath.py):

- `issuing`: the hot-path loop (create, wait for Secret + Active, next), operator running;
- `alone`: the same creates with the operator stopped: admission (MutatingAdmissionPolicy,
  ValidatingAdmissionPolicy), the CRD schema and its CEL rules, etcd, and nothing else;
- `naive`: a NaiveTask create by the naive operator's agent (no admission, no CEL rules), the
  naive operator not running;
- `configmap`: a ConfigMap create by the admin: the API server's floor for a small write;
- `alone_raw`, `naive_raw`: the `alone` and `naive` creates again from bench/create_loop.py,
  a process that does nothing else (no client library, no watch threads sharing the GIL).

With `--pprof S`, a CPU profile of kube-apiserver is taken for S seconds during one `alone`
and one `issuing` phase (TASKWARDEN_CP_PROFILING=1) and summarised with `go tool pprof -top`.

    python -m bench.create_call --tasks 300 --rounds 3 [--pprof 10]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TASKWARDEN_CP_PROFILING", "1")  # read when the control plane starts

from kubernetes import client

import hotpath
import rotation
from common import ROOT, environment, h, machine, median, pct

PHASES = ("issuing", "alone", "alone_raw", "naive", "naive_raw", "configmap")


def timed(calls: list[Any]) -> list[float]:
    out = []
    for call in calls:
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def pprof(api: client.ApiClient, seconds: int, out: Path) -> threading.Thread:
    """A CPU profile of kube-apiserver for `seconds`, written to `out` (in the background)."""
    return rotation.apiserver_profile(api, seconds, out)


def raw(agent: client.ApiClient, path: str, bodies: list[dict[str, Any]]) -> list[float]:
    """The same creates from bench/create_loop.py, a process that does nothing else."""
    cfg = agent.configuration
    spec = {
        "host": cfg.host,
        "token": cfg.api_key["authorization"].removeprefix("Bearer "),
        "ca": cfg.ssl_ca_cert,
        "path": path,
        "bodies": bodies,
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("create_loop.py"))],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return [float(x) for x in json.loads(done.stdout)]


def top(profile: Path, n: int = 25) -> str:
    """`go tool pprof -top` of a profile, cumulative, the first n lines of the table."""
    try:
        text = subprocess.run(
            ["go", "tool", "pprof", "-top", "-cum", f"-nodecount={n}", str(profile)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"(go tool pprof failed: {e})"
    return text


def one_round(
    api: client.ApiClient,
    op: Any,
    tw: hotpath.System,
    naive: hotpath.System,
    run: int,
    n: int,
    profile_dir: Path | None,
    seconds: int,
) -> tuple[dict[str, list[float]], dict[str, str]]:
    lat: dict[str, list[float]] = {}
    profiles: dict[str, str] = {}

    def profiled(phase: str) -> threading.Thread | None:
        if profile_dir is None:
            return None
        path = profile_dir / f"apiserver-{phase}-{run}.pprof"
        profiles[phase] = str(path)
        return pprof(api, seconds, path)

    spy = profiled("issuing")
    lat["issuing"] = tw.run([f"is-{run}-{i}" for i in range(n)], 1)["create"]
    if spy:
        spy.join()
    op.stop()
    try:
        agent, nagent = tw.agents[0], naive.agents[0]
        spy = profiled("alone")
        alone = [f"al-{run}-{i}" for i in range(n)]
        lat["alone"] = timed([lambda x=x: tw.create(agent, x) for x in alone])
        if spy:
            spy.join()
        lat["naive"] = timed(
            [lambda x=x: naive.create(nagent, x) for x in (f"nv-{run}-{i}" for i in range(n))]
        )
        lat["alone_raw"] = raw(
            agent,
            f"/apis/{h.GROUP}/{h.VERSION}/namespaces/{tw.ns}/agenttasks",
            [tw.body(f"ar-{run}-{i}") for i in range(n)],
        )
        alone += [f"ar-{run}-{i}" for i in range(n)]
        naive_path = (
            f"/apis/{hotpath.NAIVE_GROUP}/{hotpath.NAIVE_VERSION}"
            f"/namespaces/{naive.ns}/{hotpath.NAIVE_PLURAL}"
        )
        lat["naive_raw"] = raw(nagent, naive_path, [naive.body(f"nr-{run}-{i}") for i in range(n)])
        core = client.CoreV1Api(api)
        lat["configmap"] = timed(
            [
                lambda x=x: core.create_namespaced_config_map(
                    hotpath.TW_NS, {"metadata": {"name": x}, "data": {"k": "v" * 64}}
                )
                for x in (f"cm-{run}-{i}" for i in range(n))
            ]
        )
    finally:
        op.start()
    for name in alone:  # issued after the restart; settle before the next round
        tw.tracker.wait(name, 300)
    return lat, profiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=300, help="creates per phase and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pprof", type=int, default=0, help="seconds of apiserver CPU profile")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    started = datetime.datetime.now(datetime.UTC)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = f"{started:%Y%m%dT%H%M%SZ}"
    results: dict[str, Any] = {"machine": machine(), "started": started.isoformat(), "rounds": []}
    with environment() as (cp, api, op):
        tw, naive = hotpath.setup(cp, api, 1)
        tw.run([f"warm-{i}" for i in range(20)], 1)
        for run in range(args.rounds):
            pdir = args.out / f"create-call-{stamp}" if args.pprof and run == 0 else None
            if pdir:
                pdir.mkdir(exist_ok=True)
            lat, profiles = one_round(api, op, tw, naive, run, args.tasks, pdir, args.pprof)
            r = {f"{p}.{q}": 1000 * pct(lat[p], q) for p in PHASES for q in (50, 90, 99)}
            r.update({f"{p}.max": 1000 * max(lat[p]) for p in PHASES})
            r.update({f"{p}.over_20ms": sum(x > 0.020 for x in lat[p]) for p in PHASES})
            print(json.dumps({"run": run, **r}), flush=True)
            results["rounds"].append(r)
            for phase, path in profiles.items():
                results[f"pprof.{phase}"] = {"file": path, "top": top(Path(path))}
                print(f"--- apiserver CPU, {phase} ---\n{results[f'pprof.{phase}']['top']}")
    rounds = results["rounds"]
    results["median"] = {k: median([r[k] for r in rounds]) for k in rounds[0]}
    print(json.dumps(results["median"], indent=1))
    path = args.out / f"create-call-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
