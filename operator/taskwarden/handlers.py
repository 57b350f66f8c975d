"""kopf registrations only. Each handler unpacks the event and hands it to one service.

Only `kopf.on.event` watchers: they write nothing to the objects they watch (no finalizers, no
kopf annotations — on Pods and Secrets that matters), so deleting a task or a namespace never
waits on the operator. State lives in status and in the services' own indexes; which tasks an
event affects is the index's answer (index.on_pod, on_policy, on_approval).

AgentTasks are not watched here: they are the one kind that grows with load, and kopf's
per-object handling would cost ~15 KiB each; runtime.py runs a lean LIST + WATCH for them
(watch.py). kopf keeps start-up and clean-up, liveness and the small watches below (replicas share
the work through Leases, sharding/, not kopf peering).

Settings reach the handlers through kopf's memo: the CLI runs kopf with `memo(settings)`.
"""

from __future__ import annotations

import logging
from typing import Any

from taskwarden import config, kube, kubeconfig, names, runtime, server
from taskwarden.kopf_without_client import kopf

log = logging.getLogger(__name__)
SETTINGS = "settings"
RUNTIME = "runtime"
# kopf's default registry probes for the `kubernetes` client (importing it: ~32 MiB of RSS) to
# log in with it; this plain one has only our handlers, `login` included.
kopf.set_default_registry(kopf.OperatorRegistry())


def memo(settings: config.Settings) -> kopf.Memo:
    """The memo the CLI passes to kopf.run: how the handlers get their settings."""
    return kopf.Memo({SETTINGS: settings})


def _rt(memo: kopf.Memo) -> runtime.Runtime:
    rt = memo[RUNTIME]
    assert isinstance(rt, runtime.Runtime)
    return rt


@kopf.on.login()
async def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf connects with kube.py's settings (kubeconfig.py); only a kubeconfig that needs an
    exec plugin or an auth provider goes through the official client (and imports it)."""
    cfg = kube.load_client_config()
    if cfg.needs_client:
        return kopf.login_via_client(settings=settings, **kwargs)
    return kopf.ConnectionInfo(
        server=cfg.server,
        ca_path=cfg.ca_file,
        ca_data=cfg.ca_data,
        insecure=cfg.insecure or None,
        certificate_path=cfg.cert_file,
        certificate_data=cfg.cert_data,
        private_key_path=cfg.key_file,
        private_key_data=cfg.key_data,
        token=kubeconfig.BearerToken(cfg.token, cfg.token_file).value(),
        default_namespace=cfg.namespace,
        proxy_url=cfg.proxy_url,
        trust_env=settings.networking.trust_env,
    )


@kopf.on.startup()
async def start_services(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours = memo.get(SETTINGS)
    assert isinstance(ours, config.Settings), "run kopf with memo=handlers.memo(settings)"
    # Events we post ourselves (with reasons users can act on); kopf's own would be noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # kopf runs standalone on every replica: all of them work, each on the shards whose
    # Lease it holds (sharding/, wired in runtime.build); kopf peering is not used.
    memo[RUNTIME] = await runtime.build(ours)


@kopf.on.cleanup()
async def stop_services(memo: kopf.Memo, **_: Any) -> None:
    rt = memo.get(RUNTIME)
    if rt is not None:
        await rt.stop()


@kopf.on.event("", "v1", "pods", id="pod-events")
async def pod_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    rt = _rt(memo)
    affected = rt.index.on_pod(event.get("type"), body)
    if affected:
        rt.reconciler.refresh_soon(affected)


@kopf.on.event(names.GROUP, names.VERSION, "agentpolicies", id="agentpolicy-events")
async def policy_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    rt = _rt(memo)
    affected = rt.index.on_policy(event.get("type"), body)
    if affected:
        md = body.get("metadata") or {}
        log.info(
            "policy %s/%s changed: re-evaluating %d live tasks",
            md.get("namespace"),
            md.get("name"),
            len(affected),
        )
        rt.reconciler.refresh_soon(affected)


@kopf.on.event(names.GROUP, names.VERSION, "agentapprovals", id="agentapproval-events")
async def approval_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    rt = _rt(memo)
    affected = rt.index.on_approval(event.get("type"), body)
    if affected:
        rt.reconciler.refresh_soon(affected)
    # Sharding (h5): the approval's status (and its audit line) is written by the replica that
    # owns its namespace's shard only, not once per replica.
    if rt.reconciler.ctx.owns(str((body.get("metadata") or {}).get("namespace") or "")):
        await server.on_approval_event(rt.extras.get("webhooks"), event.get("type"), body)
