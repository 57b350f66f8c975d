"""The ledger of live credentials: what it adds to an issuance, and how long the start-up
ledger sweep takes with 10,000 entries. A measurement, not a test; results in bench/RESULTS.md.

1. Added issuance latency: `Ledger.add` (the one durable write an issuance now waits for before
   its status write), against a fresh real control plane: one at a time (what a lone issuance
   pays), and 200 at once (group commit: what each pays in a burst).
2. Resync: 10,000 entries written straight into the shards while the operator is down, then
   the operator started; its log reports the ledger sweep's duration. Two cases: every task
   gone (10,000 GETs re-checking under the lock, 10,000 jtis listed, all entries dropped) and
   every token expired (dropped without listing).

Run: .venv/bin/python bench/ledger.py
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kubernetes import client

from common import OP_NS, environment, machine, median, pct
from taskwarden import kube as kube_mod
from taskwarden.credentials import claims, ledger
from taskwarden.ledger import Ledger

N = 10_000


def entries(n: int, exp: float) -> list[ledger.Entry]:
    now = time.time()
    return [
        ledger.Entry(claims.new_jti(), exp, now, str(uuid.uuid4()), "gone", f"task-{i}")
        for i in range(n)
    ]


async def add_latency(kcfg: object) -> tuple[list[float], list[float]]:
    kube = kube_mod.Kube(kcfg)
    store = Ledger(kube, OP_NS)
    await store.load()
    one: list[float] = []
    for e in entries(200, time.time() + 3600):
        t0 = time.perf_counter()
        await store.add(e)
        one.append(time.perf_counter() - t0)
    burst: list[float] = []

    async def timed(e: ledger.Entry) -> None:
        t0 = time.perf_counter()
        await store.add(e)
        burst.append(time.perf_counter() - t0)

    await asyncio.gather(*(timed(e) for e in entries(200, time.time() + 3600)))
    # leave the shards empty again
    await store.remove_entries(store.entries())
    kube.close()
    return one, burst


async def fill(kcfg: object, exp: float) -> None:
    kube = kube_mod.Kube(kcfg)
    store = Ledger(kube, OP_NS)
    await store.load()
    await asyncio.gather(*(store.add(e) for e in entries(N, exp)))
    assert len(store) >= N
    kube.close()


def sweep_seconds(log: Path, start: int) -> tuple[float, int]:
    text = log.read_text(errors="replace").split(f"===== start #{start} =====")[-1]
    m = re.search(r"(\d+) ledger entries revoked \(ledger sweep ([\d.]+)s", text)
    assert m, "no ledger sweep line in the operator log"
    return float(m.group(2)), int(m.group(1))


def main() -> None:
    print(machine())
    with environment() as (_cp, api, op):
        kcfg = api.configuration
        one, burst = asyncio.run(add_latency(kcfg))
        print(
            f"Ledger.add, one at a time (200): p50 {median(one) * 1000:.1f} ms, "
            f"p99 {pct(one, 99) * 1000:.1f} ms"
        )
        print(
            f"Ledger.add, 200 at once: p50 {median(burst) * 1000:.1f} ms, "
            f"p99 {pct(burst, 99) * 1000:.1f} ms, total {max(burst) * 1000:.0f} ms"
        )
        for label, exp in (("tasks gone", time.time() + 3600), ("tokens expired", 1.0)):
            op.stop()
            asyncio.run(fill(kcfg, exp))
            sizes = [
                len(client.CoreV1Api(api).read_namespaced_config_map(name, OP_NS).data or {})
                for name in ledger.shard_names()
            ]
            op.start()
            secs, revoked = sweep_seconds(op.log, op.starts)
            print(
                f"resync, {N} entries ({label}): ledger sweep {secs:.2f} s, {revoked} listed; "
                f"shard sizes {min(sizes)}..{max(sizes)}"
            )


if __name__ == "__main__":
    main()
