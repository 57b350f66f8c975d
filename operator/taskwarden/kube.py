"""The one thin async client of the Kubernetes API used by every Taskwarden service.

Native async over one aiohttp session per `Kube`: every call is one `request` (method, path,
JSON body) answered with parsed JSON, at most `workers` at a time. No thread pool, no client
model objects, and no `kubernetes` import: kubeconfig.py finds the server and the credentials
(a kubeconfig that needs an exec plugin or an auth provider loads `kubernetes.config`, then
only). Callers get plain dicts and `ApiError` with the HTTP status and the API's message.
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
from urllib.parse import quote

import aiohttp

from taskwarden import kubeconfig, names
from taskwarden.kubeconfig import ClusterConfig

GROUP, VERSION = names.GROUP, names.VERSION
TASKS, POLICIES, APPROVALS = "agenttasks", "agentpolicies", "agentapprovals"
CORE = frozenset({"pods"})
"""Plurals served by the core API (/api/v1); every other plural is one of ours."""
CORE_V1, OURS = "/api/v1", f"/apis/{GROUP}/{VERSION}"
LEASES, EVENTS = "/apis/coordination.k8s.io/v1", "/apis/events.k8s.io/v1"
ADMREG = "/apis/admissionregistration.k8s.io/v1"
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


def _at(base: str, plural: str, ns: str | None = None, name: str | None = None) -> str:
    """The path of a collection (or, with `name`, of one object); segments are quoted, so a
    name from a request can never reach another path."""
    path = f"{base}/namespaces/{quote(ns, safe='')}/{plural}" if ns else f"{base}/{plural}"
    if name is None:
        return path
    if not name:
        raise ValueError(f"{plural}: an empty name")
    return f"{path}/{quote(name, safe='')}"


def _path(plural: str, ns: str | None = None, name: str | None = None) -> str:
    return _at(CORE_V1 if plural in CORE else OURS, plural, ns, name)


def _brief_meta(item: dict[str, Any]) -> dict[str, Any]:
    """The metadata a sweep reads (no managedFields: kept for 10,000 Secrets at once)."""
    md = item.get("metadata") or {}
    keep = ("name", "namespace", "uid", "labels", "annotations", "ownerReferences")
    return {k: md[k] for k in keep if k in md}


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


class Kube:
    """Async client: `await kube.get(TASKS, ns, name)` etc. One per pool of connections;
    `cfg` is a ClusterConfig, a `kubernetes.client.Configuration`, or None (load_client_config).
    At most `workers` requests are in flight; WATCHes do not count against them."""

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

    def pages(
        self, plural: str, ns: str | None = None, limit: int = PAGE
    ) -> AsyncGenerator[tuple[builtins.list[dict[str, Any]], str], None]:
        """LIST in pages of `limit`: yields (items, resourceVersion of the list) per page, so
        the caller can process and drop each page. Every page belongs to the first page's
        snapshot; a continue token that expired raises ApiError 410 (list again)."""
        return self._paged(_path(plural, ns), limit=limit)

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

    async def watch(
        self, plural: str, ns: str | None, resource_version: str, seconds: int = WATCH_SECONDS
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """WATCH from `resource_version` with bookmarks: yields (type, object) as each event
        line arrives, until the server ends the watch (about `seconds`). An ERROR event
        raises ApiError with its code (410: the version is too old, list again)."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=seconds + 30)
        async with self._session().get(
            self.cluster.server + _path(plural, ns),
            params=params,
            timeout=timeout,
            **self._options({}),
        ) as resp:
            if resp.status != 200:
                raise ApiError(resp.status, resp.reason or "", await resp.text())
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = str(event.get("type") or ""), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 0), str(obj.get("reason") or ""))
                yield kind, obj

    # ---------------------------------------------------------------- our resources

    async def get(self, plural: str, ns: str, name: str, *, cached: bool = False) -> dict[str, Any]:
        """`cached`: served from the API server's watch cache (resourceVersion=0), no etcd
        read; it may trail the latest write by milliseconds, so only for a read whose write
        is conditioned on the resourceVersion it returns (a stale read then fails with 409)."""
        params = {"resourceVersion": "0"} if cached else None
        return await self.request("GET", _path(plural, ns, name), params=params)

    async def list(self, plural: str, ns: str | None = None) -> builtins.list[dict[str, Any]]:
        return await self._collect(_path(plural, ns))

    async def list_tasks_brief(self, ns: str | None = None) -> builtins.list[dict[str, Any]]:
        """AgentTasks reduced to what the sweeps compare: uid, phase, credential jti, issuedAt."""

        def brief(item: dict[str, Any]) -> dict[str, Any]:
            md, st = item.get("metadata") or {}, item.get("status") or {}
            return {
                "metadata": {k: md.get(k) for k in ("name", "namespace", "uid")},
                "status": {
                    "phase": st.get("phase"),
                    "credential": {
                        k: (st.get("credential") or {}).get(k) for k in ("jti", "issuedAt")
                    },
                },
            }

        return await self._collect(_path(TASKS, ns), brief)

    async def list_cached(self, plural: str, ns: str) -> builtins.list[dict[str, Any]]:
        """LIST served from the apiserver's watch cache (resourceVersion=0): milliseconds stale
        at most, but never waits for a consistent read (which can take ~100 ms). For admission."""
        res = await self.request("GET", _path(plural, ns), params={"resourceVersion": "0"})
        return list(res.get("items") or [])

    async def patch_status(
        self,
        plural: str,
        ns: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch status. With resource_version, the write fails (409) if anything changed
        since that version: the optimistic lock that keeps two operators from both issuing."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        path = _path(plural, ns, name) + "/status"
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def patch_status_ops(
        self, plural: str, ns: str, name: str, ops: builtins.list[dict[str, Any]]
    ) -> dict[str, Any]:
        """RFC 6902 JSON patch of the status subresource (its `test` operations are checked
        against the stored object in the same write); the object as written."""
        path = _path(plural, ns, name) + "/status"
        return await self.request("PATCH", path, body=ops, content_type=JSON_PATCH)

    # ---------------------------------------------------------------- core objects

    async def list_pods(
        self, ns: str | None = None, keep: Callable[[dict[str, Any]], Any] = lambda i: i
    ) -> builtins.list[Any]:
        """Pods, each reduced by `keep` as it is parsed (the index keeps a compact form)."""
        return await self._collect(_at(CORE_V1, "pods", ns), keep)

    async def get_secret(self, ns: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(_at(CORE_V1, "secrets", ns, name))

    async def create_secret(self, ns: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", _at(CORE_V1, "secrets", ns), body=body)

    async def replace_secret(self, ns: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PUT", _at(CORE_V1, "secrets", ns, name), body=body)

    async def put_secret(
        self,
        ns: str,
        body: Mapping[str, Any],
        may_replace: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Create, or replace when it exists: idempotent delivery. With `may_replace`, only an
        existing Secret it accepts is replaced (conditioned on the resourceVersion read); any
        other raises ApiError 409. The answers are not parsed (not needed)."""
        try:
            await self._send("POST", _at(CORE_V1, "secrets", ns), body=body)
        except ApiError as e:
            if e.status != 409:
                raise
            name = body["metadata"]["name"]
            if may_replace is not None:
                found = await self.get_secret(ns, name)
                if found is None or not may_replace(found):
                    raise
                rv = found["metadata"]["resourceVersion"]
                body = {**body, "metadata": {**body["metadata"], "resourceVersion": rv}}
            await self._send("PUT", _at(CORE_V1, "secrets", ns, name), body=body)

    async def patch_secret(self, ns: str, name: str, ops: builtins.list[Any]) -> None:
        """RFC 6902 JSON patch: its `test` operations are checked by the apiserver against the
        stored object in the same write, so a conditional replace costs one call, no read."""
        path = _at(CORE_V1, "secrets", ns, name)
        await self._send("PATCH", path, body=ops, content_type=JSON_PATCH)

    async def delete_secret(self, ns: str, name: str, uid: str | None = None) -> bool:
        """Delete (only the Secret with this `uid` when given); False when it was already gone
        or is another Secret now."""
        options: dict[str, Any] = {"gracePeriodSeconds": 0}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self._send("DELETE", _at(CORE_V1, "secrets", ns, name), body=options)
            return True
        except ApiError as e:
            if e.status == 404 or (uid and e.status == 409):
                return False
            raise

    async def list_secrets(
        self, ns: str | None, label_selector: str, secret_type: str = ""
    ) -> builtins.list[dict[str, Any]]:
        """Secrets' type and metadata only: the sweeper never needs (or keeps) their data.
        With `secret_type`, only Secrets of that type, and the API server sends metadata alone
        (PartialObjectMetadataList): no token or JWKS of 10,000 credentials is encoded, sent
        or parsed every sweep."""

        def keep(item: dict[str, Any]) -> dict[str, Any]:
            # a metadata-only item carries no type: it is the one selected
            return {"type": item.get("type") or secret_type, "metadata": _brief_meta(item)}

        return await self._collect(
            _at(CORE_V1, "secrets", ns),
            keep,
            label_selector,
            field_selector=f"type={secret_type}" if secret_type else "",
            accept=METADATA_LIST if secret_type else JSON,
        )

    async def get_configmap(self, ns: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(_at(CORE_V1, "configmaps", ns, name))

    async def create_configmap(
        self, ns: str, body: Mapping[str, Any], *, urgent: bool = False
    ) -> dict[str, Any]:
        return await self.request("POST", _at(CORE_V1, "configmaps", ns), body=body, urgent=urgent)

    async def replace_configmap(
        self, ns: str, name: str, body: Mapping[str, Any], *, urgent: bool = False
    ) -> dict[str, Any]:
        return await self.request(
            "PUT", _at(CORE_V1, "configmaps", ns, name), body=body, urgent=urgent
        )

    async def token_review(self, token: str, audiences: builtins.list[str]) -> dict[str, Any]:
        """TokenReview (authentication.k8s.io/v1): the status the apiserver gives `token` for
        `audiences` (authenticated, user with its pod-name/pod-uid extras, audiences, error)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        }
        res = await self.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=body)
        return dict(res.get("status") or {})

    async def create_event(self, ns: str, body: Mapping[str, Any]) -> None:
        await self._send("POST", _at(EVENTS, "events", ns), body=body)

    # ---------------------------------------------------------------- leases (sharding)

    async def list_leases(self, ns: str, label_selector: str) -> builtins.list[dict[str, Any]]:
        """coordination.k8s.io/v1 Leases as plain dicts (sharding/leases.py)."""
        return await self._collect(_at(LEASES, "leases", ns), label_selector=label_selector)

    async def create_lease(self, ns: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", _at(LEASES, "leases", ns), body=body)

    async def replace_lease(self, ns: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace; `body.metadata.resourceVersion` makes it fail with 409 if the Lease changed."""
        return await self.request("PUT", _at(LEASES, "leases", ns, name), body=body)

    async def delete_lease(self, ns: str, name: str) -> None:
        try:
            await self._send("DELETE", _at(LEASES, "leases", ns, name))
        except ApiError as e:
            if e.status != 404:
                raise

    # ---------------------------------------------------------------- cluster-scoped objects

    async def _create_or_replace(self, base: str, plural: str, body: Mapping[str, Any]) -> bool:
        """Create, else replace at the resourceVersion read; False after 5 write conflicts."""
        name = body["metadata"]["name"]
        for _ in range(5):
            try:
                await self._send("POST", _at(base, plural), body=body)
                return True
            except ApiError as e:
                if e.status != 409:
                    raise
            current = await self.request("GET", _at(base, plural, None, name))
            updated = {**body, "metadata": {**body["metadata"]}}
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                await self._send("PUT", _at(base, plural, None, name), body=updated)
                return True
            except ApiError as e:
                if e.status not in (404, 409):  # deleted or changed meanwhile: start over
                    raise
        return False

    async def put_webhook_configuration(self, kind: str, body: Mapping[str, Any]) -> None:
        """Create or replace a MutatingWebhookConfiguration (kind "mutating") or a
        ValidatingWebhookConfiguration ("validating"); never deletes one."""
        plural = {
            "mutating": "mutatingwebhookconfigurations",
            "validating": "validatingwebhookconfigurations",
        }[kind]
        if not await self._create_or_replace(ADMREG, plural, body):
            name = body["metadata"]["name"]
            raise ApiError(409, f"{kind} webhook configuration {name}: too many write conflicts")

    async def served_resources(self, group: str, version: str) -> set[str]:
        """The resource names discovery lists under group/version (empty when not served)."""
        path = f"/apis/{quote(group, safe='')}/{quote(version, safe='')}"
        res = await self._get_or_none(path)
        return {str(r.get("name")) for r in (res or {}).get("resources") or ()}

    async def put_cluster_object(
        self, group: str, version: str, plural: str, body: Mapping[str, Any]
    ) -> None:
        """Create or replace a cluster-scoped object (admission policies and their bindings)."""
        if not await self._create_or_replace(f"/apis/{group}/{version}", plural, body):
            name = body["metadata"]["name"]
            raise ApiError(409, f"{plural} {name}: too many write conflicts")

    async def delete_cluster_object(self, group: str, version: str, plural: str, name: str) -> bool:
        """Delete a cluster-scoped object; False when it was not there."""
        try:
            await self._send("DELETE", _at(f"/apis/{group}/{version}", plural, None, name))
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True


def trim_memory() -> None:
    """Return freed heap to the OS after large transient work (start-up LISTs, sweeps)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
