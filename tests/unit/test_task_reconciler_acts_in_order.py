"""The task reconciler on a fake API and a fake clock: what it writes, in which order, and what
it schedules. No cluster and no sleeping; the decisions themselves are covered by the check
and transition tests, this covers the acting and the retries."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from taskwarden import config, names, timeutil
from taskwarden.credentials import keymanager, tokens
from taskwarden.index import Index, TaskRef
from taskwarden.kube import TASKS, ApiError
from taskwarden.ledger import Ledger
from taskwarden.tasks.reconciler import Reconciler
from taskwarden.tasks.scheduler import rotating_as
from tests.unit import task_world as w

ISSUER = "https://taskwarden.test"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeKube:
    """Records every write; serves tasks and Secrets from dicts."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.tasks: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail_status: int | None = None
        self.configmaps: dict[str, dict[str, Any]] = {}

    async def get_configmap(self, ns: str, name: str) -> dict[str, Any] | None:
        cm = self.configmaps.get(name)
        return copy.deepcopy(cm) if cm else None

    async def create_configmap(self, ns: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if name in self.configmaps:
            raise ApiError(409, "AlreadyExists")
        return self._store_configmap(name, body)

    async def replace_configmap(
        self, ns: str, name: str, body: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        if body["metadata"].get("resourceVersion") != self.configmaps[name]["metadata"]["rv"]:
            raise ApiError(409, "Conflict")
        return self._store_configmap(name, body)

    def _store_configmap(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("ledger", name, dict(body["data"])))
        cm = copy.deepcopy(body)
        cm["metadata"]["resourceVersion"] = cm["metadata"]["rv"] = str(len(self.calls))
        self.configmaps[name] = cm
        return copy.deepcopy(cm)

    def ledger(self) -> set[str]:
        """The jti the ledger ConfigMaps hold."""
        return {jti for cm in self.configmaps.values() for jti in cm["data"]}

    async def get(self, plural: str, ns: str, name: str, *, cached: bool = False) -> dict[str, Any]:
        self.calls.append(("get", plural, name))
        if (ns, name) not in self.tasks:
            raise ApiError(404, "Not Found")
        return self.tasks[(ns, name)]

    async def list_cached(self, plural: str, ns: str) -> list[dict[str, Any]]:
        self.calls.append(("list_cached", plural, ns))
        return []

    async def patch_status(
        self, plural: str, ns: str, name: str, patch: Any, *, resource_version: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(("patch_status", name, resource_version, patch))
        if self.fail_status:
            raise ApiError(self.fail_status, "Conflict")
        return {}

    async def put_secret(self, ns: str, body: dict[str, Any], may_replace: Any = None) -> None:
        self.calls.append(("put_secret", body["metadata"]["name"]))
        found = self.secrets.get((ns, body["metadata"]["name"]))
        if found is not None and may_replace is not None and not may_replace(found):
            raise ApiError(409, "Conflict")
        self.secrets[(ns, body["metadata"]["name"])] = body

    async def patch_secret(self, ns: str, name: str, ops: list[dict[str, Any]]) -> None:
        """RFC 6902 on the stored Secret: `test` on a missing path or another value is a 422."""
        self.calls.append(("patch_secret", name))
        found = copy.deepcopy(self.secrets.get((ns, name)))
        if found is None:
            raise ApiError(404, "Not Found")
        for op in ops:
            *parents, leaf = [
                p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
            ]
            node: Any = found
            try:
                for part in parents:
                    node = node[int(part)] if isinstance(node, list) else node[part]
                if op["op"] == "test" and node[leaf] != op["value"]:
                    raise ApiError(422, "test failed")
            except (KeyError, IndexError) as e:
                raise ApiError(422, "test failed") from e
            if op["op"] in ("replace", "add"):
                node[leaf] = op["value"]
        self.secrets[(ns, name)] = found

    async def get_secret(self, ns: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_secret", name))
        return self.secrets.get((ns, name))

    async def delete_secret(self, ns: str, name: str, uid: str | None = None) -> bool:
        self.calls.append(("delete_secret", name))
        return self.secrets.pop((ns, name), None) is not None

    async def create_event(self, ns: str, body: dict[str, Any]) -> None:
        self.calls.append(("event", body["reason"]))

    async def list_secrets(
        self, ns: str | None, selector: str, secret_type: str = ""
    ) -> list[dict[str, Any]]:
        return [{"type": s["type"], "metadata": s["metadata"]} for s in self.secrets.values()]

    async def list_tasks_brief(self, ns: str | None) -> list[dict[str, Any]]:
        return list(self.tasks.values())

    def writes(self) -> list[str]:
        kinds = ("patch_status", "put_secret", "patch_secret", "delete_secret")
        return [c[0] for c in self.calls if c[0] in kinds]


class FakeRevocations:
    def __init__(self, kube: FakeKube) -> None:
        self.kube, self.added = kube, []  # type: ignore[var-annotated]

    def add(self, jti: str, exp: float) -> asyncio.Future[None]:
        self.added.append(jti)
        self.kube.calls.append(("revoke", jti))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def run(scenario: Callable[[Reconciler, FakeKube, Clock], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        clock = Clock(w.NOW)
        kube = FakeKube()
        index = Index()
        index.put_policy(w.policy_body())
        index.put_pod(w.pod())
        settings = config.Settings(identity=config.IdentitySettings(issuer=ISSUER))
        r = Reconciler(
            kube,  # type: ignore[arg-type]
            settings,
            index,
            keymanager.MemoryKeyManager(clock=lambda: w.NOW),
            FakeRevocations(kube),  # type: ignore[arg-type]
            Ledger(kube, "taskwarden-system"),  # type: ignore[arg-type]
            clock=clock,
            instance="test-0",
        )
        r.active.set()
        await scenario(r, kube, clock)
        await asyncio.sleep(0)  # let background Event posts finish

    asyncio.run(main())


def issued_task(r: Reconciler, kube: FakeKube, body: dict[str, Any]) -> dict[str, Any]:
    """The task as the API would hold it after the status patch of an issue."""
    patch = next(c[3] for c in kube.calls if c[0] == "patch_status")
    return {**body, "status": {**body["status"], **patch}}


def test_issue_writes_ledger_then_status_then_the_secret_and_schedules_rotation() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task()
        await r.reconcile_now(body)
        assert kube.writes() == ["patch_status", "put_secret"]
        order = [c[0] for c in kube.calls if c[0] in ("ledger", "patch_status", "put_secret")]
        assert order == ["ledger", "patch_status", "put_secret"]
        ledgered = next(c[2] for c in kube.calls if c[0] == "ledger")
        _, name, rv, patch = next(c for c in kube.calls if c[0] == "patch_status")
        assert (name, rv) == ("t", "7")  # conditioned on the resourceVersion that was read
        assert patch["phase"] == "Active" and patch["reason"] == "Issued"
        cred = patch["credential"]
        assert cred["issuedAt"] == timeutil.rfc3339(w.NOW)
        assert list(ledgered) == [cred["jti"]]  # durable before status names it
        assert '"backend":"jwt"' in ledgered[cred["jti"]]
        secret = kube.secrets[(w.NS, "t-credential")]
        assert secret["metadata"]["annotations"][names.JTI_ANNOTATION] == cred["jti"]
        token = base64.b64decode(secret["data"]["token"]).decode()
        jwks = r.ctx.keys.jwks()
        claims = tokens.verify(token, jwks, issuer=ISSUER, audience=w.AUD, now=w.NOW)
        assert claims["jti"] == cred["jti"]
        # credential ttl defaults below the task's 20 remaining minutes: rotate at half life
        rot = r.scheduler.deadline((w.NS, "t"), "rotate")
        assert rot is not None and w.NOW < rot < timeutil.parse(cred["expiresAt"])
        assert r.scheduler.deadline((w.NS, "t"), "expire") == w.NOW + 1200
        assert r.ctx.active == {(w.NS, "t")}

    run(scenario)


def test_an_active_task_with_its_secret_in_place_is_left_alone_until_rotation() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task()
        await r.reconcile_now(body)
        active = issued_task(r, kube, body)
        kube.calls.clear()
        clock.now += 10
        await r.reconcile_now(active)
        assert kube.writes() == []
        rot = r.scheduler.deadline((w.NS, "t"), "rotate")
        assert rot is not None
        clock.now = rot
        await r.reconcile_now(active)
        # Due, but not started by the rotation queue: it is queued, in order of expiry.
        assert kube.writes() == [] and r.scheduler.deadline((w.NS, "t"), "rotate") == rot
        with rotating_as((w.NS, "t")):
            await r.reconcile_now(active)
        # One conditional patch of the Secret this process wrote; no Event for a routine one.
        assert kube.writes() == ["patch_status", "patch_secret"]
        patch = next(c[3] for c in kube.calls if c[0] == "patch_status")
        assert patch["reason"] == "Rotated" and patch["credential"]["rotations"] == 1
        assert "RotationOnTime" not in {c["type"] for c in patch["conditions"]}
        await asyncio.sleep(0)
        assert not [c for c in kube.calls if c[0] == "event"]
        secret = kube.secrets[(w.NS, "t-credential")]
        assert secret["metadata"]["annotations"][names.JTI_ANNOTATION] == patch["credential"]["jti"]
        token = base64.b64decode(secret["data"]["token"]).decode()
        claims = tokens.verify(
            token, r.ctx.keys.jwks(), issuer=ISSUER, audience=w.AUD, now=clock.now
        )
        assert claims["jti"] == patch["credential"]["jti"]


def test_a_late_rotation_says_so_in_a_condition_until_one_is_on_time_again() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        key = (w.NS, "t")
        body = w.task(credentialTTL="2m")  # room for three rotations in the task's life
        await r.reconcile_now(body)
        active = issued_task(r, kube, body)
        cred = active["status"]["credential"]
        life = timeutil.parse(cred["expiresAt"]) - timeutil.parse(cred["issuedAt"])
        rot = r.scheduler.deadline(key, "rotate")
        assert rot is not None
        clock.now = rot + 0.2 * life  # served long after its deadline: behind
        kube.calls.clear()
        with rotating_as(key):
            await r.reconcile_now(active)
        late = issued_task(r, kube, active)
        (cond,) = [c for c in late["status"]["conditions"] if c["type"] == "RotationOnTime"]
        assert (cond["status"], cond["reason"]) == ("False", "RotationBehind")
        assert "after its rotation deadline" in cond["message"]
        await asyncio.sleep(0)
        assert ("event", "RotationBehind") in kube.calls
        # Late again: the condition stays False, and no second Event is posted for it.
        rot = r.scheduler.deadline(key, "rotate")
        assert rot is not None
        clock.now = rot + 0.2 * life
        kube.calls.clear()
        with rotating_as(key):
            await r.reconcile_now(late)
        late = issued_task(r, kube, late)
        (cond,) = [c for c in late["status"]["conditions"] if c["type"] == "RotationOnTime"]
        assert cond["status"] == "False"
        await asyncio.sleep(0)
        assert not [c for c in kube.calls if c[0] == "event"]
        rot = r.scheduler.deadline(key, "rotate")
        assert rot is not None
        clock.now = rot  # on time
        kube.calls.clear()
        with rotating_as(key):
            await r.reconcile_now(late)
        again = issued_task(r, kube, late)
        (cond,) = [c for c in again["status"]["conditions"] if c["type"] == "RotationOnTime"]
        assert (cond["status"], cond["reason"]) == ("True", "RotatedOnTime")

    run(scenario)


def test_a_missing_secret_is_awaited_briefly_then_reissued_and_the_old_jti_revoked() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task()
        await r.reconcile_now(body)
        active = issued_task(r, kube, body)
        old_jti = active["status"]["credential"]["jti"]
        kube.secrets.clear()
        r.index.secrets.clear()  # as after a restart
        kube.calls.clear()
        clock.now += 1
        await r.reconcile_now(active)
        assert kube.writes() == []  # the issuer may still be writing it
        assert r.scheduler.deadline((w.NS, "t"), "retry") == w.NOW + 3.0
        clock.now += 5
        await r.reconcile_now(active)
        assert kube.writes() == ["patch_status", "put_secret"]
        assert [c for c in kube.calls if c[0] == "revoke"] == [("revoke", old_jti)]

    run(scenario)


def test_completion_revokes_and_deletes_before_the_unconditional_status_write() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task()
        await r.reconcile_now(body)
        active = issued_task(r, kube, body)
        jti = active["status"]["credential"]["jti"]
        kube.calls.clear()
        done = {**active, "spec": {**active["spec"], "completed": True}}
        await r.reconcile_now(done)
        steps = [c[0] for c in kube.calls if c[0] not in ("event", "get_secret")]
        assert steps[-1] == "patch_status"
        assert set(steps[:-1]) == {"revoke", "delete_secret"}
        status_write = next(c for c in kube.calls if c[0] == "patch_status")
        assert status_write[2] is None  # a terminal phase lands whatever the resourceVersion
        assert status_write[3]["phase"] == "Completed"
        assert ("revoke", jti) in kube.calls
        assert r.scheduler.deadline((w.NS, "t"), "expire") is None
        assert (w.NS, "t") not in r.index.tasks and r.ctx.active == set()

    run(scenario)


def test_expiry_is_measured_on_the_injected_clock() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task()
        await r.reconcile_now(body)
        active = issued_task(r, kube, body)
        kube.calls.clear()
        clock.now = w.NOW + 1200
        await r.reconcile_now(active)
        patch = next(c[3] for c in kube.calls if c[0] == "patch_status")
        assert patch["phase"] == "Expired" and patch["reason"] == "Expired"

    run(scenario)


def test_a_conflict_retries_soon_and_an_api_error_later() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        kube.fail_status = 409
        await r.reconcile_now(w.task())
        assert r.scheduler.deadline((w.NS, "t"), "retry") == w.NOW + 0.05
        assert kube.writes() == ["patch_status"]  # no Secret without its status
        kube.fail_status = 500
        await r.reconcile_now(w.task("u"))
        assert r.scheduler.deadline((w.NS, "u"), "retry") == w.NOW + 1.0

    run(scenario)


def test_a_pending_task_writes_its_status_once() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        r.index.drop_pod(w.NS, "agent-0")
        body = w.task()
        await r.reconcile_now(body)
        patch = next(c[3] for c in kube.calls if c[0] == "patch_status")
        assert patch["phase"] == "Pending" and patch["reason"] == "PodNotFound"
        kube.calls.clear()
        await r.reconcile_now({**body, "status": patch})
        assert kube.writes() == []

    run(scenario)


def test_a_child_reads_its_parent_chain_and_is_denied_when_the_parent_is_gone() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        await r.reconcile_now(w.task("child", delegatedFrom="parent"))
        assert ("get", TASKS, "parent") in kube.calls
        patch = next(c[3] for c in kube.calls if c[0] == "patch_status")
        assert patch["phase"] == "Denied" and patch["reason"] == "ParentRevoked"

    run(scenario)


def _leftover(owner_uid: str, kind: str = names.SECRET_TYPE) -> dict[str, Any]:
    return {
        "type": kind,
        "metadata": {
            "name": "t-credential",
            "namespace": w.NS,
            "labels": {names.TASK_LABEL: "t"},
            "ownerReferences": [
                {
                    "apiVersion": names.API_VERSION,
                    "kind": "AgentTask",
                    "name": "t",
                    "uid": owner_uid,
                    "controller": True,
                }
            ],
        },
    }


def test_a_terminal_task_is_forgotten_and_its_leftover_secret_deleted() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task(phase="Revoked")
        kube.secrets[(w.NS, "t-credential")] = _leftover(body["metadata"]["uid"])
        r.index.secrets[(w.NS, "t-credential")] = "j"
        await r.reconcile_now(body)
        assert kube.writes() == ["delete_secret"]
        assert (w.NS, "t-credential") not in r.index.secrets

    run(scenario)


@pytest.mark.parametrize(("owner", "kind"), [("another-uid", names.SECRET_TYPE), (None, "Opaque")])
def test_an_ended_task_never_deletes_a_secret_it_does_not_own(owner: str | None, kind: str) -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task(phase="Revoked")
        kube.secrets[(w.NS, "t-credential")] = _leftover(owner or body["metadata"]["uid"], kind)
        r.index.secrets[(w.NS, "t-credential")] = "j"
        await r.reconcile_now(body)
        assert "delete_secret" not in kube.writes()
        assert (w.NS, "t-credential") in kube.secrets
        kube.tasks[(w.NS, "t")] = body
        assert await r.resync_secrets() == 0
        assert (w.NS, "t-credential") in kube.secrets

    run(scenario)


def test_the_sweep_removes_a_secret_whose_task_is_gone_and_revokes_its_token() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task()
        await r.reconcile_now(body)
        jti = kube.secrets[(w.NS, "t-credential")]["metadata"]["annotations"][names.JTI_ANNOTATION]
        assert await r.resync_secrets() == 1  # no task in the API's LIST (nor a GET)
        assert (w.NS, "t-credential") not in kube.secrets
        assert ("revoke", jti) in kube.calls

    run(scenario)


def test_deleting_a_live_task_revokes_its_credential_and_rechecks_its_children() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task()
        await r.reconcile_now(body)
        active = issued_task(r, kube, body)
        r.index.put_task((w.NS, "kid"), TaskRef("u", w.SA, None, "Pending", delegated_from="t"))
        kube.calls.clear()
        await r.on_task_event("DELETED", active)
        assert (w.NS, "t-credential") not in kube.secrets
        assert (w.NS, "t") not in r.index.tasks
        await asyncio.sleep(0)
        assert ("get", TASKS, "kid") in kube.calls  # the child is re-read (and is gone)
        assert (w.NS, "kid") not in r.index.tasks

    run(scenario)


# --- the ledger of live credentials ----------------------------------------------------------


async def settle() -> None:
    for _ in range(10):  # background ledger removals: list first, then drop
        await asyncio.sleep(0)


def test_a_lost_status_write_lists_the_ledgered_jti_then_drops_it() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        kube.fail_status = 409
        await r.reconcile_now(w.task())
        await settle()
        ledgered = next(c[2] for c in kube.calls if c[0] == "ledger")
        (jti,) = ledgered
        assert ("revoke", jti) in kube.calls and kube.ledger() == set()

    run(scenario)


def test_ending_a_task_lists_every_ledgered_token_of_it_then_empties_the_ledger() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task()
        await r.reconcile_now(body)
        first = issued_task(r, kube, body)
        rot = r.scheduler.deadline((w.NS, "t"), "rotate")
        assert rot is not None
        clock.now = rot
        kube.calls.clear()
        with rotating_as((w.NS, "t")):
            await r.reconcile_now(first)  # rotation: the old token stays valid for its overlap
        rotated = issued_task(r, kube, first)
        jtis = {first["status"]["credential"]["jti"], rotated["status"]["credential"]["jti"]}
        assert kube.ledger() == jtis
        done = {**rotated, "spec": {**rotated["spec"], "completed": True}}
        await r.reconcile_now(done)
        await settle()
        assert {c[1] for c in kube.calls if c[0] == "revoke"} == jtis
        assert kube.ledger() == set()

    run(scenario)


def test_the_ledger_sweep_lists_what_no_live_task_holds_and_keeps_the_rest() -> None:
    async def scenario(r: Reconciler, kube: FakeKube, clock: Clock) -> None:
        body = w.task()
        await r.reconcile_now(body)
        live = issued_task(r, kube, body)
        live["metadata"]["uid"] = body["metadata"]["uid"]
        kube.tasks[(w.NS, "t")] = live
        await r.reconcile_now(w.task("gone"))  # ledgered, then its task vanishes
        kube.calls.clear()
        assert await r.resync_ledger() == 1
        await settle()
        live_jti = live["status"]["credential"]["jti"]
        revoked = [c[1] for c in kube.calls if c[0] == "revoke"]
        assert len(revoked) == 1 and revoked[0] != live_jti
        assert kube.ledger() == {live_jti}
        clock.now = timeutil.parse(live["status"]["credential"]["expiresAt"])
        assert await r.resync_ledger() == 0  # expired: dropped without listing
        assert kube.ledger() == set()
        assert [c[1] for c in kube.calls if c[0] == "revoke"] == revoked

    run(scenario)
