"""When a credential is rotated, and when a rotation counts as late: pure arithmetic.

Called by tasks/issue.py (the deadline of each credential, the condition written with a late
rotation) and tasks/scheduler.py (the lag it exports). lifecycle.rotation_at says *whether* a
token is rotated at all (not when the task ends first); this module says *when*.

Jitter: a token is rotated at a point drawn uniformly from [FRACTION_LOW, FRACTION_HIGH] of
its life, so tasks created together (a burst, a restart's resync) do not all rotate in the
same second, and then again in the same second one life later. The draw is seeded by the
token's jti, not by a process RNG: every reconcile of the task, every restart and every
replica computes the same deadline for the same token, so re-checks never push a rotation
back and two replicas agree on when it is due. The jti is random (credentials/claims.py),
so the draws are independent across tokens. Tests pass any `draw` in [0, 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

FRACTION_LOW = 0.5
FRACTION_HIGH = 0.6
"""Rotate between half and 60% of the token's life: at least 40% of it is left as slack for
a rotation that has to wait, and the renewed token overlaps the old one by as much."""

BEHIND_FRACTION = 0.1
"""A rotation served more than this fraction of the token's life after its deadline is late:
the task gets `RotationOnTime=False` (reason `RotationBehind`)."""

ON_TIME = "RotationOnTime"
BEHIND = "RotationBehind"
CAUGHT_UP = "RotatedOnTime"


def jti_draw(jti: str) -> float:
    """A uniform draw in [0, 1) that is a pure function of the jti."""
    digest = hashlib.blake2b(jti.encode(), digest_size=8, person=b"tw-rotate").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def rotate_at(
    issued_at: float,
    token_exp: float,
    task_expires_at: float,
    draw: float,
) -> float | None:
    """The rotation deadline of a token issued at `issued_at` that expires at `token_exp`, at
    fraction FRACTION_LOW + draw * (FRACTION_HIGH - FRACTION_LOW) of its life; None when the
    task ends no later than the token (nothing to rotate to)."""
    if token_exp >= task_expires_at:
        return None
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    fraction = FRACTION_LOW + draw * (FRACTION_HIGH - FRACTION_LOW)
    return issued_at + (token_exp - issued_at) * fraction


def deadline_of(
    jti: str,
    issued_at: float,
    token_exp: float,
    task_expires_at: float,
    draw: Callable[[str], float] = jti_draw,
) -> float | None:
    """`rotate_at` with the jitter drawn from the jti (or an injected `draw`)."""
    return rotate_at(issued_at, token_exp, task_expires_at, draw(jti))


def late_by(now: float, due_at: float, issued_at: float, token_exp: float) -> float | None:
    """Seconds a rotation served at `now` is late, when it is late enough to say so (more
    than BEHIND_FRACTION of the token's life after `due_at`); None when it is on time."""
    lag = now - due_at
    return lag if lag > BEHIND_FRACTION * max(token_exp - issued_at, 0.0) else None


def slack_used(now: float, due_at: float, token_exp: float) -> float:
    """Of the time between a rotation's deadline and its token's expiry, the fraction already
    spent waiting: 0 on time, 1 when the token expires un-rotated. What the alert watches: it
    does not depend on the credential TTL."""
    span = token_exp - due_at
    if span <= 0:
        return 1.0 if now >= token_exp else 0.0
    return max(0.0, (now - due_at) / span)


EVENT_RATE = 1.0
EVENT_BURST = 10.0
"""Warning Events for rotations falling behind: at most EVENT_BURST at once, then EVENT_RATE
per second for the whole operator. An overloaded operator flips many tasks to
`RotationOnTime=False` at once; one Event each would add an API write per task exactly when
writes are short. Every task still gets the condition; the metric and alert tell the whole."""


class Budget:
    """A token bucket on an injected clock: `take(now)` is True while the budget allows."""

    def __init__(self, rate: float = EVENT_RATE, burst: float = EVENT_BURST) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
