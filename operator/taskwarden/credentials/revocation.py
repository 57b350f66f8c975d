"""The revocation list: jti -> exp of every credential revoked before it expired.

What for: a revoked token is still cryptographically valid until its ``exp``, so verifiers also
check its ``jti`` against this list. An entry is only needed until the token expires, which
keeps the list small (tokens live minutes).

Who calls it: the lifecycle/revocation service (``add`` on every revocation, ``prune`` on a
timer, then ``to_configmap_data`` for ConfigMap ``taskwarden-revocations`` and the
``/revocations`` endpoint; ``from_configmap_data`` + ``merge`` to combine with what another
replica or an earlier run published), and ``credentials.verification.verify`` (``revoked=``
accepts a RevocationList, since it is a container of jti).

Pure: no kopf, no Kubernetes client; time comes in as ``now`` (unix seconds).

The cap, and what happens at it (issue 12 item 9): an entry is never dropped while its token
can still verify. ``max_entries`` (default 10000, about half of what fits in a ConfigMap's 1 MiB
at ~50 bytes an entry) is not a truncation point but a trigger: :func:`overflow_action` says
``rotate`` when the live list is over it, and the publisher then replaces every signing key
(``publishing.KeyManager.emergency_rotate``), so every token signed so far fails verification
with an unknown kid. Only after verifiers have had time to drop the retired keys (the key
publish delay) does :meth:`RevocationList.forget` remove the entries listed before the rotation:
their tokens can no longer verify anyway. Until then the list may grow past ``max_entries``
(that is the headroom); :meth:`to_configmap_data` raises rather than write a list that would not
fit in a ConfigMap, so publishing fails loudly, the list goes stale and verifiers fail closed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

DEFAULT_MAX_ENTRIES: Final = 10_000
CONFIGMAP_KEY: Final = "revocations.json"
"""The single data key of ConfigMap ``taskwarden-revocations`` (and the /revocations body)."""
CONFIGMAP_LIMIT_BYTES: Final = 1024 * 1024
"""Kubernetes refuses ConfigMaps whose data exceeds 1 MiB."""
KEEP: Final = "keep"
"""The live list fits under ``max_entries``: nothing to do."""
ROTATE: Final = "rotate"
"""Over ``max_entries`` and no emergency rotation under way: retire every signing key now."""
WAIT: Final = "wait"
"""Over ``max_entries`` but a rotation is already draining: its entries go at its drop time."""


class RevocationListTooLarge(ValueError):
    """The live list does not fit in a ConfigMap; it is never truncated, so publishing stops."""


def overflow_action(live_entries: int, max_entries: int, *, draining: bool) -> str:
    """What the publisher does about the list's size: KEEP, ROTATE or WAIT (named reasons)."""
    if live_entries <= max_entries:
        return KEEP
    return WAIT if draining else ROTATE


def _check_entry(jti: object, exp: object) -> tuple[str, float]:
    if not isinstance(jti, str) or not jti:
        raise ValueError("jti must be a non-empty string")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise ValueError("exp must be a finite number of unix seconds")
    return jti, float(exp)


def _json_number(value: float) -> int | float:
    # Token exp values are whole seconds; write them as integers to keep the list compact.
    return int(value) if value.is_integer() else value


def _rfc3339(now: float) -> str:
    return datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RevocationList:
    """Mutable map of revoked jti -> that token's exp, with a size bound.

    ``grace`` keeps an entry that many seconds past its exp: set it to the largest ``leeway``
    verifiers use, or a token could be accepted (within leeway) after its entry was pruned.
    """

    entries: dict[str, float] = field(default_factory=dict)
    max_entries: int = DEFAULT_MAX_ENTRIES
    grace: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.max_entries, bool) or not isinstance(self.max_entries, int):
            raise ValueError("max_entries must be an integer")
        if self.max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if not math.isfinite(self.grace) or self.grace < 0:
            raise ValueError("grace must be a finite number of seconds >= 0")
        checked: dict[str, float] = {}
        for jti, exp in self.entries.items():
            key, value = _check_entry(jti, exp)
            checked[key] = value
        self.entries = checked

    def add(self, jti: str, exp: float) -> None:
        """Record that the token ``jti`` (valid until ``exp``) is revoked.

        Re-adding keeps the later exp. Never refused: see :func:`overflow_action` for the cap.
        """
        key, value = _check_entry(jti, exp)
        self.entries[key] = max(value, self.entries.get(key, value))

    def prune(self, now: float) -> int:
        """Drop entries whose token expired (``exp + grace <= now``); return how many."""
        expired = [jti for jti, exp in self.entries.items() if exp + self.grace <= now]
        for jti in expired:
            del self.entries[jti]
        return len(expired)

    def forget(self, jtis: Iterable[str]) -> int:
        """Drop ``jtis`` whose tokens can no longer verify (their signing key was retired and
        verifiers had time to notice); return how many were held. Never call it for any other
        reason: an unexpired entry is the only thing that stops its token."""
        dropped = 0
        for jti in jtis:
            if self.entries.pop(jti, None) is not None:
                dropped += 1
        return dropped

    def live(self, now: float) -> int:
        """How many entries are still needed at ``now`` (exp + grace in the future)."""
        return sum(1 for exp in self.entries.values() if exp + self.grace > now)

    def merge(self, other: RevocationList) -> int:
        """Add every entry of ``other`` (keeping the later exp); return how many jti were new."""
        new = 0
        for jti, exp in other.entries.items():
            if jti not in self.entries:
                new += 1
            self.add(jti, exp)
        return new

    def expiry(self, jti: str) -> float | None:
        """The recorded exp of ``jti``, or None if it is not revoked."""
        return self.entries.get(jti)

    def __contains__(self, jti: object) -> bool:
        return jti in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def _ordered(self) -> list[tuple[str, float]]:
        """Entries sorted by exp, then jti (deterministic output)."""
        return sorted(self.entries.items(), key=lambda item: (item[1], item[0]))

    def to_configmap_data(self, now: float) -> dict[str, str]:
        """The published form: ``{"revocations.json": {"revoked": [{jti, exp}...], "updatedAt"}}``.

        Entries sorted by exp; expired ones (``exp + grace <= now``) left out, every live one
        written, whatever ``max_entries`` says. Raises :class:`RevocationListTooLarge` if the
        result would not fit in a ConfigMap: never truncate, a dropped entry re-enables a token.
        """
        live = [(jti, exp) for jti, exp in self._ordered() if exp + self.grace > now]
        document: dict[str, Any] = {
            "revoked": [{"jti": jti, "exp": _json_number(exp)} for jti, exp in live],
            "updatedAt": _rfc3339(now),
        }
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        if len(text.encode()) + len(CONFIGMAP_KEY) > CONFIGMAP_LIMIT_BYTES:
            raise RevocationListTooLarge(
                f"{len(live)} live revocations do not fit in one ConfigMap "
                f"({CONFIGMAP_LIMIT_BYTES} bytes); refusing to drop any"
            )
        return {CONFIGMAP_KEY: text}

    @classmethod
    def from_configmap_data(
        cls,
        data: Mapping[str, str],
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        grace: float = 0.0,
    ) -> RevocationList:
        """Parse :meth:`to_configmap_data` output; ValueError naming the problem if malformed.

        Nothing is pruned here (there is no ``now``); duplicates keep the later exp. A missing
        ConfigMap is the caller's business: treat it as an empty ``RevocationList()``.
        """
        raw = data.get(CONFIGMAP_KEY)
        if raw is None:
            raise ValueError(f"revocation ConfigMap has no {CONFIGMAP_KEY!r} entry")
        if not isinstance(raw, str):
            raise ValueError(f"revocation ConfigMap entry {CONFIGMAP_KEY!r} must be a string")
        try:
            document = json.loads(raw)
        except ValueError:
            raise ValueError(f"{CONFIGMAP_KEY} is not valid JSON") from None
        if not isinstance(document, dict):
            raise ValueError(f"{CONFIGMAP_KEY}: top level must be a JSON object")
        revoked = document.get("revoked")
        if not isinstance(revoked, list):
            raise ValueError(f"{CONFIGMAP_KEY}: 'revoked' must be a list")
        result = cls(max_entries=max_entries, grace=grace)
        for index, entry in enumerate(revoked):
            if not isinstance(entry, dict):
                raise ValueError(f"{CONFIGMAP_KEY}: revoked[{index}] must be an object")
            try:
                jti, exp = _check_entry(entry.get("jti"), entry.get("exp"))
            except ValueError as exc:
                raise ValueError(f"{CONFIGMAP_KEY}: revoked[{index}]: {exc}") from None
            result.add(jti, exp)
        return result
