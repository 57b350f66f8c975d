"""Publishes what verifiers need: signing keys (Secret), JWKS and the revocation list (ConfigMaps).

Called by the reconciler (sign through `KeyManager.signer()`, revoke a jti) and by the TLS server
(/.well-known/jwks.json, /revocations). Keys are created exactly once even when two operators
start together (create, and on conflict adopt the winner's); every write to a shared object is
a replace with the read resourceVersion, retried on conflict after merging.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from taskwarden import metrics
from taskwarden.config import KeySettings, LifecycleSettings
from taskwarden.credentials import keys as keymod
from taskwarden.credentials import revocation, signing
from taskwarden.credentials.revocation import RevocationList
from taskwarden.kube import ApiError, Kube

log = logging.getLogger(__name__)
KEYS_SECRET = "taskwarden-signing-keys"
JWKS_CONFIGMAP = "taskwarden-jwks"
REVOCATIONS_CONFIGMAP = "taskwarden-revocations"
LABELS = {"app.kubernetes.io/managed-by": "taskwarden"}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _unb64(data: dict[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}


class KeyManager:
    """The Secret backend of `credentials.keymanager.KeyManager`: every replica signs with the
    keys kept in Secret `taskwarden-signing-keys`, and the JWKS is published in a ConfigMap."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        settings: KeySettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube, self.namespace, self.settings, self.clock = kube, namespace, settings, clock
        self.keyset = keymod.KeySet(())
        self._rv: str | None = None
        self._lock = asyncio.Lock()

    def _secret_body(self, ks: keymod.KeySet) -> dict[str, Any]:
        body: dict[str, Any] = {
            "metadata": {"name": KEYS_SECRET, "namespace": self.namespace, "labels": LABELS},
            "type": "Opaque",
            "data": {k: _b64(v) for k, v in ks.to_secret_data().items()},
        }
        if self._rv:
            body["metadata"]["resourceVersion"] = self._rv
        return body

    async def load(self) -> bool:
        """Read the keys Secret; False when it does not exist yet."""
        secret = await self.kube.get_secret(self.namespace, KEYS_SECRET)
        if secret is None:
            return False
        self.keyset = keymod.KeySet.from_secret_data(_unb64(secret.get("data")))
        self._rv = secret["metadata"]["resourceVersion"]
        return True

    async def ensure(self) -> None:
        """Load, create if missing (once across racing replicas), rotate if due, publish JWKS."""
        async with self._lock:
            if not await self.load():
                ks, _ = keymod.KeySet(()).rotate(
                    self.clock(),
                    rotation_period=self.settings.rotation_period,
                    publish_delay=self.settings.publish_delay,
                    retain=self.settings.retain,
                    alg=self.settings.alg,
                )
                self._rv = None
                try:
                    created = await self.kube.create_secret(self.namespace, self._secret_body(ks))
                    self.keyset, self._rv = ks, created["metadata"]["resourceVersion"]
                    log.info("created signing keys %s", [k.kid for k in ks.keys])
                except ApiError as e:
                    if e.status != 409:
                        raise
                    await self.load()  # another replica won the race: adopt its keys
            await self._rotate_locked()
            await self.publish_jwks()
            self.active()  # refreshes taskwarden_signing_key_age_seconds even when idle

    async def _rotate_locked(self) -> None:
        for _ in range(5):
            ks, changed = self.keyset.rotate(
                self.clock(),
                rotation_period=self.settings.rotation_period,
                publish_delay=self.settings.publish_delay,
                retain=self.settings.retain,
                alg=self.settings.alg,
            )
            if not changed:
                return
            try:
                res = await self.kube.replace_secret(
                    self.namespace, KEYS_SECRET, self._secret_body(ks)
                )
                self.keyset, self._rv = ks, res["metadata"]["resourceVersion"]
                log.info("signing keys rotated: %s", [k.kid for k in ks.keys])
                return
            except ApiError as e:
                if e.status != 409:
                    raise
                await self.load()

    def active(self) -> keymod.SigningKey:
        """The key that signs now. Prefer `signer()`, which keeps the private key inside."""
        key = self.keyset.active(self.clock(), self.settings.publish_delay)
        metrics.signing_key_age.set(max(0.0, self.clock() - key.created_at))
        return key

    def signer(self) -> signing.Signer:
        """The signer of the key that signs now, checking each token against the JWKS."""
        return signing.KeySigner(self.active(), self.jwks())

    def jwks(self) -> dict[str, Any]:
        return dict(self.keyset.jwks())

    async def publish_jwks(self) -> None:
        body: dict[str, Any] = {
            "metadata": {"name": JWKS_CONFIGMAP, "namespace": self.namespace, "labels": LABELS},
            "data": {"jwks.json": json.dumps(self.jwks(), sort_keys=True)},
        }
        cur = await self.kube.get_configmap(self.namespace, JWKS_CONFIGMAP)
        if cur is None:
            with contextlib.suppress(ApiError):
                await self.kube.create_configmap(self.namespace, body)
                return
            cur = await self.kube.get_configmap(self.namespace, JWKS_CONFIGMAP)
        if cur and (cur.get("data") or {}) != body["data"]:
            body["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
            with contextlib.suppress(ApiError):  # a racing replica wrote the same keys
                await self.kube.replace_configmap(self.namespace, JWKS_CONFIGMAP, body)

    async def emergency_rotate(self) -> None:
        """Replace every key by a new one that signs at once, and publish the JWKS without the
        old ones: every token signed so far then fails verification (unknown kid). Used when the
        revocation list overflows (see `credentials.revocation`)."""
        async with self._lock:
            for _ in range(10):
                ks = keymod.KeySet((keymod.generate_key(self.clock(), self.settings.alg),))
                try:
                    res = await self.kube.replace_secret(
                        self.namespace, KEYS_SECRET, self._secret_body(ks)
                    )
                except ApiError as e:
                    if e.status != 409:
                        raise
                    await self.load()
                    continue
                old = [k.kid for k in self.keyset.keys]
                self.keyset, self._rv = ks, res["metadata"]["resourceVersion"]
                log.warning(
                    "emergency rotation: retired keys %s, signing with %s", old, ks.keys[0].kid
                )
                break
            else:
                raise RuntimeError("emergency key rotation: too many write conflicts")
            await self.publish_jwks()

    async def run(self, writer: asyncio.Event | None = None) -> None:
        """Every check_interval: the single writer (standalone, or the holder of the keys
        Lease, sharding/) rotates and publishes; every other replica reloads what it wrote,
        so it signs with the key the writer made active."""
        while True:
            await asyncio.sleep(self.settings.check_interval)
            try:
                if writer is not None and not writer.is_set():
                    async with self._lock:
                        await self.load()
                    continue
                await self.ensure()
            except Exception:
                log.exception("signing key maintenance failed; will retry")


class RevocationPublisher:
    """The revocation list, coalescing bursts of revocations into one ConfigMap write."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        settings: LifecycleSettings,
        clock: Callable[[], float] = time.time,
        *,
        retire_keys: Callable[[], Awaitable[None]] | None = None,
        key_propagation: float = 0.0,
    ) -> None:
        """``retire_keys`` is `KeyManager.emergency_rotate`; ``key_propagation`` how long after
        it verifiers may still trust a retired key (the key publish delay). Without
        ``retire_keys`` an overflowing list is still published whole, never truncated."""
        self.kube, self.namespace, self.settings, self.clock = kube, namespace, settings, clock
        self.retire_keys, self.key_propagation = retire_keys, key_propagation
        self._draining: tuple[float, frozenset[str]] | None = None
        self.list = RevocationList(max_entries=settings.revocation_max_entries)
        metrics.revocation_list_capacity.set(settings.revocation_max_entries)
        self._rv: str | None = None
        self._dirty = asyncio.Event()
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []
        self._writing = 0
        """Waiters of the write in flight."""
        """(added at, resolved once the ConfigMap holds the jti) per revocation not yet written."""

    def __contains__(self, jti: object) -> bool:
        return jti in self.list

    @property
    def pending(self) -> bool:
        """Is a revoked jti waiting to be listed (added, its write not yet returned)?"""
        return bool(self._waiters) or self._writing > 0

    async def load(self) -> None:
        cm = await self.kube.get_configmap(self.namespace, REVOCATIONS_CONFIGMAP)
        if cm is None:
            self._rv = None
            return
        self.list.merge(RevocationList.from_configmap_data(cm.get("data") or {}))
        self._rv = cm["metadata"]["resourceVersion"]
        metrics.revocation_list_entries.set(len(self.list))

    def add(self, jti: str, exp: float) -> asyncio.Future[None]:
        """Record a revoked jti; the future resolves once the ConfigMap holds it."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if exp <= self.clock():
            fut.set_result(None)  # already expired: nothing to publish
            return fut
        self.list.add(jti, exp)
        metrics.revocation_list_entries.set(len(self.list))
        self._waiters.append((self.clock(), fut))
        self._dirty.set()
        return fut

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "metadata": {
                "name": REVOCATIONS_CONFIGMAP,
                "namespace": self.namespace,
                "labels": LABELS,
            },
            "data": self.list.to_configmap_data(self.clock()),
        }
        if self._rv:
            body["metadata"]["resourceVersion"] = self._rv
        return body

    async def flush(self) -> None:
        waiters, self._waiters = self._waiters, []
        self._writing = len(waiters)
        try:
            self.list.prune(self.clock())
            await self._bound()
            metrics.revocation_list_entries.set(len(self.list))
            for _ in range(10):
                try:
                    # urgent: a revocation is not done until listed; this write must not
                    # queue behind the Secret deletes and status writes of the same burst.
                    if self._rv is None:
                        res = await self.kube.create_configmap(
                            self.namespace, self._body(), urgent=True
                        )
                    else:
                        res = await self.kube.replace_configmap(
                            self.namespace, REVOCATIONS_CONFIGMAP, self._body(), urgent=True
                        )
                    self._rv = res["metadata"]["resourceVersion"]
                    break
                except ApiError as e:
                    if e.status != 409:
                        raise
                    await self.load()  # another writer: merge its entries, then retry
            else:
                raise RuntimeError("revocation list: too many write conflicts")
            metrics.revocation_list_entries.set(len(self.list))
            written = self.clock()
            for added, w in waiters:
                metrics.revocation_publish.observe(max(0.0, written - added))
                if not w.done():
                    w.set_result(None)
        except Exception as e:
            self._waiters.extend(waiters)  # retried on the next flush
            self._dirty.set()
            raise e
        finally:
            self._writing = 0

    async def _bound(self) -> None:
        """Over capacity: retire every signing key, then (once verifiers have dropped those
        keys) forget the entries listed before, whose tokens can no longer verify."""
        now = self.clock()
        if self._draining is not None and now >= self._draining[0]:
            dropped = self.list.forget(self._draining[1])
            metrics.revocation_entries_retired.inc(dropped)
            log.warning("forgot %d revocations of tokens signed by retired keys", dropped)
            self._draining = None
        action = revocation.overflow_action(
            len(self.list), self.list.max_entries, draining=self._draining is not None
        )
        if action == revocation.ROTATE and self.retire_keys is not None:
            covered = frozenset(self.list)  # every one was signed by a key retired just below
            await self.retire_keys()
            metrics.revocation_overflow_rotations.inc()
            self._draining = (self.clock() + self.key_propagation, covered)
            log.warning(
                "revocation list over capacity (%d > %d): signing keys retired; its %d "
                "entries go in %.0fs",
                len(covered),
                self.list.max_entries,
                len(covered),
                self.key_propagation,
            )

    def _next_wake(self) -> float:
        """Seconds until the loop must flush unprompted: the 30 s heartbeat, or sooner, the
        moment the entries of retired keys may be forgotten (else they would wait for the next
        revocation or heartbeat, keeping the list over its cap for up to 30 s more)."""
        wake = 30.0
        if self._draining is not None:
            wake = min(wake, max(0.0, self._draining[0] - self.clock()))
        return wake

    async def run(self) -> None:
        last_prune = self.clock()
        while True:
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout=self._next_wake())
            except TimeoutError:
                # Rewrite at least every 30 s, even when empty: updatedAt is the heartbeat by
                # which verifiers reading a file or ConfigMap judge staleness (max_stale).
                due = self._draining is not None and self.clock() >= self._draining[0]
                if self.clock() - last_prune < 30 and not due:
                    continue
            last_prune = self.clock()
            self._dirty.clear()
            await asyncio.sleep(self.settings.revocation_flush)
            try:
                await self.flush()
            except Exception:
                log.exception("publishing the revocation list failed; retrying")
                await asyncio.sleep(0.5)
