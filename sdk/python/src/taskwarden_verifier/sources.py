"""Where a verifier's trust comes from: reading the JWKS and the revocation list from a source
(an https:// URL, a loopback http:// URL, or a file), recognising exactly the documents the
operator publishes, and caching them. Used by ``Verifier``, ``aio.AsyncVerifier`` (which
fetches URLs with aiohttp but parses and checks sources here) and the operator's
``taskwarden verify``.

Fails closed: a source a man in the middle could answer is refused before any read, no
redirect is followed, loopback http:// never goes through a proxy, and a document that is not
what the operator publishes raises ValueError (never "nothing revoked").
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, Final, Generic, TypeVar
from urllib.parse import urlsplit

from taskwarden_verifier import contract

MAX_DOCUMENT_BYTES: Final = 4 * 1024 * 1024
"""A JWKS or revocation list larger than this is refused (the ConfigMap limit is 1 MiB)."""
FETCH_TIMEOUT: Final = 5.0
REVOCATIONS_KEY: Final = "revocations.json"
"""The data key of ConfigMap taskwarden-revocations (credentials.revocation.CONFIGMAP_KEY)."""
JWKS_KEY: Final = "jwks.json"
FETCH_ERRORS: Final = (OSError, ValueError, HTTPException, RecursionError)
"""What reading or parsing a source can raise (URLError/HTTPError/TimeoutError/ssl errors are
OSError; UnicodeDecodeError and json errors are ValueError; deep JSON is RecursionError)."""
_T = TypeVar("_T")


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
        updated_at = contract.parse_rfc3339(updated)
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


class Cached(Generic[_T]):
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
            except FETCH_ERRORS:
                if self.value is None:
                    raise
                return self.value
            self.value, self.fetched_at = fresh, self.clock()
            return fresh
        finally:
            self._fetching.release()
