"""Rotation capacity and soak on a real local control plane (issue 18).

Capacity: N live tasks at a short credentialTTL need about N / (credentialTTL x 0.55)
rotations per second; with N large enough that is more than one replica can do, and the
rotations done per second over a measuring window is the replica's sustained capacity. Each
variant runs on a fresh control plane, one after the other in the same run: `base` is the
operator at the commit this branch forked from (exported with `git archive`, run with
PYTHONPATH), `branch` is this checkout. Also reported: Active tasks holding an expired
credential (sampled from a watch), and operator RSS over time.

Soak: `--soak-minutes M --soak-rate R`: as many tasks as make R rotations per second (80% of
the measured capacity), for M minutes, on this checkout only: RSS after 2 minutes and at the
end, and the expired-unrotated count at every sample.

Run:
  .venv/bin/python bench/rotation.py --tasks 3000 --credential-ttl 20 --measure 60
  .venv/bin/python bench/rotation.py --soak-minutes 5 --soak-rate 120 --variants branch
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from common import ROOT, environment, h, machine, rss_mib
from lifecycle import create_many, policy
from taskwarden import timeutil

ROTATE_FRACTION = 0.55
"""Mean point of the token's life at which the branch rotates (0.5 on the base commit)."""


class Credentials:
    """Watches AgentTasks: phase and credential expiry of each, to count expired-unrotated."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.api, self.ns = api, ns
        self.exp: dict[str, float] = {}
        self.active: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            try:
                for ev in watch.Watch().stream(
                    custom.list_namespaced_custom_object,
                    "taskwarden.dev",
                    "v1alpha1",
                    self.ns,
                    "agenttasks",
                    timeout_seconds=60,
                    _request_timeout=90,
                ):
                    obj = ev["object"]
                    name = obj["metadata"]["name"]
                    st = obj.get("status") or {}
                    if st.get("phase") == "Active":
                        self.active.add(name)
                    else:
                        self.active.discard(name)
                    exp = (st.get("credential") or {}).get("expiresAt")
                    if exp:
                        self.exp[name] = timeutil.parse(exp)
                    if self._stop.is_set():
                        return
            except Exception:
                time.sleep(0.2)

    def expired(self) -> int:
        """Active tasks whose credential has expired, 1 s of watch delay allowed."""
        now = time.time() - 1.0
        return sum(1 for n in list(self.active) if self.exp.get(n, now + 1) < now)

    def stop(self) -> None:
        self._stop.set()


def api_requests(api: client.ApiClient) -> dict[str, float]:
    """apiserver_request_total by verb/resource/subresource: what the operator's work costs."""
    method, url, headers, body, post = api.param_serialize(
        "GET", "/metrics", auth_settings=["BearerToken"]
    )
    resp = api.call_api(method, url, headers, body, post)
    resp.read()
    text = resp.data.decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        lab = dict(
            kv.split("=", 1) for kv in labels[len("apiserver_request_total{") : -1].split(",")
        )
        lab = {k: v.strip('"') for k, v in lab.items()}
        if lab.get("resource") not in ("agenttasks", "secrets", "configmaps", "events"):
            continue
        sub = f"/{lab['subresource']}" if lab.get("subresource") else ""
        key = f"{lab['verb']} {lab['resource']}{sub}"
        out[key] = out.get(key, 0.0) + float(value)
    return out


def apiserver_profile(api: client.ApiClient, seconds: int, out: Path) -> threading.Thread:
    """Fetch a Go CPU profile of kube-apiserver (/debug/pprof) in the background: where the
    API server's CPU goes per request kind (`go tool pprof -top <out>`)."""

    def fetch() -> None:
        method, url, headers, body, post = api.param_serialize(
            "GET",
            "/debug/pprof/profile",
            query_params=[("seconds", str(seconds))],
            auth_settings=["BearerToken"],
        )
        resp = api.call_api(method, url, headers, body, post, _request_timeout=seconds + 60)
        resp.read()
        out.write_bytes(resp.data)

    t = threading.Thread(target=fetch, daemon=True)
    t.start()
    return t


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each process so far (/proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (when installed next to this Python) records the operator for `seconds`."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return None
    return subprocess.Popen(
        [
            str(spy),
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(seconds)),
            "-r",
            "50",
            "-f",
            "raw",
            "-o",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top_frames(raw: Path, n: int = 25) -> list[tuple[str, float]]:
    """Inclusive share of samples per function (own code and libraries) from py-spy raw."""
    total = 0
    incl: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        c = int(count)
        total += c
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(" (")[0] + " " + frame.split("/")[-1].rstrip(")").split(":")[0]
            if name not in seen:
                seen.add(name)
                incl[name] = incl.get(name, 0) + c
    return sorted(((k, round(v / total, 3)) for k, v in incl.items()), key=lambda x: -x[1])[:n]


def baseline_tree(ref: str) -> Path:
    """The operator package at `ref`, exported read-only to a temporary directory."""
    out = Path(tempfile.mkdtemp(prefix="taskwarden-base-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "operator"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "operator"


def run_variant(name: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"variant": name}
    with environment(**env) as (cp, api, op):
        assert op.proc is not None
        ns = "rot"
        h.agent_namespace(api, ns)
        h.pod(api, ns, "agent-0", "agent")
        policy(api, ns)
        creds = Credentials(api, ns)
        ttl = f"{args.credential_ttl}s"
        names = [f"r-{i}" for i in range(args.tasks)]
        t0 = time.monotonic()
        created_in = create_many(api, ns, names, conc=16, ttl="2h", credential_ttl=ttl)
        res["create_s"] = round(created_in, 1)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and len(creds.active) < args.tasks:
            time.sleep(1)
        res["all_active_s"] = round(time.monotonic() - t0, 1)
        time.sleep(args.warmup)  # let rotation reach its steady state
        samples = []
        calls0 = api_requests(api)
        spy = None
        if args.profile:
            spy = profile(op.proc.pid, min(args.measure, 60), Path(f"/tmp/rotation-{name}.raw"))
        apis = None
        if args.apiserver_profile:
            apis = apiserver_profile(
                api, int(min(args.measure, 60)), Path(f"/tmp/apiserver-{name}.pprof")
            )
        procs = {**cp.pids, "operator": op.proc.pid, "bench (watcher)": os.getpid()}
        cpu0 = cpu_seconds(procs)
        r0, m0 = op.metric("taskwarden_credentials_issued_total", kind="rotate"), time.monotonic()
        end = m0 + args.measure
        rss_start = rss_mib(op.proc.pid)
        while time.monotonic() < end:
            time.sleep(min(args.sample, max(0.0, end - time.monotonic())))
            samples.append(
                {
                    "t": round(time.monotonic() - m0),
                    "rotations": op.metric("taskwarden_credentials_issued_total", kind="rotate"),
                    "expired_active": creds.expired(),
                    "rss_mib": round(rss_mib(op.proc.pid), 1),
                }
            )
            if args.verbose:
                print(json.dumps({"variant": name, **samples[-1]}), flush=True)
        r1, m1 = op.metric("taskwarden_credentials_issued_total", kind="rotate"), time.monotonic()
        calls1 = api_requests(api)
        cpu1 = cpu_seconds(procs)
        res["cores_used"] = {
            k: round((cpu1[k] - cpu0[k]) / (m1 - m0), 2) for k in cpu1 if k in cpu0
        }
        res["cpu_ms_per_rotation"] = {
            k: round(1000 * (cpu1[k] - cpu0[k]) / max(r1 - r0, 1.0), 1) for k in cpu1 if k in cpu0
        }
        rotated = max(r1 - r0, 1.0)
        res["api_calls_per_rotation"] = {
            k: round((calls1[k] - calls0.get(k, 0.0)) / rotated, 2)
            for k in sorted(calls1)
            if calls1[k] - calls0.get(k, 0.0) > 0
        }
        if apis is not None:
            apis.join(timeout=120)
        if spy is not None:
            try:
                spy.wait(timeout=300)
            except subprocess.TimeoutExpired:
                spy.kill()  # a saturated machine: the profile is lost, not the run
            raw = Path(f"/tmp/rotation-{name}.raw")
            if raw.exists():
                res["profile_top"] = top_frames(raw)
        res.update(
            {
                "tasks": args.tasks,
                "credential_ttl_s": args.credential_ttl,
                "rotations_needed_per_s": round(
                    args.tasks / (args.credential_ttl * args.rotate_fraction), 1
                ),
                "rotations_done_per_s": round((r1 - r0) / (m1 - m0), 1),
                "expired_active_max": max(s["expired_active"] for s in samples),
                "expired_active_last": samples[-1]["expired_active"],
                "rss_start_mib": round(rss_start, 1),
                "rss_end_mib": samples[-1]["rss_mib"],
                "reconcile_errors": op.metric("taskwarden_reconcile_errors_total"),
            }
        )
        if args.soak_minutes:
            two = [s for s in samples if s["t"] >= 120]
            res["rss_after_2min_mib"] = two[0]["rss_mib"] if two else None
            res["samples"] = samples
        creds.stop()
    return res


def main() -> None:
    # A SIGTERM (timeout, kill) unwinds like Ctrl-C: the operator and control plane stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=3000)
    ap.add_argument("--credential-ttl", type=int, default=20)
    ap.add_argument("--measure", type=float, default=60.0, help="seconds measured")
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--sample", type=float, default=5.0)
    ap.add_argument("--variants", default="base,branch")
    ap.add_argument("--base-ref", default="", help="git ref of `base` (default: merge-base)")
    ap.add_argument("--soak-minutes", type=float, default=0.0)
    ap.add_argument("--soak-rate", type=float, default=0.0, help="rotations/s for the soak")
    ap.add_argument("--rotate-fraction", type=float, default=ROTATE_FRACTION)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--profile", action="store_true", help="py-spy the operator while measuring")
    ap.add_argument(
        "--apiserver-profile",
        action="store_true",
        help="CPU profile of kube-apiserver while measuring: /tmp/apiserver-<variant>.pprof",
    )
    args = ap.parse_args()
    if args.apiserver_profile:
        os.environ["TASKWARDEN_CP_PROFILING"] = "1"  # controlplane: --profiling=true
    if args.soak_minutes:
        args.measure = args.soak_minutes * 60
        args.sample = 10.0
        args.tasks = int(args.soak_rate * args.credential_ttl * args.rotate_fraction)
    out: dict[str, Any] = {
        "machine": machine() + " (shared: 2 cores, other agents running)",
        "args": {k: v for k, v in vars(args).items() if k != "verbose"},
        "runs": [],
    }
    for variant in args.variants.split(","):
        env: dict[str, str] = {}
        if variant == "base":
            ref = (
                args.base_ref
                or subprocess.run(
                    ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
            )
            env["PYTHONPATH"] = str(baseline_tree(ref))
            out["base_ref"] = ref
        else:
            env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
        out["runs"].append(run_variant(variant, env, args))
        print(json.dumps(out["runs"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
