"""Verifier library for tool owners: check a Taskwarden token offline, with cached JWKS and
revocation list, and check that it grants a required tool/action/resource.

    from taskwarden.verifier import Verifier
    v = Verifier(jwks="https://taskwarden.taskwarden-system.svc/.well-known/jwks.json",
                 revocations="https://taskwarden.taskwarden-system.svc/revocations",
                 audience="https://api.github.com", ca_file="/etc/taskwarden/ca.crt")
    claims = v.verify(token)                      # raises tokens.TokenError
    claims.require("github", "comment", "repo:acme/widgets")   # raises ScopeError

Sources are URLs (https://, http:// for loopback) or local files (e.g. the mounted jwks.json
or a ConfigMap mounted as a volume). Fails closed: if the revocation list cannot be refreshed
for longer than `max_stale` seconds, every token is rejected.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskwarden import policy
from taskwarden.credentials import tokens

__all__ = ["Claims", "ScopeError", "TokenError", "Verifier"]
TokenError = tokens.TokenError


class ScopeError(PermissionError):
    """The token is valid but does not grant the required scope."""


@dataclass(frozen=True)
class ScopeGrant:
    tool: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]


@dataclass(frozen=True)
class Claims:
    subject: str
    audiences: tuple[str, ...]
    jti: str
    issued_at: int
    expires_at: int
    namespace: str
    task: str
    task_uid: str
    scopes: tuple[ScopeGrant, ...]
    data_class: str
    intent: str
    pod_name: str | None
    pod_uid: str | None
    actor_chain: tuple[str, ...]
    """SPIFFE IDs of the delegating agents, nearest first (RFC 8693 `act`)."""
    raw: Mapping[str, Any] = field(repr=False)

    def allows(self, tool: str, action: str, resource: str) -> bool:
        """True if a scope covers tool:action:resource (resources in the token may be globs)."""
        return any(
            s.tool == tool
            and action in s.actions
            and any(policy.glob_match(pattern, resource) for pattern in s.resources)
            for s in self.scopes
        )

    def require(self, tool: str, action: str, resource: str) -> None:
        if not self.allows(tool, action, resource):
            raise ScopeError(
                f"token {self.jti} of task {self.namespace}/{self.task} does not grant "
                f"{tool}:{action}:{resource}"
            )


def claims_from(raw: Mapping[str, Any]) -> Claims:
    task = raw.get(tokens.TASK_CLAIM) or {}
    pod = raw.get("pod") or {}
    chain = []
    act = raw.get("act")
    while isinstance(act, Mapping):
        chain.append(str(act.get("sub", "")))
        act = act.get("act")
    aud = raw.get("aud")
    return Claims(
        subject=str(raw["sub"]),
        audiences=tuple([aud] if isinstance(aud, str) else aud or []),
        jti=str(raw["jti"]),
        issued_at=int(raw["iat"]),
        expires_at=int(raw["exp"]),
        namespace=str(task.get("namespace", "")),
        task=str(task.get("name", "")),
        task_uid=str(task.get("uid", "")),
        scopes=tuple(
            ScopeGrant(s["tool"], tuple(s["actions"]), tuple(s["resources"]))
            for s in raw.get("scopes") or []
        ),
        data_class=str(raw.get("data_class", "")),
        intent=str(raw.get("intent", "")),
        pod_name=pod.get("name"),
        pod_uid=pod.get("uid"),
        actor_chain=tuple(chain),
        raw=raw,
    )


class _Cached:
    def __init__(
        self,
        source: str | Path,
        ttl: float,
        ctx: ssl.SSLContext | None,
        clock: Callable[[], float],
        parse: Callable[[bytes], Any],
    ) -> None:
        self.source, self.ttl, self.ctx, self.clock, self.parse = source, ttl, ctx, clock, parse
        self.value: Any = None
        self.fetched_at = float("-inf")
        self.lock = threading.Lock()

    def get(self, force: bool = False) -> Any:
        with self.lock:
            now = self.clock()
            if force or self.value is None or now - self.fetched_at >= self.ttl:
                try:
                    self.value = self.parse(read_source(self.source, self.ctx))
                    self.fetched_at = now
                except (OSError, ValueError):
                    if self.value is None:
                        raise
            return self.value


def read_source(source: str | Path, ctx: ssl.SSLContext | None = None) -> bytes:
    """The bytes of an https:// or http:// URL, or of a local file."""
    src = str(source)
    if src.startswith(("https://", "http://")):
        with urllib.request.urlopen(src, context=ctx, timeout=5) as r:  # noqa: S310
            return bytes(r.read())
    return Path(src).read_bytes()


def parse_revocations(data: bytes) -> frozenset[str]:
    """Revoked jtis from a revocation list, or from the data of its ConfigMap."""
    doc = json.loads(data)
    if isinstance(doc, Mapping) and "revocations.json" in doc:  # a ConfigMap's data
        doc = json.loads(doc["revocations.json"])
    return frozenset(str(e["jti"]) for e in doc.get("revoked", []))


def parse_jwks(data: bytes) -> dict[str, Any]:
    """A JWK Set, given as itself or as the data of the taskwarden-jwks ConfigMap."""
    doc = json.loads(data)
    if isinstance(doc, Mapping) and "jwks.json" in doc:
        doc = json.loads(doc["jwks.json"])
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("JWKS must be an object with a keys list")
    return doc


class Verifier:
    def __init__(
        self,
        *,
        jwks: str | Path,
        audience: str,
        revocations: str | Path | None = None,
        issuer: str | None = None,
        ca_file: str | None = None,
        cache_ttl: float = 60.0,
        max_stale: float = 300.0,
        leeway: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._jwks = _Cached(jwks, cache_ttl, ctx, clock, parse_jwks)
        self._revoked = (
            _Cached(revocations, cache_ttl, ctx, clock, parse_revocations) if revocations else None
        )
        self.audience, self.issuer, self.max_stale = audience, issuer, max_stale
        self.leeway, self.clock = leeway, clock
        self._refetched_for: set[str] = set()

    def _revoked_set(self) -> frozenset[str]:
        if self._revoked is None:
            return frozenset()
        try:
            value: frozenset[str] = self._revoked.get()
        except (OSError, ValueError) as e:
            raise TokenError(tokens.Reason.REVOKED, f"revocation list unavailable: {e}") from None
        if self.clock() - self._revoked.fetched_at > self.max_stale:
            raise TokenError(
                tokens.Reason.REVOKED,
                f"revocation list older than {self.max_stale:.0f}s; failing closed",
            )
        return value

    def verify(self, token: str) -> Claims:
        revoked = self._revoked_set()
        jwks = self._jwks.get()
        try:
            raw = tokens.verify(
                token,
                jwks,
                now=self.clock(),
                audience=self.audience,
                issuer=self.issuer,
                revoked=revoked,
                leeway=self.leeway,
            )
        except TokenError as e:
            kid = None
            if e.reason == tokens.Reason.UNKNOWN_KEY:
                try:
                    kid = tokens.unverified_header(token).get("kid")
                except Exception:
                    kid = None
            if not kid or kid in self._refetched_for:
                raise
            # A key we have not seen: the JWKS may have rotated. Refetch once per kid.
            self._refetched_for.add(str(kid))
            raw = tokens.verify(
                token,
                self._jwks.get(force=True),
                now=self.clock(),
                audience=self.audience,
                issuer=self.issuer,
                revoked=revoked,
                leeway=self.leeway,
            )
        return claims_from(raw)
