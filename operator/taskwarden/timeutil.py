"""RFC 3339 timestamps as Kubernetes writes them. Used by every module with time."""

from __future__ import annotations

import datetime as dt

from taskwarden_verifier import contract


def rfc3339(ts: float) -> str:
    """Seconds precision when whole, else microseconds: what metav1.Time and humans read."""
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    if d.microsecond:
        return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


parse = contract.parse_rfc3339
"""Parse an RFC 3339 timestamp (Z or offset, optional fraction) to unix seconds (shared with
the verifier SDK, which reads the revocation list's ``updatedAt``)."""
