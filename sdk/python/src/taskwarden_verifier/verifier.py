"""Check a Taskwarden token offline, with cached JWKS and revocation list, and check that it
grants a required tool/action/resource.

    from taskwarden_verifier import Verifier
    v = Verifier(jwks="https://taskwarden.taskwarden-system.svc/.well-known/jwks.json",
                 revocations="https://taskwarden.taskwarden-system.svc/revocations",
                 audience="https://api.github.com", ca_file="/etc/taskwarden/ca.crt")
    claims = v.verify(token)                      # raises TokenError
    claims.require("github", "comment", "repo:acme/widgets")   # raises ScopeError

(The operator re-exports this module as ``taskwarden.verifier``.) For asyncio services,
``taskwarden_verifier.aio.AsyncVerifier`` takes the same arguments and makes the same
decisions: both are a :class:`Rules` plus a way to fetch.

Sources are https:// URLs, http:// URLs of a loopback host only (127.0.0.0/8, ::1,
localhost; never through a proxy, never redirected), or local files (the mounted jwks.json,
or a ConfigMap mounted as a volume). Anything else is refused when the Verifier is built.

Fails closed:
- a revocation document it does not recognise is unavailable, never "nothing revoked";
- the list's age is its own ``updatedAt`` (written by the operator), not the time it was
  fetched, so a file or a cached copy nobody refreshes goes stale; past ``max_stale`` every
  token is refused with :class:`SourceUnavailable`;
- any malformed token, whatever its header or claims, raises :class:`TokenError`.

An unknown ``kid`` forces at most one JWKS refetch per ``refetch_cooldown`` seconds (made-up
kids cannot turn the verifier into a fetch amplifier), and the verifier keeps no per-kid state.

Reading, recognising and caching the documents lives in ``sources``; its public names are
re-exported here.
"""

from __future__ import annotations

import math
import ssl
import threading
import time
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from taskwarden_verifier import contract, globs, sources, tokens
from taskwarden_verifier.sources import (
    MAX_DOCUMENT_BYTES,
    RevocationSnapshot,
    check_source,
    parse_jwks,
    parse_revocations,
    read_source,
)

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "Claims",
    "RevocationSnapshot",
    "Rules",
    "ScopeError",
    "SourceUnavailable",
    "TokenError",
    "Verifier",
    "check",
    "check_source",
    "claims_from",
    "parse_jwks",
    "parse_revocations",
    "read_source",
]
TokenError = tokens.TokenError

UNAVAILABLE_REASON: Final = tokens.Reason.UNAVAILABLE
"""The reason carried by SourceUnavailable for the revocation list. The token is refused as
if it were revoked (fail closed); the exception class and message say the list was
UNAVAILABLE. Switch to a dedicated tokens.Reason once credentials/tokens.py has one."""


class ScopeError(PermissionError):
    """The token is valid but does not grant the required scope."""


class SourceUnavailable(TokenError):
    """The token was refused because the JWKS or the revocation list could not be used:
    unreadable, unrecognised or stale. Not a verdict on the token: answer 503, not 401."""

    def __init__(self, source: str, reason: tokens.Reason, message: str) -> None:
        super().__init__(reason, message)
        self.source: str = source


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
            and any(globs.glob_match(pattern, resource) for pattern in s.resources)
            for s in self.scopes
        )

    def require(self, tool: str, action: str, resource: str) -> None:
        if not self.allows(tool, action, resource):
            raise ScopeError(
                f"token {self.jti} of task {self.namespace}/{self.task} does not grant "
                f"{tool}:{action}:{resource}"
            )


def _malformed(message: str) -> TokenError:
    return TokenError(tokens.Reason.MALFORMED, message)


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _malformed(f"{what} must be a list of strings")
    return tuple(value)


def _scope(value: object, index: int) -> ScopeGrant:
    if not isinstance(value, dict) or not isinstance(value.get("tool"), str):
        raise _malformed(f"scopes[{index}] must be an object with a string tool")
    return ScopeGrant(
        value["tool"],
        _strings(value.get("actions"), f"scopes[{index}].actions"),
        _strings(value.get("resources"), f"scopes[{index}].resources"),
    )


def _whole_seconds(raw: Mapping[str, Any], name: str) -> int:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(f"claim {name!r} must be a number")
    try:
        return int(value)  # a float inf/nan raises here; huge ints are fine in Python
    except (OverflowError, ValueError):
        raise _malformed(f"claim {name!r} must be a finite number") from None


def claims_from(raw: Mapping[str, Any]) -> Claims:
    """Claims of a token that ``tokens.verify`` accepted; TokenError (Malformed) if any member
    has the wrong shape, so that tool code never meets a KeyError or TypeError."""
    task = raw.get(contract.TASK_CLAIM)
    if not isinstance(task, dict):
        raise _malformed(f"claim {contract.TASK_CLAIM!r} must be an object")
    pod = raw.get("pod")
    if pod is None:
        pod = {}
    if not isinstance(pod, dict) or not all(
        isinstance(pod.get(k), str | None) for k in ("name", "uid")
    ):
        raise _malformed("claim 'pod' must be an object with string name and uid")
    chain: list[str] = []
    act = raw.get("act")
    while act is not None:
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str):
            raise _malformed("claim 'act' must be a chain of objects with a string sub")
        if len(chain) >= contract.MAX_ACT_DEPTH:
            raise _malformed(f"claim 'act' is deeper than {contract.MAX_ACT_DEPTH}")
        chain.append(act["sub"])
        act = act.get("act")
    aud = raw.get("aud")
    audiences = (aud,) if isinstance(aud, str) else _strings(aud, "claim 'aud'")
    scopes = raw.get("scopes")
    if not isinstance(scopes, list):
        raise _malformed("claim 'scopes' must be a list")
    for name in ("sub", "jti"):
        if not isinstance(raw.get(name), str):
            raise _malformed(f"claim {name!r} must be a string")
    return Claims(
        subject=raw["sub"],
        audiences=audiences,
        jti=raw["jti"],
        issued_at=_whole_seconds(raw, "iat"),
        expires_at=_whole_seconds(raw, "exp"),
        namespace=str(task.get("namespace", "")),
        task=str(task.get("name", "")),
        task_uid=str(task.get("uid", "")),
        scopes=tuple(_scope(s, i) for i, s in enumerate(scopes)),
        data_class=str(raw.get("data_class", "")),
        intent=str(raw.get("intent", "")),
        pod_name=pod.get("name"),
        pod_uid=pod.get("uid"),
        actor_chain=tuple(chain),
        raw=raw,
    )


def check(
    token: str,
    jwks: Mapping[str, Any],
    *,
    now: float,
    audience: str | None,
    issuer: str | None,
    revoked: Container[str],
    leeway: float = 0.0,
) -> dict[str, Any]:
    """``tokens.verify`` with its arguments, but whatever the token holds (a kid that is a
    list, an exp too large for a float), nothing but TokenError comes out."""
    try:
        return tokens.verify(
            token,
            jwks,
            now=now,
            audience=audience,
            issuer=issuer,
            revoked=revoked,
            leeway=leeway,
        )
    except TokenError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError, KeyError) as e:
        raise _malformed(f"token could not be checked ({type(e).__name__})") from None


class Rules:
    """What the sync and async verifiers decide alike, with no I/O: the settings, when the
    revocation list is too old to use, when an unknown ``kid`` may force a JWKS refetch (at
    most once per ``refetch_cooldown``, across threads and tasks), and the token check."""

    def __init__(
        self,
        *,
        audience: str,
        issuer: str | None = None,
        ca_file: str | None = None,
        cache_ttl: float = 60.0,
        max_stale: float = 300.0,
        leeway: float = 5.0,
        refetch_cooldown: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``max_stale``: refuse every token when the revocation list's ``updatedAt`` is more
        than this many seconds away from now. ``refetch_cooldown``: at most one forced JWKS
        refetch (for an unknown ``kid``) per this many seconds. ValueError for a
        negative/non-finite number."""
        for name, number in (
            ("cache_ttl", cache_ttl),
            ("max_stale", max_stale),
            ("leeway", leeway),
            ("refetch_cooldown", refetch_cooldown),
        ):
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0")
        self.ssl_context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.audience, self.issuer, self.max_stale = audience, issuer, max_stale
        self.leeway, self.clock, self.refetch_cooldown = leeway, clock, refetch_cooldown
        self.cache_ttl = cache_ttl
        self._refetch_lock = threading.Lock()
        self._last_refetch = float("-inf")

    def fresh_revocations(self, snapshot: RevocationSnapshot) -> RevocationSnapshot:
        """``snapshot``, or SourceUnavailable when its ``updatedAt`` is past ``max_stale``."""
        age = self.clock() - snapshot.updated_at
        if abs(age) > self.max_stale:
            raise SourceUnavailable(
                "revocations",
                UNAVAILABLE_REASON,
                f"revocation list UNAVAILABLE: its updatedAt is {age:.0f}s from now, more than "
                f"max_stale {self.max_stale:.0f}s; failing closed",
            )
        return snapshot

    @staticmethod
    def unavailable(source: str, error: BaseException) -> SourceUnavailable:
        """The refusal for a JWKS or revocation list that could not be read or recognised."""
        if source == "revocations":
            what = f"revocation list UNAVAILABLE ({type(error).__name__}: {error}); failing closed"
        else:
            what = f"JWKS UNAVAILABLE ({type(error).__name__}: {error})"
        return SourceUnavailable(source, UNAVAILABLE_REASON, what)

    def _may_refetch(self) -> bool:
        """True at most once per refetch_cooldown, across threads."""
        with self._refetch_lock:
            now = self.clock()
            if now - self._last_refetch < self.refetch_cooldown:
                return False
            self._last_refetch = now
            return True

    def should_refetch(self, error: TokenError, token: str, keys: Mapping[str, Any] | None) -> bool:
        """True if ``error`` is an unknown kid that the cached ``keys`` really lack (a
        non-empty string, so a rotated JWKS may have it) and the cooldown allows a refetch."""
        if isinstance(error, SourceUnavailable) or error.reason != tokens.Reason.UNKNOWN_KEY:
            return False
        kid = tokens.unverified_header(token).get("kid")
        if not isinstance(kid, str) or not kid:
            return False
        if keys is not None and any(
            isinstance(jwk, dict) and jwk.get("kid") == kid for jwk in keys.get("keys", [])
        ):
            return False
        return self._may_refetch()

    def check(self, token: str, jwks: Mapping[str, Any], revoked: Any) -> Claims:
        return claims_from(
            check(
                token,
                jwks,
                now=self.clock(),
                audience=self.audience,
                issuer=self.issuer,
                revoked=revoked,
                leeway=self.leeway,
            )
        )


class Verifier(Rules):
    def __init__(
        self,
        *,
        jwks: str | Path,
        audience: str,
        revocations: str | Path | None = None,
        **settings: Any,
    ) -> None:
        """``settings`` are those of :class:`Rules` (issuer, ca_file, cache_ttl, max_stale,
        leeway, refetch_cooldown, clock). ValueError for a source that :func:`check_source`
        refuses or a negative/non-finite number."""
        super().__init__(audience=audience, **settings)
        ctx, ttl, clock = self.ssl_context, self.cache_ttl, self.clock
        self._jwks = sources.Cached(check_source(jwks), ttl, ctx, clock, parse_jwks)
        self._revoked = (
            sources.Cached(check_source(revocations), ttl, ctx, clock, parse_revocations)
            if revocations is not None
            else None
        )

    def _revoked_set(self) -> RevocationSnapshot | frozenset[str]:
        if self._revoked is None:
            return frozenset()
        try:
            return self.fresh_revocations(self._revoked.get())
        except sources.FETCH_ERRORS as e:
            raise self.unavailable("revocations", e) from None

    def _keys(self, force: bool = False) -> dict[str, Any]:
        try:
            return self._jwks.get(force=force)
        except sources.FETCH_ERRORS as e:
            raise self.unavailable("jwks", e) from None

    def verify(self, token: str) -> Claims:
        """The claims of ``token``; TokenError (SourceUnavailable when the JWKS or revocation
        list cannot be used) for anything that must not be accepted."""
        revoked = self._revoked_set()
        try:
            return self.check(token, self._keys(), revoked)
        except TokenError as e:
            # A kid we do not know: the JWKS may have rotated. Refetch, rate-limited.
            if not self.should_refetch(e, token, self._jwks.value):
                raise
        return self.check(token, self._keys(force=True), revoked)
