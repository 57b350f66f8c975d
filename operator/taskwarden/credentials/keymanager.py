"""Key managers: where signing keys live, seen by callers only as `signing.Signer`s.

Following SPIRE's key manager plugin, a backend keeps the private keys and hands out a signer
for the key that signs now, plus the JWKS verifiers need. Backends are interchangeable:

- `MemoryKeyManager` (here): keys in process memory, rotated on demand. For unit tests, tools
  and any process that need not share keys.
- `taskwarden.publishing.KeyManager`: the same schedule, with the keys kept in a Secret so
  every replica signs with the same key, and the JWKS published in a ConfigMap.

Both rotate with `keys.KeySet.rotate` (prepare, publish, activate, retire) from one
`config.KeySettings`. Pure: no kopf, no Kubernetes client; the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from taskwarden import config
from taskwarden.credentials import keys as keys_mod
from taskwarden.credentials import signing


class KeyManager(Protocol):
    """What an issuer needs from a key backend: a signer for now, and the published keys."""

    def signer(self) -> signing.Signer:
        """The signer of the key that signs now."""
        ...

    def jwks(self) -> dict[str, Any]:
        """The JWK Set of every published key (next, signing and retired)."""
        ...


class MemoryKeyManager:
    """Keys in memory on the `keys.KeySet` schedule; the first call makes the first key."""

    def __init__(
        self,
        settings: config.KeySettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or config.KeySettings()
        self.clock = clock
        self._keyset = keys_mod.KeySet(())

    def rotate(self) -> bool:
        """Advance the schedule to the clock's now; True if a key was added or dropped."""
        self._keyset, changed = self._keyset.rotate(
            self.clock(),
            rotation_period=self.settings.rotation_period,
            publish_delay=self.settings.publish_delay,
            retain=self.settings.retain,
            alg=self.settings.alg,
        )
        return changed

    def kids(self) -> tuple[str, ...]:
        """The IDs of the keys held, oldest first."""
        return tuple(key.kid for key in self._keyset.keys)

    def signer(self) -> signing.Signer:
        if not self._keyset.keys:
            self.rotate()
        key = self._keyset.active(self.clock(), self.settings.publish_delay)
        return signing.KeySigner(key, self.jwks())

    def jwks(self) -> dict[str, Any]:
        return dict(self._keyset.jwks())
