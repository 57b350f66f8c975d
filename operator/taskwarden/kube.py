"""The one thin async client of the Kubernetes API used by every Taskwarden service: the
calls on the resources Taskwarden reads and writes (`await kube.get(TASKS, ns, name)`, Secrets,
ConfigMaps, Leases, Events, admission objects), built on kubehttp.py's HTTP core (sessions,
request lanes, paging, `ApiError`). No thread pool, no client model objects, and no
`kubernetes` import. Callers get plain dicts and `ApiError`.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from taskwarden import kubehttp, names
from taskwarden.kubehttp import (
    JSON,
    JSON_PATCH,
    MERGE_PATCH,
    METADATA_LIST,
    PAGE,
    WATCH_SECONDS,
    Client,
)

# What callers take from here, defined in the HTTP core.
ApiError = kubehttp.ApiError
load_client_config = kubehttp.load_client_config
trim_memory = kubehttp.trim_memory

GROUP, VERSION = names.GROUP, names.VERSION
TASKS, POLICIES, APPROVALS = "agenttasks", "agentpolicies", "agentapprovals"
CORE = frozenset({"pods"})
"""Plurals served by the core API (/api/v1); every other plural is one of ours."""
CORE_V1, OURS = "/api/v1", f"/apis/{GROUP}/{VERSION}"
LEASES, EVENTS = "/apis/coordination.k8s.io/v1", "/apis/events.k8s.io/v1"
ADMREG = "/apis/admissionregistration.k8s.io/v1"


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


class Kube(Client):
    """Async client: `await kube.get(TASKS, ns, name)` etc. (kubehttp.Client: the HTTP core)."""

    def pages(
        self, plural: str, ns: str | None = None, limit: int = PAGE
    ) -> AsyncGenerator[tuple[builtins.list[dict[str, Any]], str], None]:
        """LIST in pages of `limit`: yields (items, resourceVersion of the list) per page, so
        the caller can process and drop each page. Every page belongs to the first page's
        snapshot; a continue token that expired raises ApiError 410 (list again)."""
        return self._paged(_path(plural, ns), limit=limit)

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
