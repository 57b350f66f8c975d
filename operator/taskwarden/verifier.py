"""Verifier library for tool owners: check a Taskwarden token offline, with cached JWKS and
revocation list, and check that it grants a required tool/action/resource.

    from taskwarden.verifier import Verifier
    v = Verifier(jwks="https://taskwarden.taskwarden-system.svc/.well-known/jwks.json",
                 revocations="https://taskwarden.taskwarden-system.svc/revocations",
                 audience="https://api.github.com", ca_file="/etc/taskwarden/ca.crt")
    claims = v.verify(token)                      # raises tokens.TokenError
    claims.require("github", "comment", "repo:acme/widgets")   # raises ScopeError

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
"""

from __future__ import annotations

import ipaddress
import json
import math
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any, Final, Generic, TypeVar
from urllib.parse import urlsplit

from taskwarden import policy, timeutil
from taskwarden.credentials import tokens

__all__ = [
    "Claims",
    "RevocationSnapshot",
    "ScopeError",
    "SourceUnavailable",
    "TokenError",
    "Verifier",
]
TokenError = tokens.TokenError

MAX_DOCUMENT_BYTES: Final = 4 * 1024 * 1024
"""A JWKS or revocation list larger than this is refused (the ConfigMap limit is 1 MiB)."""
FETCH_TIMEOUT: Final = 5.0
REVOCATIONS_KEY: Final = "revocations.json"
"""The data key of ConfigMap taskwarden-revocations (credentials.revocation.CONFIGMAP_KEY)."""
JWKS_KEY: Final = "jwks.json"
UNAVAILABLE_REASON: Final = tokens.Reason.REVOKED
"""The reason carried by SourceUnavailable for the revocation list. The token is refused as
if it were revoked (fail closed); the exception class and message say the list was
UNAVAILABLE. Switch to a dedicated tokens.Reason once credentials/tokens.py has one."""
_FETCH_ERRORS: Final = (OSError, ValueError, HTTPException, RecursionError)
"""What reading or parsing a source can raise (URLError/HTTPError/TimeoutError/ssl errors are
OSError; UnicodeDecodeError and json errors are ValueError; deep JSON is RecursionError)."""
_T = TypeVar("_T")


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
            and any(policy.glob_match(pattern, resource) for pattern in s.resources)
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
    task = raw.get(tokens.TASK_CLAIM)
    if not isinstance(task, dict):
        raise _malformed(f"claim {tokens.TASK_CLAIM!r} must be an object")
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
        if len(chain) >= tokens.MAX_ACT_DEPTH:
            raise _malformed(f"claim 'act' is deeper than {tokens.MAX_ACT_DEPTH}")
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


# --------------------------------------------------------------------------------------------
# Sources


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_source(source: str | Path) -> str:
    """The source as a string, or ValueError if it is not one we will read: an https:// URL,
    an http:// URL whose host is loopback (a man in the middle could swap keys or hide
    revocations anywhere else), or a file path (no other ``scheme://``)."""
    src = str(source)
    if "://" not in src:
        return src
    parts = urlsplit(src)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return src
    if scheme == "http":
        if _is_loopback(parts.hostname):
            return src
        raise ValueError(
            f"refusing http:// source for non-loopback host {parts.hostname!r}: use https:// "
            "(http:// is only for 127.0.0.0/8, ::1 and localhost)"
        )
    raise ValueError(f"unsupported source scheme {parts.scheme!r}: use https://, or a file")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead an https:// source to plain http://: follow none."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, *args: Any) -> None:
        raise urllib.error.URLError(f"HTTP {code} redirect from {req.full_url} refused")


def read_source(source: str | Path, ctx: ssl.SSLContext | None = None) -> bytes:
    """The bytes of an https:// URL, a loopback http:// URL, or a local file (at most
    MAX_DOCUMENT_BYTES). ValueError for a source :func:`check_source` refuses; OSError when
    it cannot be read."""
    src = check_source(source)
    if "://" not in src:
        with Path(src).open("rb") as f:
            data = f.read(MAX_DOCUMENT_BYTES + 1)
    else:
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if urlsplit(src).scheme.lower() == "http":
            handlers.append(urllib.request.ProxyHandler({}))  # loopback must stay loopback
        else:
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        opener = urllib.request.build_opener(*handlers)
        with opener.open(src, timeout=FETCH_TIMEOUT) as r:
            data = bytes(r.read(MAX_DOCUMENT_BYTES + 1))
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _json(data: bytes | str) -> Any:
    return json.loads(data, parse_constant=_reject_constant)


def _unwrap_configmap(doc: Any, key: str) -> Any:
    """The document inside a ConfigMap (``kubectl get cm -o json``) or its ``data`` mapping
    (``-o jsonpath='{.data}'``); the document itself otherwise."""
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        if doc.get("apiVersion") != "v1" or not isinstance(doc.get("data"), dict):
            raise ValueError("a ConfigMap object must be apiVersion v1 with a data mapping")
        doc = doc["data"]
        if key not in doc:
            raise ValueError(f"the ConfigMap has no {key!r} entry")
    if isinstance(doc, dict) and key in doc:
        if set(doc) != {key} or not isinstance(doc[key], str):
            raise ValueError(f"ConfigMap data must hold exactly one string entry {key!r}")
        return _json(doc[key])
    return doc


@dataclass(frozen=True)
class RevocationSnapshot:
    """A parsed revocation list: the revoked jtis and the operator's ``updatedAt``."""

    revoked: frozenset[str]
    updated_at: float

    def __contains__(self, jti: object) -> bool:
        return jti in self.revoked

    def __len__(self) -> int:
        return len(self.revoked)


def parse_revocations(data: bytes) -> RevocationSnapshot:
    """Parse a revocation list the operator published; ValueError for anything else.

    Accepted: the document ``{"revoked": [{"jti", "exp"}...], "updatedAt": RFC 3339}`` (the
    /revocations body, or the file of a mounted ConfigMap volume), the ConfigMap's data
    mapping ``{"revocations.json": "<document>"}``, or the whole ConfigMap as
    ``kubectl get configmap taskwarden-revocations -o json`` prints it. Unknown or missing
    members are refused, never read as "nothing revoked".
    """
    doc = _unwrap_configmap(_json(data), REVOCATIONS_KEY)
    if not isinstance(doc, dict) or set(doc) != {"revoked", "updatedAt"}:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(
            f"unrecognised revocation list: expected exactly 'revoked' and 'updatedAt', "
            f"found {found}"
        )
    updated = doc["updatedAt"]
    if not isinstance(updated, str):
        raise ValueError("revocation list: 'updatedAt' must be an RFC 3339 string")
    try:
        updated_at = timeutil.parse(updated)
    except (ValueError, OverflowError):
        raise ValueError("revocation list: 'updatedAt' is not an RFC 3339 timestamp") from None
    entries = doc["revoked"]
    if not isinstance(entries, list):
        raise ValueError("revocation list: 'revoked' must be a list")
    jtis: set[str] = set()
    for index, entry in enumerate(entries):
        if (
            not isinstance(entry, dict)
            or set(entry) != {"jti", "exp"}
            or not isinstance(entry["jti"], str)
            or not entry["jti"]
            or isinstance(entry["exp"], bool)
            or not isinstance(entry["exp"], int | float)
        ):
            raise ValueError(f"revocation list: revoked[{index}] must be {{jti, exp}}")
        jtis.add(entry["jti"])
    return RevocationSnapshot(frozenset(jtis), updated_at)


def parse_jwks(data: bytes) -> dict[str, Any]:
    """A JWK Set, given as itself, as the data of the taskwarden-jwks ConfigMap, or as that
    ConfigMap object; ValueError for anything else."""
    doc = _unwrap_configmap(_json(data), JWKS_KEY)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("JWKS must be an object with a keys list")
    return doc


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


class _Cached(Generic[_T]):
    """One source, refreshed every ``ttl`` seconds; a failed refresh keeps the last good copy.

    Only one thread fetches at a time, and only that thread waits for the network: while a
    refresh runs, others get the cached copy (or wait if there is none yet).
    """

    def __init__(
        self,
        source: str,
        ttl: float,
        ctx: ssl.SSLContext | None,
        clock: Callable[[], float],
        parse: Callable[[bytes], _T],
    ) -> None:
        self.source, self.ttl, self.ctx, self.clock, self.parse = source, ttl, ctx, clock, parse
        self.value: _T | None = None
        self.fetched_at = float("-inf")
        self.fetches = 0
        """Reads attempted (for tests and metrics)."""
        self._fetching = threading.Lock()

    def get(self, force: bool = False) -> _T:
        """The cached value, refreshed when due (or when ``force``); raises what reading or
        parsing raised if there has never been a good copy."""
        value, generation = self.value, self.fetches
        if value is not None and not force and self.clock() - self.fetched_at < self.ttl:
            return value
        if value is not None and not force:
            if not self._fetching.acquire(blocking=False):
                return value  # another thread is refreshing; serve the copy we have
        else:
            self._fetching.acquire()
        try:
            if self.value is not None and self.fetches != generation:
                return self.value  # the thread we waited for has just read it
            self.fetches += 1
            try:
                fresh = self.parse(read_source(self.source, self.ctx))
            except _FETCH_ERRORS:
                if self.value is None:
                    raise
                return self.value
            self.value, self.fetched_at = fresh, self.clock()
            return fresh
        finally:
            self._fetching.release()


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
        refetch_cooldown: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``max_stale``: refuse every token when the revocation list's ``updatedAt`` is more
        than this many seconds away from now. ``refetch_cooldown``: at most one forced JWKS
        refetch (for an unknown ``kid``) per this many seconds. ValueError for a source that
        :func:`check_source` refuses or a negative/non-finite number."""
        for name, number in (
            ("cache_ttl", cache_ttl),
            ("max_stale", max_stale),
            ("leeway", leeway),
            ("refetch_cooldown", refetch_cooldown),
        ):
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0")
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._jwks = _Cached(check_source(jwks), cache_ttl, ctx, clock, parse_jwks)
        self._revoked = (
            _Cached(check_source(revocations), cache_ttl, ctx, clock, parse_revocations)
            if revocations is not None
            else None
        )
        self.audience, self.issuer, self.max_stale = audience, issuer, max_stale
        self.leeway, self.clock, self.refetch_cooldown = leeway, clock, refetch_cooldown
        self._refetch_lock = threading.Lock()
        self._last_refetch = float("-inf")

    def _revoked_set(self) -> RevocationSnapshot | frozenset[str]:
        if self._revoked is None:
            return frozenset()
        try:
            snapshot = self._revoked.get()
        except _FETCH_ERRORS as e:
            raise SourceUnavailable(
                "revocations",
                UNAVAILABLE_REASON,
                f"revocation list UNAVAILABLE ({type(e).__name__}: {e}); failing closed",
            ) from None
        age = self.clock() - snapshot.updated_at
        if abs(age) > self.max_stale:
            raise SourceUnavailable(
                "revocations",
                UNAVAILABLE_REASON,
                f"revocation list UNAVAILABLE: its updatedAt is {age:.0f}s from now, more than "
                f"max_stale {self.max_stale:.0f}s; failing closed",
            )
        return snapshot

    def _keys(self, force: bool = False) -> dict[str, Any]:
        try:
            return self._jwks.get(force=force)
        except _FETCH_ERRORS as e:
            raise SourceUnavailable(
                "jwks",
                tokens.Reason.UNKNOWN_KEY,
                f"JWKS UNAVAILABLE ({type(e).__name__}: {e})",
            ) from None

    def _unknown_kid(self, token: str) -> bool:
        """True if the token names a kid (a non-empty string) that our JWKS lacks."""
        kid = tokens.unverified_header(token).get("kid")
        if not isinstance(kid, str) or not kid:
            return False
        keys = self._jwks.value
        return keys is None or not any(
            isinstance(jwk, dict) and jwk.get("kid") == kid for jwk in keys.get("keys", [])
        )

    def _may_refetch(self) -> bool:
        """True at most once per refetch_cooldown, across threads."""
        with self._refetch_lock:
            now = self.clock()
            if now - self._last_refetch < self.refetch_cooldown:
                return False
            self._last_refetch = now
            return True

    def _check(self, token: str, jwks: Mapping[str, Any], revoked: Any) -> dict[str, Any]:
        return check(
            token,
            jwks,
            now=self.clock(),
            audience=self.audience,
            issuer=self.issuer,
            revoked=revoked,
            leeway=self.leeway,
        )

    def verify(self, token: str) -> Claims:
        """The claims of ``token``; TokenError (SourceUnavailable when the JWKS or revocation
        list cannot be used) for anything that must not be accepted."""
        revoked = self._revoked_set()
        try:
            raw = self._check(token, self._keys(), revoked)
        except SourceUnavailable:
            raise
        except TokenError as e:
            # A kid we do not know: the JWKS may have rotated. Refetch, rate-limited.
            if e.reason != tokens.Reason.UNKNOWN_KEY or not self._unknown_kid(token):
                raise
            if not self._may_refetch():
                raise
            raw = self._check(token, self._keys(force=True), revoked)
        return claims_from(raw)
