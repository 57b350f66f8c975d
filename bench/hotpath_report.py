"""The markdown of bench/hotpath.py: issue 13's table (Taskwarden | naive kopf | raw floor, with
ratios) and its goals, met or not, from one run's results."""

from __future__ import annotations

import math
from typing import Any


def ms(v: float) -> str:
    if math.isnan(v):
        return "—"
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"


def ratio(a: float, b: float) -> str:
    return "—" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"


def pair(m: dict[str, float], key: str, ps: tuple[int, ...]) -> str:
    return " / ".join(ms(m.get(f"{key}.{p}", float("nan"))) for p in ps)


def ratios(m: dict[str, float], a: str, b: str, ps: tuple[int, ...]) -> str:
    nan = float("nan")
    return " / ".join(ratio(m.get(f"{a}.{p}", nan), m.get(f"{b}.{p}", nan)) for p in ps)


def mib(v: float | None) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.0f} MiB"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(res: dict[str, Any]) -> str:
    m: dict[str, float] = res["median"]
    idle = res["idle"]
    mem = res.get("memory", {})
    tw_mem, nv_mem = mem.get("taskwarden", {}), mem.get("naive", {})
    live = int(tw_mem.get("live", res["live"]))
    reps = res["repeats"]
    p2, p3 = (50, 99), (50, 90, 99)
    rows = [
        (
            "what",
            "Taskwarden",
            "naive kopf operator",
            "raw floor",
            "Taskwarden ÷ naive",
            "Taskwarden ÷ floor",
        ),
        ("---",) * 6,
        (
            "create → Secret present and status Active, 1 agent, p50 / p99",
            pair(m, "taskwarden.1", p2),
            pair(m, "naive.1", p2),
            pair(m, "floor.1", p2),
            ratios(m, "taskwarden.1", "naive.1", p2),
            ratios(m, "taskwarden.1", "floor.1", p2),
        ),
        (
            "throughput with 16 concurrent agents",
            f"{m['taskwarden.16.tps']:.0f} tasks/s",
            f"{m['naive.16.tps']:.0f} /s",
            f"{m['floor.16.tps']:.0f} /s",
            ratio(m["taskwarden.16.tps"], m["naive.16.tps"]),
            ratio(m["taskwarden.16.tps"], m["floor.16.tps"]),
        ),
        (
            "16 concurrent agents, create → Active p50 / p90 / p99",
            pair(m, "taskwarden.16", p3),
            pair(m, "naive.16", p3),
            pair(m, "floor.16", p3),
            ratios(m, "taskwarden.16", "naive.16", p3),
            ratios(m, "taskwarden.16", "floor.16", p3),
        ),
        (
            "the create call alone, 1 agent, p50 / p99",
            pair(m, "taskwarden.create", p2),
            pair(m, "naive.create", p2),
            "—",
            ratios(m, "taskwarden.create", "naive.create", p2),
            "—",
        ),
        (
            "status patch alone, p50 / p99 (AgentTask; NaiveTask: a CR status with no schema)",
            pair(m, "taskwarden.patch", p2),
            pair(m, "naive.patch", p2),
            "—",
            ratios(m, "taskwarden.patch", "naive.patch", p2),
            "—",
        ),
        (
            f"revocation lag, burst of {res['burst']} completions from 20 agents, p50 / p99 "
            "(patch returned → jti on the list)",
            pair(m, "revoke", p2),
            "—",
            "—",
            "—",
            "—",
        ),
        (
            "operator RSS idle",
            mib(idle.get("taskwarden")),
            mib(idle.get("naive")),
            "—",
            ratio(idle.get("taskwarden", 0), idle.get("naive", 0)),
            "—",
        ),
        (
            f"operator RSS, {live:,} live tasks, steady / peak",
            f"{mib(tw_mem.get('steady'))} / {mib(tw_mem.get('peak'))}",
            f"{mib(nv_mem.get('steady'))} / {mib(nv_mem.get('peak'))}",
            "—",
            ratio(tw_mem.get("steady", 0), nv_mem.get("steady", 0)),
            "—",
        ),
        (
            f"RSS after SIGKILL, restart and resync of {live:,}, steady / peak",
            f"{mib(tw_mem.get('restart_steady'))} / {mib(tw_mem.get('restart_peak'))}",
            f"{mib(nv_mem.get('restart_steady'))} / {mib(nv_mem.get('restart_peak'))}",
            "—",
            ratio(tw_mem.get("restart_steady", 0), nv_mem.get("restart_steady", 0)),
            "—",
        ),
        (
            "resync after restart (Taskwarden: to `taskwarden_live_tasks`; kopf: until idle)",
            f"{tw_mem.get('resync_s', float('nan')):.1f} s",
            f"{nv_mem.get('resync_s', float('nan')):.1f} s",
            "—",
            "—",
            "—",
        ),
        (
            "per-task bytes, (steady - idle) / live tasks",
            per_task(tw_mem, idle.get("taskwarden")),
            per_task(nv_mem, idle.get("naive")),
            "—",
            "—",
            "—",
        ),
    ]
    table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    head = (
        f"Machine: {res['machine']}. Run started {res['started']}, {res['wall_s'] / 60:.1f} min"
        f"{' (--quick)' if res['quick'] else ''}. Latency: {res['tasks']} tasks with 1 agent "
        f"and {res['concurrent_tasks']} with 16 agents per repeat, medians of {reps} "
        f"repeat(s); memory measured once. Credential Secret data (bytes per key): "
        f"{res['secret_bytes']}."
    )
    return f"{head}\n\n{table}\n\n{cpu(m)}{goals(m, tw_mem, live)}\n"


def cpu(m: dict[str, float]) -> str:
    """CPU ms per issuance of each process in the 16-agent runs (bench/hotpath.py PROCS)."""
    lines = []
    for label in ("taskwarden", "naive"):
        prefix = f"{label}.16.cpu_ms."
        parts = {k[len(prefix) :]: v for k, v in m.items() if k.startswith(prefix)}
        if parts:
            total = sum(parts.values())
            each = ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
            )
            lines.append(f"- {label}: {total:.1f} ms in all ({each})")
    if not lines:
        return ""
    return (
        "CPU per issuance, 16 agents (ms, all processes on the machine):\n"
        + "\n".join(lines)
        + "\n\n"
    )


def per_task(mem: dict[str, float], idle: float | None) -> str:
    if not mem or idle is None or not mem.get("live"):
        return "—"
    return f"{(mem['steady'] - idle) * 1024 * 1024 / mem['live']:,.0f} B"


def goals(m: dict[str, float], tw_mem: dict[str, float], live: int) -> str:
    g = [
        ("1 agent: p50 ≤ naive kopf's p50", m["taskwarden.1.50"] <= m["naive.1.50"]),
        ("1 agent: p50 ≤ 2x the raw floor's p50", m["taskwarden.1.50"] <= 2 * m["floor.1.50"]),
        ("1 agent: p99 ≤ 3x the raw floor's p99", m["taskwarden.1.99"] <= 3 * m["floor.1.99"]),
        ("create call p99 ≤ 20 ms", m["taskwarden.create.99"] <= 0.020),
        ("16 agents: p99 ≤ naive kopf's p99", m["taskwarden.16.99"] <= m["naive.16.99"]),
        ("16 agents: throughput ≥ naive kopf's", m["taskwarden.16.tps"] >= m["naive.16.tps"]),
        (
            "16 agents: throughput ≥ 50% of the raw floor's",
            m["taskwarden.16.tps"] >= 0.5 * m["floor.16.tps"],
        ),
        ("revocation burst: lag p99 ≤ 1 s", m["revoke.99"] <= 1.0),
    ]
    if tw_mem:
        steady = max(tw_mem["steady"], tw_mem["restart_steady"])
        peak = max(tw_mem["peak"], tw_mem["restart_peak"])
        scale = "" if live == 10_000 else f" (measured at {live:,} live tasks, not 10,000)"
        g.append((f"RSS ≤ 150 MiB steady, incl. after restart{scale}", steady <= 150))
        g.append((f"RSS ≤ 200 MiB peak, incl. restart and resync{scale}", peak <= 200))
    return "Goals (issue 13):\n" + "\n".join(f"- {t}: {verdict(ok)}" for t, ok in g)
