"""Shards, their desired owners, and what a replica does with each Lease: pure decisions.

Called by sharding/leases.py each tick (and by tests). No Kubernetes client, no clock: the
caller passes `now` (monotonic seconds, this process's own) and what it has observed.

- A task's shard is a stable hash of its NAMESPACE: a namespace's tasks, their pods, policies,
  approvals and delegation parents (always in the same namespace) then live on one replica.
- The desired owner of a shard is the rendezvous (highest random weight) winner over the live
  members: when a member joins or leaves only the shards it wins or held move, about 1/N each.
- Leases are judged expired the way client-go's leader election does: by how long THIS
  process has seen the same resourceVersion, never by comparing the holder's renewTime with
  our clock (replicas' clocks may disagree; their rates do not, enough).
- Fencing: a replica acts on a shard only until `renew_start + renew_deadline` of its last
  successful renewal; another replica can take the Lease only after seeing it unchanged for
  `lease_duration` > `renew_deadline`, that is after the holder has stopped acting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

KEYS_SLOT: Final = "keys"
"""The slot whose Lease makes its holder the single writer of signing-key rotation."""

# What a replica does with one slot's Lease in one tick.
ACQUIRE: Final = "acquire"
"""We are the desired owner and the Lease is free (no holder, released, or expired)."""
RENEW: Final = "renew"
"""We hold it, we are still its desired owner (or no one else is live), and renewal is due."""
HOLD: Final = "hold"
"""We hold it and renewed recently: nothing to write."""
RELEASE: Final = "release"
"""We hold it but another live member is its desired owner: stop acting, then release."""
WAIT: Final = "wait"
"""Not ours to take now: held by a live holder, or another member is the desired owner."""


def shard_of(namespace: str, shards: int) -> int:
    """The shard of every task in `namespace` (0 .. shards-1); stable across processes."""
    digest = hashlib.sha256(namespace.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def _weight(member: str, slot: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{member}\x00{slot}".encode()).digest()[:8], "big")


def owner(slot: str, members: Iterable[str]) -> str | None:
    """The desired owner of `slot` among `members` (rendezvous hashing); None when none."""
    best: tuple[int, str] | None = None
    for m in members:
        w = (_weight(m, slot), m)
        if best is None or w > best:
            best = w
    return best[1] if best else None


def assignment(members: Iterable[str], slots: Iterable[str]) -> dict[str, str | None]:
    ms = sorted(set(members))
    return {s: owner(s, ms) for s in slots}


def slot_name(shard: int) -> str:
    return f"{shard:02d}"


@dataclass(frozen=True)
class Observed:
    """One Lease as this process has seen it."""

    holder: str
    """spec.holderIdentity; "" when released or never held."""
    resource_version: str
    duration: float
    """spec.leaseDurationSeconds."""
    since: float
    """Our monotonic time when we first saw this resourceVersion."""


def observe(prev: Observed | None, holder: str, rv: str, duration: float, now: float) -> Observed:
    """Fold a freshly read Lease into what we knew: `since` moves only when the Lease changed."""
    if prev is not None and prev.resource_version == rv:
        return prev
    return Observed(holder=holder, resource_version=rv, duration=duration, since=now)


def expired(obs: Observed, now: float) -> bool:
    """Free to take: no holder, or unchanged for longer than its lease duration."""
    return not obs.holder or now - obs.since > obs.duration


def acting(held_until: float | None, now: float) -> bool:
    """Whether a replica may act on a slot it renewed with deadline `held_until`."""
    return held_until is not None and now < held_until


def decide(
    *,
    me: str,
    desired: str | None,
    obs: Observed | None,
    held_until: float | None,
    last_renew: float | None,
    renew_every: float,
    now: float,
) -> str:
    """What to do with one slot's Lease this tick. `obs` None: the Lease does not exist yet."""
    holding = acting(held_until, now) and obs is not None and obs.holder == me
    if holding:
        if desired is not None and desired != me:
            return RELEASE
        if last_renew is None or now - last_renew >= renew_every:
            return RENEW
        return HOLD
    if desired != me:
        return WAIT
    if obs is None or obs.holder == me or expired(obs, now):
        # Ours by the ring and free (or our own, from before a restart or a missed renewal:
        # retaking it is a conditioned write like any acquisition).
        return ACQUIRE
    return WAIT


def live_members(member_leases: dict[str, Observed], me: str, now: float) -> set[str]:
    """Holders of unexpired membership Leases, and always ourselves."""
    live = {o.holder for o in member_leases.values() if o.holder and not expired(o, now)}
    live.add(me)
    return live
