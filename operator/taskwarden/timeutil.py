"""RFC 3339 timestamps as Kubernetes writes them. Stdlib only; used by every module with time."""

from __future__ import annotations

import datetime as dt


def rfc3339(ts: float) -> str:
    """Seconds precision when whole, else microseconds: what metav1.Time and humans read."""
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    if d.microsecond:
        return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(value: str) -> float:
    """Parse an RFC 3339 timestamp (Z or offset, optional fraction) to unix seconds."""
    v = value.strip()
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    return dt.datetime.fromisoformat(v).timestamp()
