"""Operator signing keys: generation, RFC 7638 key IDs, JWKS, rotation, Secret (de)serialisation.

What for: every Taskwarden credential is a JWS signed with an operator key. This module holds
those keys as plain values and decides, for a given ``now``, which key signs, which keys are
published, and when a new key is prepared or an old one is dropped.

Who calls it: the key-management service (loads the :class:`KeySet` from the Secret in the
operator namespace, calls :meth:`KeySet.rotate` on a timer, writes the Secret back and publishes
:meth:`KeySet.jwks` in the ``taskwarden-jwks`` ConfigMap and at ``/.well-known/jwks.json``), and
``credentials.keymanager`` (hands out a signer for :meth:`KeySet.active`).

Pure: no kopf, no Kubernetes client, no clock. Time comes in as ``now`` (unix seconds).

Rotation follows SPIRE's prepare-then-activate scheme. With rotation period P, publish delay D
and retention R, a key created at ``t0`` lives like this::

    t0              t0+P-D             t0+P                        t0+P+R
    |-- k1 signs ---------------------->|-- k1 retired, published -->| k1 dropped
                    |-- k2 published -->|-- k2 signs ----------------------------> ...

* A key stops signing when it is P old; its successor is created at P - D and signs from P.
  So in steady state each key signs for P - D seconds. D <= P / 2 is required, so the current
  key always signs before the next one is prepared and at most one key waits to sign.
* The next key is published D seconds before it signs, so verifiers that cache the JWKS (and
  kubelet, which takes about a minute to refresh a mounted ConfigMap) know it before they see a
  token signed by it.
* A retired key stays published for R seconds after it stopped signing, so every token it
  signed still verifies until it expires. R must be >= the longest credential TTL plus the
  largest verifier leeway.
* The very first key signs at once: there is nothing better to sign with.

The private keys are held in memory as PKCS#8 PEM; :class:`SigningKey` keeps them out of its
``repr`` and no error message in this module contains key material.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from taskwarden_verifier import contract

ES256: Final = contract.ES256
EDDSA: Final = contract.EDDSA
SUPPORTED_ALGORITHMS: Final[frozenset[str]] = contract.SUPPORTED_ALGORITHMS
DEFAULT_ALGORITHM: Final = ES256

DEFAULT_ROTATION_PERIOD: Final[float] = 24 * 3600.0
"""Age (seconds) at which a key stops signing: 24 h. Its successor is created publish_delay
earlier, so in steady state a new key appears, and each key signs, every rotation_period -
publish_delay (23 h with the defaults). Short enough to bound an undetected key leak to about a
day of tokens, long enough that the JWKS stays tiny (two or three keys)."""

DEFAULT_PUBLISH_DELAY: Final[float] = 3600.0
"""Seconds a new key is published before it signs (1 h). Covers kubelet's ConfigMap sync (about
a minute) and verifiers that re-fetch ``/.well-known/jwks.json`` hourly. Costs nothing: the key
just sits in the JWKS a little longer."""

DEFAULT_RETAIN: Final[float] = 24 * 3600.0
"""Seconds a retired key stays published (24 h). Must be >= the longest credential TTL any
policy allows plus verifier leeway; 24 h covers any sane ``credentialTTL`` (default <= 10 min)
with a wide margin."""

SECRET_KEY: Final = "keys.json"
"""The single data key of the signing-key Secret."""

_FORMAT_VERSION: Final = 1

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = contract.PublicKey

b64url_encode = contract.b64url_encode
b64url_decode = contract.b64url_decode


def _public_members(public_key: PublicKey) -> dict[str, str]:
    """The RFC 7638 required members of a public key's JWK (kty, crv and coordinates)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        numbers = public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(numbers.x.to_bytes(32, "big")),
            "y": b64url_encode(numbers.y.to_bytes(32, "big")),
        }
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of an EC or OKP public JWK, base64url: our ``kid``.

    The thumbprint depends only on the public key, so a key's ID is stable across restarts,
    replicas and Secret round trips, and a kid that does not match its key is detectable.
    """
    kty = jwk.get("kty")
    if kty == "EC":
        members: tuple[str, ...] = ("crv", "kty", "x", "y")
    elif kty == "OKP":
        members = ("crv", "kty", "x")
    else:
        raise ValueError(f"unsupported JWK key type {kty!r} (expected EC or OKP)")
    required = {name: jwk.get(name) for name in members}
    if not all(isinstance(value, str) for value in required.values()):
        raise ValueError(f"JWK of type {kty} needs string members {', '.join(members)}")
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def _load_private_key(pem: bytes, alg: str) -> PrivateKey:
    """Parse a PKCS#8 PEM private key and check that it fits ``alg``; never echo the PEM."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("private key is not an unencrypted PEM private key") from None
    if alg == ES256:
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        raise ValueError("alg ES256 needs an EC P-256 private key")
    if alg == EDDSA:
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key
        raise ValueError("alg EdDSA needs an Ed25519 private key")
    raise ValueError(
        f"unsupported signing algorithm {alg!r}; use one of {sorted(SUPPORTED_ALGORITHMS)}"
    )


@dataclass(frozen=True)
class SigningKey:
    """One operator signing key: its RFC 7638 ``kid``, JWS ``alg``, PKCS#8 PEM and birth time.

    Construction checks that the PEM parses, fits ``alg`` and that ``kid`` is its thumbprint,
    so any SigningKey in hand is consistent. ``private_pem`` is left out of ``repr``.
    """

    kid: str
    alg: str
    private_pem: bytes = field(repr=False)
    created_at: float
    _key: PrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.alg not in SUPPORTED_ALGORITHMS:
            raise ValueError(
                f"unsupported signing algorithm {self.alg!r}; "
                f"use one of {sorted(SUPPORTED_ALGORITHMS)}"
            )
        if isinstance(self.created_at, bool) or not isinstance(self.created_at, int | float):
            raise ValueError("created_at must be a number of unix seconds")
        if not math.isfinite(self.created_at):
            raise ValueError("created_at must be finite")
        key = _load_private_key(self.private_pem, self.alg)
        if jwk_thumbprint(_public_members(key.public_key())) != self.kid:
            raise ValueError(f"kid {self.kid!r} is not the RFC 7638 thumbprint of its key")
        object.__setattr__(self, "_key", key)

    @property
    def private_key(self) -> PrivateKey:
        """The ``cryptography`` private key object, for ``jwt.encode``."""
        return self._key

    @property
    def public_key(self) -> PublicKey:
        """The ``cryptography`` public key object."""
        return self._key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public JWK as published in the JWKS: kty/crv/x(/y), kid, alg, use "sig"."""
        return {**_public_members(self.public_key), "kid": self.kid, "alg": self.alg, "use": "sig"}


def generate_key(now: float, alg: str = DEFAULT_ALGORITHM) -> SigningKey:
    """Create a fresh key (ES256 on P-256 by default, or EdDSA on Ed25519) born at ``now``.

    Called by :meth:`KeySet.rotate`; tests call it directly.
    """
    private: PrivateKey
    if alg == ES256:
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == EDDSA:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(
            f"unsupported signing algorithm {alg!r}; use one of {sorted(SUPPORTED_ALGORITHMS)}"
        )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    kid = jwk_thumbprint(_public_members(private.public_key()))
    return SigningKey(kid=kid, alg=alg, private_pem=pem, created_at=float(now))


def _check_schedule(rotation_period: float, publish_delay: float, retain: float) -> None:
    for name, value in (
        ("rotation_period", rotation_period),
        ("publish_delay", publish_delay),
        ("retain", retain),
    ):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    if publish_delay > rotation_period / 2:
        # Otherwise the next key would be prepared before the current one signs, and keys
        # waiting for activation would pile up in the JWKS.
        raise ValueError(
            f"publish_delay ({publish_delay}s) must be at most half of "
            f"rotation_period ({rotation_period}s)"
        )
    if rotation_period <= 0:
        raise ValueError("rotation_period must be > 0")


@dataclass(frozen=True)
class KeySet:
    """All operator keys, oldest first: the signing one, a published next one, retired ones.

    Immutable; :meth:`rotate` returns a new set. Keys are kept sorted by ``created_at`` (then
    ``kid``) and kids must be unique, whatever order they were given in.
    """

    keys: tuple[SigningKey, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.keys, key=lambda k: (k.created_at, k.kid)))
        kids = [k.kid for k in ordered]
        if len(set(kids)) != len(kids):
            raise ValueError("duplicate kid in key set")
        object.__setattr__(self, "keys", ordered)

    def get(self, kid: str) -> SigningKey | None:
        """The key with this kid, or None."""
        for key in self.keys:
            if key.kid == kid:
                return key
        return None

    def active(self, now: float, publish_delay: float = DEFAULT_PUBLISH_DELAY) -> SigningKey:
        """The key that signs at ``now``.

        That is the newest key published for at least ``publish_delay`` seconds, so verifiers
        have had time to fetch it; if none is (bootstrap), the oldest key. Raises ValueError on
        an empty set: call :meth:`rotate` first.
        """
        if not self.keys:
            raise ValueError("the key set is empty; call rotate() to create the first key")
        for key in reversed(self.keys):
            if now - key.created_at >= publish_delay:
                return key
        return self.keys[0]

    def retired_at(self, kid: str, publish_delay: float = DEFAULT_PUBLISH_DELAY) -> float | None:
        """When the key ``kid`` stops (or stopped) signing: its successor's activation time.

        None for the newest key (nothing replaces it yet) and for unknown kids.
        """
        for index, key in enumerate(self.keys[:-1]):
            if key.kid == kid:
                return self.keys[index + 1].created_at + publish_delay
        return None

    def rotate(
        self,
        now: float,
        *,
        rotation_period: float = DEFAULT_ROTATION_PERIOD,
        publish_delay: float = DEFAULT_PUBLISH_DELAY,
        retain: float = DEFAULT_RETAIN,
        alg: str | None = None,
    ) -> tuple[KeySet, bool]:
        """Advance the schedule to ``now``; return (new set, whether anything changed).

        * Empty set: generate the first key; it signs at once.
        * Newest key older than ``rotation_period - publish_delay``: add the next key. It is
          published now and signs ``publish_delay`` later, about ``rotation_period`` after its
          predecessor started.
        * Drop keys that stopped signing more than ``retain`` seconds ago (``retain`` must be
          >= the longest credential TTL so every token they signed verifies until it expires).

        ``alg`` picks the algorithm of a new key; default: the newest key's, else ES256.
        Called on a timer by the key-management service, which writes the Secret and the JWKS
        ConfigMap when ``changed`` is True. Safe to call as often as you like.
        """
        _check_schedule(rotation_period, publish_delay, retain)
        if not self.keys:
            return KeySet((generate_key(now, alg or DEFAULT_ALGORITHM),)), True
        keys = list(self.keys)
        changed = False
        newest = keys[-1]
        if now - newest.created_at >= rotation_period - publish_delay:
            keys.append(generate_key(now, alg or newest.alg))
            changed = True
        kept: list[SigningKey] = []
        for index, key in enumerate(keys):
            if index + 1 < len(keys):
                retired = keys[index + 1].created_at + publish_delay
                if now - retired > retain:
                    changed = True
                    continue
            kept.append(key)
        return KeySet(tuple(kept)), changed

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set of every key in the set (next, signing and retired), oldest first."""
        return {"keys": [key.public_jwk() for key in self.keys]}

    def to_secret_data(self) -> dict[str, str]:
        """Serialise for the signing-key Secret: ``{"keys.json": <JSON>}``, plain strings.

        The caller base64-encodes the values for ``Secret.data`` (or uses ``stringData``).
        :meth:`from_secret_data` restores an equal KeySet.
        """
        document = {
            "version": _FORMAT_VERSION,
            "keys": [
                {
                    "kid": key.kid,
                    "alg": key.alg,
                    "createdAt": key.created_at,
                    "privateKeyPem": key.private_pem.decode("ascii"),
                }
                for key in self.keys
            ],
        }
        return {SECRET_KEY: json.dumps(document, sort_keys=True, indent=1)}

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> KeySet:
        """Parse what :meth:`to_secret_data` wrote (values already base64-decoded to str).

        Raises ValueError naming what is wrong (never echoing key material) on a missing key,
        bad JSON, wrong types, an unparseable PEM, a kid that is not its key's thumbprint, an
        alg that does not fit the key, or duplicate kids. A missing Secret is the caller's
        business: treat it as ``KeySet()`` and rotate.
        """
        raw = data.get(SECRET_KEY)
        if raw is None:
            raise ValueError(f"signing-key Secret has no {SECRET_KEY!r} entry")
        if not isinstance(raw, str):
            raise ValueError(f"signing-key Secret entry {SECRET_KEY!r} must be a string")
        try:
            document = json.loads(raw)
        except ValueError:
            raise ValueError(f"signing-key Secret entry {SECRET_KEY!r} is not valid JSON") from None
        if not isinstance(document, dict):
            raise ValueError(f"{SECRET_KEY}: top level must be a JSON object")
        if document.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"{SECRET_KEY}: unsupported version {document.get('version')!r} "
                f"(expected {_FORMAT_VERSION})"
            )
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise ValueError(f"{SECRET_KEY}: 'keys' must be a list")
        keys: list[SigningKey] = []
        for index, entry in enumerate(entries):
            where = f"{SECRET_KEY}: keys[{index}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} must be an object")
            kid, alg = entry.get("kid"), entry.get("alg")
            created_at, pem = entry.get("createdAt"), entry.get("privateKeyPem")
            if not isinstance(kid, str) or not kid:
                raise ValueError(f"{where}.kid must be a non-empty string")
            if not isinstance(alg, str):
                raise ValueError(f"{where}.alg must be a string")
            if isinstance(created_at, bool) or not isinstance(created_at, int | float):
                raise ValueError(f"{where}.createdAt must be a number of unix seconds")
            if not isinstance(pem, str):
                raise ValueError(f"{where}.privateKeyPem must be a string")
            try:
                keys.append(
                    SigningKey(
                        kid=kid,
                        alg=alg,
                        private_pem=pem.encode("utf-8"),
                        created_at=float(created_at),
                    )
                )
            except ValueError as exc:
                raise ValueError(f"{where} (kid {kid!r}): {exc}") from None
        try:
            return cls(tuple(keys))
        except ValueError as exc:
            raise ValueError(f"{SECRET_KEY}: {exc}") from None
