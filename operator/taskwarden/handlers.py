"""kopf registrations only. Each handler unpacks the event and hands it to one service.

Only `kopf.on.event` watchers: they write nothing to the objects they watch (no finalizers, no
kopf annotations — on Pods and Secrets that matters), so deleting a task or a namespace never
waits on the operator. State lives in status and in the services' own indexes.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import kopf

from taskwarden import GROUP, VERSION, config, runtime, server

log = logging.getLogger(__name__)
_settings: config.Settings | None = None


def configure(settings: config.Settings) -> None:
    """Called by the CLI before kopf starts: handlers read their settings from here."""
    global _settings
    _settings = settings


def _rt(memo: Any) -> runtime.Runtime:
    return memo["runtime"]  # type: ignore[no-any-return]


@kopf.on.startup()
async def start_services(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    assert _settings is not None, "handlers.configure() was not called"
    # Events we post ourselves (with reasons users can act on); kopf's own would be noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Active/standby: each replica gets a distinct priority; the highest one works, others wait.
    settings.peering.priority = random.randint(1, 2**31 - 1)  # noqa: S311 - not security
    # A standby takes over this long after the active replica stops renewing (kopf: 60 s).
    settings.peering.lifetime = int(os.environ.get("TASKWARDEN_PEERING_LIFETIME", "15"))
    rt = memo["runtime"] = await runtime.build(_settings)
    logging.getLogger("kopf._core.engines.peering").addFilter(_PeeringRelay(rt))


class _PeeringRelay(logging.Filter):
    """kopf has no public "am I active" flag; its peering engine logs each pause and resume.
    Relay those to the runtime so standby replicas do no work at all (no sweeps, no expiries
    from stale indexes, no key rotation) and a new active replica rebuilds its indexes first."""

    def __init__(self, rt: runtime.Runtime) -> None:
        super().__init__()
        self.rt = rt

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith(("Pausing operations", "Pausing all operators")):
            self.rt.on_peering(paused=True)
        elif msg.startswith("Resuming operations"):
            self.rt.on_peering(paused=False)
        return True


@kopf.on.cleanup()
async def stop_services(memo: kopf.Memo, **_: Any) -> None:
    rt = memo.get("runtime")
    if rt is not None:
        await rt.stop()


@kopf.on.event(GROUP, VERSION, "agenttasks", id="agenttask-events")
async def task_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _rt(memo).reconciler.on_task_event(event.get("type"), body)


def _pod_facts(pod: Any) -> tuple[Any, ...]:
    md, st = pod.get("metadata") or {}, pod.get("status") or {}
    return (md.get("uid"), md.get("deletionTimestamp"), st.get("phase"))


@kopf.on.event("", "v1", "pods", id="pod-events")
async def pod_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    rt = _rt(memo)
    md = body.get("metadata") or {}
    ns, name = md.get("namespace"), md.get("name")
    before = rt.index.pods.get(ns, {}).get(name)
    if event.get("type") == "DELETED":
        rt.index.drop_pod(ns, name)
        after = None
    else:
        after = rt.index.put_pod(body)
    if before is not None and after is not None and _pod_facts(before) == _pod_facts(after):
        return  # nothing attestation reads has changed
    sa = ((after or before or {}).get("spec") or {}).get("serviceAccountName")
    affected = rt.index.tasks_for_pod(ns, name, sa)
    if affected:
        rt.reconciler.refresh_soon(affected)


@kopf.on.event(GROUP, VERSION, "agentpolicies", id="agentpolicy-events")
async def policy_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    rt = _rt(memo)
    md = body.get("metadata") or {}
    ns, name = md.get("namespace"), md.get("name")
    old = rt.index.policies.get(ns, {}).get(name)
    if event.get("type") == "DELETED":
        rt.index.drop_policy(ns, name)
    else:
        if old is not None and old.get("spec") == dict(body.get("spec") or {}):
            return
        rt.index.put_policy(body)
    accounts: set[str] = set()
    for pol in (old, body):
        if pol:
            accounts |= set(
                ((pol.get("spec") or {}).get("subjects") or {}).get("serviceAccounts") or []
            )
    affected = rt.index.tasks_for_accounts(ns, accounts)
    if affected:
        log.info("policy %s/%s changed: re-evaluating %d live tasks", ns, name, len(affected))
        rt.reconciler.refresh_soon(affected)


@kopf.on.event(GROUP, VERSION, "agentapprovals", id="agentapproval-events")
async def approval_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    rt = _rt(memo)
    md = body.get("metadata") or {}
    ns, name = md.get("namespace"), md.get("name")
    if event.get("type") == "DELETED":
        rt.index.drop_approval(ns, name)
    else:
        rt.index.put_approval(body)
    task = (body.get("spec") or {}).get("taskName")
    if task:
        rt.reconciler.refresh_soon([(ns, task)])
    await server.on_approval_event(rt.extras.get("webhooks"), event.get("type"), body)
