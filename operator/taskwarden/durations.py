"""Go-style durations ("1h30m", "10s", "500ms", "1.5h") for AgentTask and AgentPolicy fields.

`spec.ttl`, `spec.credentialTTL`, `spec.maxTTL`, `spec.maxCredentialTTL` and `spec.approvalTTL`
are written the way `kubectl` users know from Go tools. `policy` parses them when it builds a
`TaskRequest` or reads an AgentPolicy; admission, status and messages format seconds back with
`format_duration`. Pure and stdlib only.

The grammar follows Go's `time.ParseDuration` (units ns, us/µs, ms, s, m, h; a bare "0"), with
two deliberate restrictions: a sign is rejected (a negative lifetime is always a mistake) and the
value is computed exactly, then rounded to whole nanoseconds like Go does.

Why not durationpy (which the Kubernetes client already installs)? Checked against 0.11, it
parses a different language than the API server's CEL `duration()` and the CRD patterns:
it accepts junk between components ("1h!30m" is 90 minutes), units Go does not have ("1d",
"2w", "1y"), and signs; it computes in floats and rounds to microseconds ("1ns" is 0); and it
has no int64 bound. An operator that reads "1d" where the API server refuses it, or "1h!30m"
as valid, would disagree with admission. tests/unit/test_durations.py pins these differences,
so a durationpy that fixes them fails a test and this choice can be revisited. It would also
make pure policy code depend on a package it gets only through the Kubernetes client.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["format_duration", "parse_duration"]

_NS_PER_UNIT: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}

# One "<number><unit>" component. Go allows "1.", ".5" but not ".".
_COMPONENT = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")

# Go refuses anything that does not fit an int64 of nanoseconds (about 292 years).
_MAX_NS = 2**63 - 1

_EXAMPLES = 'e.g. "30m", "1h30m", "10s", "500ms" or "1.5h"'


def parse_duration(s: str) -> float:
    """Return the duration `s` in seconds; raise ValueError on empty, signed or malformed input."""
    if not isinstance(s, str):
        raise ValueError(f"duration must be a string ({_EXAMPLES}), not {type(s).__name__}")
    if s == "":
        raise ValueError(f"duration is empty; expected a Go-style duration, {_EXAMPLES}")
    if s[0] == "-":
        raise ValueError(f"duration {s!r} is negative; durations must not be negative")
    if s[0] == "+":
        raise ValueError(f"duration {s!r} has a sign; write it without '+', {_EXAMPLES}")
    if s == "0":
        return 0.0

    total = Fraction(0)
    pos = 0
    while pos < len(s):
        match = _COMPONENT.match(s, pos)
        if match is None:
            raise ValueError(_junk_message(s, pos))
        number, unit = match.groups()
        total += Fraction(number) * _NS_PER_UNIT[unit]
        pos = match.end()

    nanoseconds = round(total)
    if nanoseconds > _MAX_NS:
        raise ValueError(f"duration {s!r} is too long; the maximum is about 292 years")
    return nanoseconds / 1_000_000_000


def _junk_message(s: str, pos: int) -> str:
    rest = s[pos:]
    number = re.match(r"[0-9.]*", rest)
    if number is None or number.end() == 0:
        return f"duration {s!r} is not a Go-style duration (unexpected {rest!r}), {_EXAMPLES}"
    digits, after = rest[: number.end()], rest[number.end() :]
    if re.fullmatch(r"[0-9]+\.?[0-9]*|\.[0-9]+", digits) is None:
        return f"duration {s!r} has a malformed number {digits!r}, {_EXAMPLES}"
    if after == "":
        return f"duration {s!r} is missing a unit (ns, us, ms, s, m or h), {_EXAMPLES}"
    return f"duration {s!r} has an unknown unit at {after!r}; use ns, us, ms, s, m or h"


def format_duration(seconds: float) -> str:
    """Format seconds compactly in Go units, omitting zero parts: 330 -> "5m30s", 7200 -> "2h".

    Sub-second remainders are spelled as ms/us/ns so that `parse_duration` reads the result back
    to the same nanosecond. Negative values get a leading "-" (useful for "expired 5s ago").
    """
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format non-finite duration {seconds!r}")
    nanoseconds = round(Fraction(seconds) * 1_000_000_000)
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    remaining = abs(nanoseconds)
    parts: list[str] = []
    for unit in ("h", "m", "s", "ms", "us", "ns"):
        size = _NS_PER_UNIT[unit]
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
