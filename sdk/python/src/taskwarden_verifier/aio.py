"""AsyncVerifier: the Verifier for asyncio services, fetching over aiohttp
(``pip install 'taskwarden-verifier[aiohttp]'``).

    from taskwarden_verifier.aio import AsyncVerifier
    verifier = AsyncVerifier(jwks=..., revocations=..., audience=..., ca_file=...)
    claims = await verifier.verify(token)          # raises TokenError / SourceUnavailable
    await verifier.aclose()                        # or: async with AsyncVerifier(...) as v:

Same arguments and same decisions as ``Verifier`` (both are a ``Rules``): JWKS and list cached
for ``cache_ttl``, a failed refresh keeps the last good copy (which keeps ageing by its
``updatedAt``), an unknown ``kid`` forces at most one refetch per ``refetch_cooldown``, and
anything unreadable, unrecognised or stale is :class:`SourceUnavailable` (answer 503).

Fetching fails closed like the sync one: sources are checked by ``sources.check_source``;
no redirect is followed (a 3xx is an error); no proxy is used (aiohttp ignores the proxy
environment unless told to); at most ``MAX_DOCUMENT_BYTES`` are read. Files are read in a
thread with ``sources.read_source``. One AsyncVerifier belongs to one event loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import aiohttp

from taskwarden_verifier import sources
from taskwarden_verifier.verifier import Claims, RevocationSnapshot, Rules, TokenError

__all__ = ["FETCH_ERRORS", "AsyncCached", "AsyncVerifier"]
FETCH_ERRORS = (*sources.FETCH_ERRORS, aiohttp.ClientError)
_T = TypeVar("_T")


class AsyncCached(Generic[_T]):
    """``sources.Cached`` for asyncio: one source refreshed every ``ttl`` seconds, a failed
    refresh keeps the last good copy, one task fetches while the others use the cached copy
    (or wait for it if there is none yet)."""

    def __init__(
        self,
        source: str,
        ttl: float,
        read: Callable[[str], Any],
        clock: Callable[[], float],
        parse: Callable[[bytes], _T],
    ) -> None:
        self.source, self.ttl, self.read, self.clock, self.parse = source, ttl, read, clock, parse
        self.value: _T | None = None
        self.fetched_at = float("-inf")
        self.fetches = 0
        """Reads attempted (for tests and metrics)."""
        self._fetching = asyncio.Lock()

    async def get(self, force: bool = False) -> _T:
        value, generation = self.value, self.fetches
        if value is not None and not force and self.clock() - self.fetched_at < self.ttl:
            return value
        if value is not None and not force and self._fetching.locked():
            return value  # another task is refreshing; serve the copy we have
        async with self._fetching:
            if self.value is not None and self.fetches != generation:
                return self.value  # the task we waited for has just read it
            self.fetches += 1
            try:
                fresh = self.parse(await self.read(self.source))
            except FETCH_ERRORS:
                if self.value is None:
                    raise
                return self.value
            self.value, self.fetched_at = fresh, self.clock()
            return fresh


class AsyncVerifier(Rules):
    def __init__(
        self,
        *,
        jwks: str | Path,
        audience: str,
        revocations: str | Path | None = None,
        session: aiohttp.ClientSession | None = None,
        **settings: Any,
    ) -> None:
        """``settings`` are those of ``Rules`` (issuer, ca_file, cache_ttl, max_stale, leeway,
        refetch_cooldown, clock). ``session``: an aiohttp session to fetch with (not closed by
        :meth:`aclose`); by default one is made on first use. ValueError for a source that
        ``sources.check_source`` refuses or a negative/non-finite number."""
        super().__init__(audience=audience, **settings)
        self._session, self._own_session = session, session is None
        ttl, clock = self.cache_ttl, self.clock
        self._jwks = AsyncCached(
            sources.check_source(jwks), ttl, self._read, clock, sources.parse_jwks
        )
        self._revoked = (
            AsyncCached(
                sources.check_source(revocations), ttl, self._read, clock, sources.parse_revocations
            )
            if revocations is not None
            else None
        )

    async def _read(self, source: str) -> bytes:
        if "://" not in source:
            return await asyncio.to_thread(sources.read_source, source, self.ssl_context)
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        tls: ssl.SSLContext | bool = self.ssl_context or True
        timeout = aiohttp.ClientTimeout(total=sources.FETCH_TIMEOUT)
        async with self._session.get(
            source, allow_redirects=False, ssl=tls, timeout=timeout
        ) as response:
            if response.status != 200:
                raise ConnectionError(f"HTTP {response.status} from {source} (no redirects)")
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > sources.MAX_DOCUMENT_BYTES:
                    raise ValueError(f"document larger than {sources.MAX_DOCUMENT_BYTES} bytes")
            return bytes(data)

    async def _revoked_set(self) -> RevocationSnapshot | frozenset[str]:
        if self._revoked is None:
            return frozenset()
        try:
            return self.fresh_revocations(await self._revoked.get())
        except FETCH_ERRORS as e:
            raise self.unavailable("revocations", e) from None

    async def _keys(self, force: bool = False) -> dict[str, Any]:
        try:
            return await self._jwks.get(force=force)
        except FETCH_ERRORS as e:
            raise self.unavailable("jwks", e) from None

    async def verify(self, token: str) -> Claims:
        """The claims of ``token``; TokenError (SourceUnavailable when the JWKS or revocation
        list cannot be used) for anything that must not be accepted."""
        revoked = await self._revoked_set()
        try:
            return self.check(token, await self._keys(), revoked)
        except TokenError as e:
            if not self.should_refetch(e, token, self._jwks.value):
                raise
        return self.check(token, await self._keys(force=True), revoked)

    async def aclose(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncVerifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
