"""The one thin async wrapper over the Kubernetes API used by every Taskwarden service.

The official client is synchronous; each call runs on a dedicated thread pool so kopf's event
loop never blocks. The streaming reads (paged LIST and WATCH, for watch.py) are native async
over aiohttp with the same client configuration: a watch is cancellable and holds no thread.
Only this module (and controlplane.py, for tests) imports `kubernetes`.
Callers get plain dicts and `ApiError` with the HTTP status.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import json
import ssl
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiohttp
import kubernetes
from kubernetes.client.exceptions import ApiException

from taskwarden import names

# The client ships py.typed, yet most of it is untyped; this module is where its objects turn
# into plain dicts, so past this line they are held as Any.
client: Any = kubernetes.client
config: Any = kubernetes.config
GROUP, VERSION = names.GROUP, names.VERSION
T = TypeVar("T")
TASKS, POLICIES, APPROVALS = "agenttasks", "agentpolicies", "agentapprovals"
CORE = frozenset({"pods"})
"""Plurals served by the core API (/api/v1); every other plural is one of ours."""
WATCH_SECONDS = 300
LINE_LIMIT = 2**20
"""aiohttp's reader refuses a line (one watch event) over twice this: 2 MiB per object."""


class ApiError(Exception):
    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body


def load_client_config(pool_size: int = 32) -> Any:
    """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg, persist_config=False)
    # The default pool of 4 connections would make concurrent calls open and drop TLS sessions.
    cfg.connection_pool_maxsize = pool_size
    return cfg


class Kube:
    """Async facade: `await kube.get_task(ns, name)` etc. Thread-safe; one per process."""

    def __init__(self, cfg: Any = None, workers: int = 32) -> None:
        self.api_client = client.ApiClient(cfg or load_client_config(workers))
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.admreg = client.AdmissionregistrationV1Api(self.api_client)
        self.events = client.EventsV1Api(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")
        self._http: aiohttp.ClientSession | None = None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except ApiException as e:
            raise ApiError(e.status or 0, e.reason or "", e.body or "") from None

    def _plain(self, obj: Any) -> dict[str, Any]:
        return (
            obj if isinstance(obj, dict) else dict(self.api_client.sanitize_for_serialization(obj))
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
        self.close()

    # ---------------------------------------------------------------- streaming reads (aiohttp)

    def _url(self, plural: str, ns: str | None) -> str:
        base = "/api/v1" if plural in CORE else f"/apis/{GROUP}/{VERSION}"
        path = f"{base}/namespaces/{ns}/{plural}" if ns else f"{base}/{plural}"
        return str(self.api_client.configuration.host).rstrip("/") + path

    def _session(self) -> aiohttp.ClientSession:
        """One session for the streaming reads, with the client's TLS and credentials."""
        if self._http is None or self._http.closed:
            cfg = self.api_client.configuration
            tls: ssl.SSLContext | bool = False
            if cfg.verify_ssl:
                tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
                if cfg.cert_file:
                    tls.load_cert_chain(cfg.cert_file, cfg.key_file)
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls, limit=0), read_bufsize=LINE_LIMIT
            )
        return self._http

    def _headers(self) -> dict[str, str]:
        # Re-read on every request: in a pod the client's hook reloads the rotated SA token.
        # The client's own auth settings, so every way it stores the token (kubeconfig and
        # in-cluster: key `BearerToken`, older clients: `authorization`) is honoured.
        headers = {"Accept": "application/json"}
        for auth in self.api_client.configuration.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"])] = str(auth["value"])
        return headers

    async def pages(
        self, plural: str, ns: str | None = None, limit: int = 500
    ) -> AsyncGenerator[tuple[builtins.list[dict[str, Any]], str], None]:
        """LIST in pages of `limit`: yields (items, resourceVersion of the list) per page, so
        the caller can process and drop each page. Every page belongs to the first page's
        snapshot; a continue token that expired raises ApiError 410 (list again)."""
        token = ""
        rv = ""
        while True:
            params = {"limit": str(limit), **({"continue": token} if token else {})}
            async with self._session().get(
                self._url(plural, ns), params=params, headers=self._headers()
            ) as resp:
                if resp.status != 200:
                    raise ApiError(resp.status, resp.reason or "", await resp.text())
                doc = json.loads(await resp.read())
            md = doc.get("metadata") or {}
            rv = rv or md.get("resourceVersion", "")
            token = md.get("continue") or ""
            items = doc.get("items") or []
            del doc
            yield items, rv
            if not token:
                return

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
            self._url(plural, ns), params=params, headers=self._headers(), timeout=timeout
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

    # ---------------------------------------------------------------- custom resources

    async def get(self, plural: str, ns: str, name: str) -> dict[str, Any]:
        return dict(
            await self._call(
                self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, plural, name
            )
        )

    async def list(self, plural: str, ns: str | None = None) -> builtins.list[dict[str, Any]]:
        if ns:
            return await self._pages(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                plural,
                keep=lambda i: i,
            )
        return await self._pages(
            self.custom.list_cluster_custom_object, GROUP, VERSION, plural, keep=lambda i: i
        )

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

        if ns:
            return await self._pages(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, ns, TASKS, keep=brief
            )
        return await self._pages(
            self.custom.list_cluster_custom_object, GROUP, VERSION, TASKS, keep=brief
        )

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
        return dict(
            await self._call(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                ns,
                plural,
                name,
                body,
            )
        )

    # ---------------------------------------------------------------- core objects

    async def _pages(
        self, fn: Callable[..., Any], *args: Any, keep: Callable[[dict[str, Any]], Any], **kw: Any
    ) -> builtins.list[Any]:
        """LIST in pages of 500, parsing JSON directly (no client models) and keeping only
        `keep(item)` of each: with 10,000 credential Secrets a full, modelled LIST would cost
        hundreds of MiB of transient memory that the allocator never gives back."""

        def page(token: str | None) -> dict[str, Any]:
            resp = fn(*args, limit=500, _continue=token, _preload_content=False, **kw)
            try:
                return dict(json.loads(resp.data))
            finally:
                resp.release_conn()

        out: builtins.list[Any] = []
        token: str | None = None
        while True:
            doc = await self._call(page, token)
            out.extend(keep(item) for item in doc.get("items") or [])
            token = (doc.get("metadata") or {}).get("continue") or None
            if not token:
                return out

    async def list_pods(
        self, ns: str | None = None, keep: Callable[[dict[str, Any]], Any] = lambda i: i
    ) -> builtins.list[Any]:
        """Pods, each reduced by `keep` as it is parsed (the index keeps a compact form)."""
        if ns:
            return await self._pages(self.core.list_namespaced_pod, ns, keep=keep)
        return await self._pages(self.core.list_pod_for_all_namespaces, keep=keep)

    async def get_secret(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(await self._call(self.core.read_namespaced_secret, name, ns))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def create_secret(self, ns: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._plain(await self._call(self.core.create_namespaced_secret, ns, body))

    async def replace_secret(self, ns: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._plain(await self._call(self.core.replace_namespaced_secret, name, ns, body))

    async def _write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """A write whose response body is not needed: skip deserialising it into client models
        (measurable CPU on the issuance path), but read it so the connection is reused."""

        def call() -> None:
            resp = fn(*args, _preload_content=False, **kwargs)
            resp.read()
            resp.release_conn()

        await self._call(call)

    async def put_secret(
        self,
        ns: str,
        body: Mapping[str, Any],
        may_replace: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Create, or replace when it exists: idempotent delivery. With `may_replace`, only an
        existing Secret it accepts is replaced (conditioned on the resourceVersion read); any
        other raises ApiError 409."""
        try:
            await self._write(self.core.create_namespaced_secret, ns, body)
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
            await self._write(self.core.replace_namespaced_secret, name, ns, body)

    async def patch_secret(self, ns: str, name: str, ops: builtins.list[Any]) -> None:
        """RFC 6902 JSON patch: its `test` operations are checked by the apiserver against the
        stored object in the same write, so a conditional replace costs one call, no read."""
        await self._write(
            self.core.patch_namespaced_secret,
            name,
            ns,
            ops,
            _content_type="application/json-patch+json",
        )

    async def delete_secret(self, ns: str, name: str, uid: str | None = None) -> bool:
        """Delete (only the Secret with this `uid` when given); False when it was already gone
        or is another Secret now."""
        options = client.V1DeleteOptions(
            grace_period_seconds=0,
            preconditions=client.V1Preconditions(uid=uid) if uid else None,
        )
        try:
            await self._write(self.core.delete_namespaced_secret, name, ns, body=options)
            return True
        except ApiError as e:
            if e.status == 404 or (uid and e.status == 409):
                return False
            raise

    async def list_secrets(
        self, ns: str | None, label_selector: str
    ) -> builtins.list[dict[str, Any]]:
        """Secrets' type and metadata only: the sweeper never needs (or keeps) their data."""

        def meta(item: dict[str, Any]) -> dict[str, Any]:
            return {"type": item.get("type"), "metadata": item.get("metadata") or {}}

        if ns:
            return await self._pages(
                self.core.list_namespaced_secret, ns, keep=meta, label_selector=label_selector
            )
        return await self._pages(
            self.core.list_secret_for_all_namespaces, keep=meta, label_selector=label_selector
        )

    async def get_configmap(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(await self._call(self.core.read_namespaced_config_map, name, ns))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def create_configmap(self, ns: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._plain(await self._call(self.core.create_namespaced_config_map, ns, body))

    async def replace_configmap(
        self, ns: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._plain(
            await self._call(self.core.replace_namespaced_config_map, name, ns, body)
        )

    async def token_review(self, token: str, audiences: builtins.list[str]) -> dict[str, Any]:
        """TokenReview (authentication.k8s.io/v1): the status the apiserver gives `token` for
        `audiences` (authenticated, user with its pod-name/pod-uid extras, audiences, error)."""
        body = {"spec": {"token": token, "audiences": audiences}}
        api = client.AuthenticationV1Api(self.api_client)
        res = self._plain(await self._call(api.create_token_review, body))
        return dict(res.get("status") or {})

    async def create_event(self, ns: str, body: Mapping[str, Any]) -> None:
        await self._write(self.events.create_namespaced_event, ns, body)

    # ---------------------------------------------------------------- leases (sharding, h5)

    async def list_leases(self, ns: str, label_selector: str) -> builtins.list[dict[str, Any]]:
        """coordination.k8s.io/v1 Leases as plain dicts (sharding/leases.py)."""
        return await self._pages(
            self.coordination.list_namespaced_lease,
            ns,
            keep=lambda i: i,
            label_selector=label_selector,
        )

    async def create_lease(self, ns: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._plain(await self._call(self.coordination.create_namespaced_lease, ns, body))

    async def replace_lease(self, ns: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace; `body.metadata.resourceVersion` makes it fail with 409 if the Lease changed."""
        return self._plain(
            await self._call(self.coordination.replace_namespaced_lease, name, ns, body)
        )

    async def delete_lease(self, ns: str, name: str) -> None:
        try:
            await self._write(self.coordination.delete_namespaced_lease, name, ns)
        except ApiError as e:
            if e.status != 404:
                raise

    # ---------------------------------------------------------------- admission registration

    async def put_webhook_configuration(self, kind: str, body: Mapping[str, Any]) -> None:
        """Create or replace a MutatingWebhookConfiguration (kind "mutating") or a
        ValidatingWebhookConfiguration ("validating"); never deletes one."""
        api = self.admreg
        create, read, replace = {
            "mutating": (
                api.create_mutating_webhook_configuration,
                api.read_mutating_webhook_configuration,
                api.replace_mutating_webhook_configuration,
            ),
            "validating": (
                api.create_validating_webhook_configuration,
                api.read_validating_webhook_configuration,
                api.replace_validating_webhook_configuration,
            ),
        }[kind]
        name = body["metadata"]["name"]
        for _ in range(5):
            try:
                await self._call(create, dict(body))
                return
            except ApiError as e:
                if e.status != 409:
                    raise
            current = self._plain(await self._call(read, name))
            updated = {**body, "metadata": {**body["metadata"]}}
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                await self._call(replace, name, updated)
                return
            except ApiError as e:
                if e.status not in (404, 409):  # deleted or changed meanwhile: start over
                    raise
        raise ApiError(409, f"{kind} webhook configuration {name}: too many write conflicts")

    async def served_resources(self, group: str, version: str) -> set[str]:
        """The resource names discovery lists under group/version (empty when not served)."""
        try:
            res = self._plain(await self._call(self.custom.get_api_resources, group, version))
        except ApiError as e:
            if e.status == 404:
                return set()
            raise
        return {str(r.get("name")) for r in res.get("resources") or ()}

    async def put_cluster_object(
        self, group: str, version: str, plural: str, body: Mapping[str, Any]
    ) -> None:
        """Create or replace a cluster-scoped object (admission policies and their bindings)."""
        name = body["metadata"]["name"]
        api = self.custom
        for _ in range(5):
            try:
                await self._call(api.create_cluster_custom_object, group, version, plural, body)
                return
            except ApiError as e:
                if e.status != 409:
                    raise
            current = self._plain(
                await self._call(api.get_cluster_custom_object, group, version, plural, name)
            )
            updated = {**body, "metadata": {**body["metadata"]}}
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                await self._call(
                    api.replace_cluster_custom_object, group, version, plural, name, updated
                )
                return
            except ApiError as e:
                if e.status not in (404, 409):
                    raise
        raise ApiError(409, f"{plural} {name}: too many write conflicts")

    async def delete_cluster_object(self, group: str, version: str, plural: str, name: str) -> bool:
        """Delete a cluster-scoped object; False when it was not there."""
        try:
            await self._call(self.custom.delete_cluster_custom_object, group, version, plural, name)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    async def list_cached(self, plural: str, ns: str) -> builtins.list[dict[str, Any]]:
        """LIST served from the apiserver's watch cache (resourceVersion=0): milliseconds stale
        at most, but never waits for a consistent read (which can take ~100 ms). For admission."""
        res = await self._call(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            ns,
            plural,
            resource_version="0",
        )
        return list(res.get("items", []))


def trim_memory() -> None:
    """Return freed heap to the OS after large transient work (start-up LISTs, sweeps)."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
