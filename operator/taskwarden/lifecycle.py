"""When a task expires, when its token expires, and when the token is rotated: pure arithmetic.

Called by the task controller (tasks/checks.py, tasks/issue.py); tasks/scheduler.py fires
the deadlines computed here.
"""

from __future__ import annotations


def expiry(created_at: float, ttl: float, parent_expires_at: float | None = None) -> float:
    """Task expiry: creation + ttl, clamped to the parent's expiry for delegated tasks."""
    at = created_at + ttl
    return min(at, parent_expires_at) if parent_expires_at is not None else at


def token_expiry(now: float, credential_ttl: float, task_expires_at: float) -> float:
    """A token never outlives its task. Whole seconds: JWT NumericDate, floored."""
    return float(int(min(now + credential_ttl, task_expires_at)))


def rotation_at(issued_at: float, token_exp: float, task_expires_at: float) -> float | None:
    """Rotate at half the token's life, unless the task ends before the token does."""
    if token_exp >= task_expires_at:
        return None
    return issued_at + (token_exp - issued_at) / 2
