"""The HTTP core of the Kubernetes client (kube.py builds the resource calls on it).

Native async over one aiohttp session per client: every call is one `request` (method, path,
JSON body) answered with parsed JSON, within request lanes (at most `workers` in flight; an
urgent lane; a narrower one while a revocation waits to be listed). Authentication and TLS come
from kubeconfig.py; no `kubernetes` import unless a kubeconfig needs an exec plugin or an auth
provider. Callers get plain dicts and `ApiError` with the HTTP status and the API's message.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import json
import ssl
import tempfile
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import aiohttp

from taskwarden import kubeconfig
from taskwarden.kubeconfig import ClusterConfig

JSON, MERGE_PATCH, JSON_PATCH = (
    "application/json",
    "application/merge-patch+json",
    "application/json-patch+json",
)
PAGE = 100
WATCH_SECONDS = 300
LINE_LIMIT = 2**20
"""aiohttp's reader refuses a line (one watch event) over twice this: 2 MiB per object."""
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
"""Accept header of a LIST that returns every item's metadata only."""
URGENT_SLOTS = 2
"""Requests in flight outside the `workers` queue, for the writes whose delay is a security
delay: the revocation list (one writer at a time already). Under a burst of 500 completions
its write queued behind the burst's own Secret deletes and status patches (revocation lag p99
1.9 s in bench/hotpath.py); it does not wait for them now."""
YIELD_SLOTS = 8
"""Ordinary requests that may start while `Kube.yielding()` says a revocation waits to be
listed (those already in flight go on). In a burst of 500 completions on 2 cores the API server
is saturated by the completions themselves; with all 32 slots busy with the operator's own
follow-ups (Secret deletes, status writes, Events, ledger) the completions and the list write
reached the API server later: listing p99 2.3 s, vs 1.0 s with 8 (bench/RESULTS.md). Issuance
outside such moments keeps every slot."""
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
Headers = Callable[[], dict[str, str]]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body


def load_client_config() -> ClusterConfig:
    """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config."""
    return kubeconfig.load()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, datetime.date):
        return obj.isoformat()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _tls(cfg: ClusterConfig) -> ssl.SSLContext:
    """CA (file, PEM data or the system's) and client certificate; PEM data goes through a
    private temporary file for the moment `ssl` needs one."""
    ctx = ssl.create_default_context(cafile=cfg.ca_file, cadata=cfg.ca_data)
    if cfg.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert_file or cfg.cert_data:
        with contextlib.ExitStack() as stack:

            def path(file: str | None, data: str | None) -> str | None:
                if file or not data:
                    return file
                tmp = stack.enter_context(tempfile.NamedTemporaryFile("w", suffix=".pem"))
                tmp.write(data)
                tmp.flush()
                return tmp.name

            certfile = path(cfg.cert_file, cfg.cert_data)
            assert certfile is not None
            ctx.load_cert_chain(certfile, path(cfg.key_file, cfg.key_data))
    return ctx


def _bearer(cfg: ClusterConfig) -> Headers:
    token = kubeconfig.BearerToken(cfg.token, cfg.token_file)

    def headers() -> dict[str, str]:
        value = token.value()  # every request: a token file is re-read once a minute
        return {"Authorization": f"Bearer {value}"} if value else {}

    return headers


def _from_client(c: Any) -> tuple[ClusterConfig, Headers]:
    """A `kubernetes.client.Configuration` (tests, bench, the exec-plugin fallback): its host
    and TLS files, and its auth settings read on every request (its refresh hook renews an
    exec plugin's token; kubeconfig and in-cluster keep it under `BearerToken`, older
    clients and tests under `authorization`)."""
    cfg = ClusterConfig(
        server=str(c.host).rstrip("/"),
        ca_file=c.ssl_ca_cert or None,
        cert_file=c.cert_file or None,
        key_file=c.key_file or None,
        insecure=not c.verify_ssl,
        tls_server_name=getattr(c, "tls_server_name", None) or None,
        proxy_url=getattr(c, "proxy", None) or None,
    )

    def headers() -> dict[str, str]:
        out: dict[str, str] = {}
        for auth in c.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                out[str(auth["key"])] = str(auth["value"])
        return out

    return cfg, headers


def _via_client(cfg: ClusterConfig) -> Any:
    """Only for a kubeconfig user with an exec plugin, auth provider or password: the official
    loader runs those (and its import costs ~32 MiB of RSS)."""
    import kubernetes

    c = kubernetes.client.Configuration()
    loader: Any = kubernetes.config.load_kube_config  # untyped
    loader(context=cfg.context, client_configuration=c, persist_config=False)
    return c


class Client:
    """The HTTP core of `kube.Kube`: one aiohttp session per pool of connections; `cfg` is a
    ClusterConfig, a `kubernetes.client.Configuration`, or None (load_client_config). At most
    `workers` requests are in flight (WATCHes do not count against them), plus the urgent and
    yield lanes below."""

    def __init__(self, cfg: Any = None, workers: int = 32) -> None:
        cfg = load_client_config() if cfg is None else cfg
        if isinstance(cfg, ClusterConfig) and cfg.needs_client:
            cfg = _via_client(cfg)
        if isinstance(cfg, ClusterConfig):
            self.cluster, self._auth = cfg, _bearer(cfg)
        else:
            self.cluster, self._auth = _from_client(cfg)
        self._workers = max(1, workers)
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(self._workers)
        self._urgent = asyncio.Semaphore(URGENT_SLOTS)
        self._yield = asyncio.Semaphore(min(YIELD_SLOTS, self._workers))
        self.yielding: Callable[[], bool] = lambda: False
        """True while ordinary requests should give way (runtime.py: a revocation not yet
        listed); new ones then share YIELD_SLOTS."""

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http.closed or self._loop is not loop:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_tls(self.cluster), limit=0),
                read_bufsize=LINE_LIMIT,
                timeout=TIMEOUT,
            )
            self._loop, self._slots = loop, asyncio.Semaphore(self._workers)
            self._urgent = asyncio.Semaphore(URGENT_SLOTS)
            self._yield = asyncio.Semaphore(min(YIELD_SLOTS, self._workers))
        return self._http

    def _options(self, headers: dict[str, str]) -> dict[str, Any]:
        options: dict[str, Any] = {"headers": {"Accept": JSON, **headers, **self._auth()}}
        if self.cluster.proxy_url:
            options["proxy"] = self.cluster.proxy_url
        if self.cluster.tls_server_name:
            options["server_hostname"] = self.cluster.tls_server_name
        return options

    def close(self) -> None:
        """Drop the connections now (no TLS goodbye); from a coroutine prefer `aclose`."""
        http, self._http = self._http, None
        if http is not None and not http.closed:
            connector = http.connector
            http.detach()
            if connector is not None:
                connector._close(abort_ssl=True)

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    # ---------------------------------------------------------------- the one request

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        *,
        urgent: bool = False,
        accept: str = JSON,
    ) -> bytes:
        """The raw response body of a 2xx answer; any other status raises ApiError. An
        `urgent` request does not queue behind the `workers` slots (see URGENT_SLOTS); an
        ordinary one that starts while `yielding()` also takes one of YIELD_SLOTS."""
        http = self._session()
        headers: dict[str, str] = {"Accept": accept}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":"), default=_jsonable).encode()
            headers["Content-Type"] = content_type
        async with (
            self._urgent if urgent else self._slots,
            self._yield if not urgent and self.yielding() else contextlib.nullcontext(),
            http.request(
                method,
                self.cluster.server + path,
                params=params,
                data=data,
                **self._options(headers),
            ) as resp,
        ):
            raw = await resp.read()
            if not 200 <= resp.status < 300:
                raise ApiError(resp.status, resp.reason or "", raw.decode(errors="replace"))
        return raw

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        urgent: bool = False,
        accept: str = JSON,
    ) -> dict[str, Any]:
        """`method` on `path` (from the server's root: "/api/v1/..."), the answer parsed."""
        raw = await self._send(
            method, path, params, body, content_type, urgent=urgent, accept=accept
        )
        return dict(json.loads(raw)) if raw else {}

    async def _paged(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        limit: int = PAGE,
        accept: str = JSON,
    ) -> AsyncGenerator[tuple[builtins.list[dict[str, Any]], str], None]:
        token = ""
        rv = ""
        while True:
            query = {**(params or {}), "limit": str(limit)}
            if token:
                query["continue"] = token
            doc = await self.request("GET", path, params=query, accept=accept)
            md = doc.get("metadata") or {}
            rv = rv or str(md.get("resourceVersion") or "")
            token = str(md.get("continue") or "")
            items = doc.get("items") or []
            del doc
            yield items, rv
            if not token:
                return

    async def _collect(
        self,
        path: str,
        keep: Callable[[dict[str, Any]], Any] = lambda i: i,
        label_selector: str = "",
        field_selector: str = "",
        accept: str = JSON,
    ) -> builtins.list[Any]:
        """Every page of a LIST, keeping only `keep(item)` of each item as it is parsed: with
        10,000 credential Secrets a full LIST held at once would cost hundreds of MiB."""
        params = {"labelSelector": label_selector} if label_selector else {}
        if field_selector:
            params["fieldSelector"] = field_selector
        out: builtins.list[Any] = []
        async for items, _ in self._paged(path, params, accept=accept):
            out.extend(keep(item) for item in items)
        return out

    async def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise


def trim_memory() -> None:
    """Return freed heap to the OS after large transient work (start-up LISTs, sweeps)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
