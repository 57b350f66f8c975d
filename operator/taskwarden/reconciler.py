"""The AgentTask state machine: attest, decide, issue, rotate, expire and revoke.

Called by handlers.py (watch events of tasks, pods, policies, approvals) and by its own
scheduler (expiry and rotation deadlines, retries). One lock per task serialises all of them in
this process; across processes, every move to Active is a status write conditioned on the
resourceVersion that was read, so two operators can never both issue for one task.

Order of writes when issuing: status (names the new jti) first, then the Secret. When revoking:
the jti goes on the revocation list and the Secret is deleted, then status. A crash between any
two writes is repaired by the next reconcile (start-up resync or the periodic sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from taskwarden import (
    approvals,
    audit,
    delivery,
    identity,
    lifecycle,
    metrics,
    policy,
    status,
    timeutil,
)
from taskwarden.config import Settings
from taskwarden.credentials import tokens
from taskwarden.index import Index, TaskRef
from taskwarden.kube import TASKS, ApiError, Kube
from taskwarden.publishing import KeyManager, RevocationPublisher

log = logging.getLogger(__name__)
Key = tuple[str, str]
REQUESTER_ANNOTATION = "taskwarden.dev/requester"
REVOKE_ANNOTATION = "taskwarden.dev/revoke"
"""Set (e.g. by `taskwarden revoke`) to revoke a task at once; the value is the reason."""
RETRY_DELAY = 1.0
SECRET_GRACE = 3.0
"""Seconds after an issue during which a missing Secret is awaited, not reissued."""


@dataclass(frozen=True)
class Verdict:
    """Outcome of the checks for a live task: what phase it should be in, and why."""

    phase: str  # Active | Pending | AwaitingApproval | Denied | Revoked
    reason: str
    message: str
    decision: policy.Decision | None = None
    attestation: identity.Attestation | None = None
    approval: approvals.ApprovalState | None = None
    parent_expires_at: float | None = None
    act: dict[str, Any] | None = None


def _meta(body: Mapping[str, Any]) -> tuple[str, str, str]:
    md = body["metadata"]
    return md["namespace"], md["name"], md.get("uid", "")


def _requester(body: Mapping[str, Any]) -> str:
    ann = (body.get("metadata") or {}).get("annotations") or {}
    raw = ann.get(REQUESTER_ANNOTATION, "")
    return str(approvals.requester_username(raw))


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        index: Index,
        keys: KeyManager,
        revocations: RevocationPublisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube, self.settings, self.index = kube, settings, index
        self.keys, self.revocations, self.clock = keys, revocations, clock
        self.scheduler = lifecycle.Scheduler(self._on_deadline, clock)
        self._locks: dict[Key, list[Any]] = {}
        self._active: set[Key] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self.instance = socket.gethostname()
        self.active = asyncio.Event()
        """Set while this replica is the active one (always, when standalone)."""

    # ------------------------------------------------------------------ entry points

    @contextlib.asynccontextmanager
    async def _lock(self, key: Key) -> AsyncIterator[None]:
        """Serialise all work on one task in this process. Locks exist only while in use, so
        10,000 idle tasks hold none."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._locks.pop(key, None)

    async def on_task_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        await self.active.wait()
        key = _meta(body)[:2]
        if event_type == "DELETED":
            async with self._lock(key):
                await self._on_deleted(body)
            return
        async with self._lock(key):
            await self._guarded(key, body)

    async def refresh(self, key: Key) -> None:
        """Re-read a task and reconcile it: after a pod, policy, approval or parent change."""
        await self.active.wait()
        async with self._lock(key):
            try:
                body = await self.kube.get(TASKS, *key)
            except ApiError as e:
                if e.status == 404:
                    self._forget(key)
                    return
                raise
            await self._guarded(key, body)

    def refresh_soon(self, keys: list[Key]) -> None:
        for key in keys:
            self._spawn(self.refresh(key))

    async def _on_deadline(self, key: Key, kind: str) -> None:
        await self.refresh(key)

    async def reconcile_now(self, body: Mapping[str, Any]) -> None:
        """Reconcile a task body read by the start-up resync (the caller knows it is active)."""
        key = _meta(body)[:2]
        async with self._lock(key):
            await self._guarded(key, body)

    async def _guarded(self, key: Key, body: Mapping[str, Any]) -> None:
        try:
            await self._reconcile(body)
        except ApiError as e:
            if e.status == 409:
                # Someone else wrote first (the task changed, or another replica): re-read.
                self.scheduler.schedule(key, "retry", self.clock() + 0.05)
            elif e.status == 404:
                self.scheduler.schedule(key, "retry", self.clock() + RETRY_DELAY)
            else:
                metrics.reconcile_errors.labels(stage="api").inc()
                log.warning("reconciling %s/%s failed: %s; retrying", *key, e)
                self.scheduler.schedule(key, "retry", self.clock() + RETRY_DELAY)
        except Exception:
            metrics.reconcile_errors.labels(stage="internal").inc()
            log.exception("reconciling %s/%s failed; retrying", *key)
            self.scheduler.schedule(key, "retry", self.clock() + RETRY_DELAY * 5)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    def _forget(self, key: Key) -> None:
        self.scheduler.cancel(key)
        self.index.drop_task(key)
        self._active.discard(key)
        metrics.active_credentials.set(len(self._active))

    # ------------------------------------------------------------------ the state machine

    async def _reconcile(self, body: Mapping[str, Any]) -> None:
        ns, name, uid = _meta(body)
        key = (ns, name)
        spec = body.get("spec") or {}
        st = body.get("status") or {}
        phase = st.get("phase")
        now = self.clock()

        if phase in status.TERMINAL:
            self._forget(key)
            secret = delivery.secret_name(name)
            if (ns, secret) in self.index.secrets:
                await self._drop_secret(ns, name)
            return

        self.index.put_task(
            key,
            TaskRef(
                uid=uid,
                service_account=(spec.get("agent") or {}).get("serviceAccountName", ""),
                pod_name=(spec.get("agent") or {}).get("podName"),
                phase=phase,
                delegated_from=spec.get("delegatedFrom"),
            ),
        )
        try:
            req = policy.task_request(ns, name, spec)
        except ValueError as e:
            await self._terminate(body, "Failed", "InvalidSpec", str(e), trigger_at=now)
            return
        expires_at = self._expires_at(body, req)

        if spec.get("completed"):
            await self._terminate(
                body, "Completed", "Completed", "the task was marked completed", trigger_at=now
            )
            return
        revoke_reason = (body["metadata"].get("annotations") or {}).get(REVOKE_ANNOTATION)
        if revoke_reason:
            await self._terminate(
                body,
                "Revoked",
                "RevokedByUser",
                f"revoked on request: {revoke_reason}",
                trigger_at=now,
            )
            return
        if now >= expires_at:
            await self._terminate(
                body,
                "Expired",
                "Expired",
                f"the task expired at {timeutil.rfc3339(expires_at)}",
                trigger_at=expires_at,
            )
            return
        self.scheduler.schedule(key, "expire", expires_at)

        verdict = await self._check(body, req, now)
        if verdict.phase == "Active" and phase == "Active":
            await self._keep_active(body, req, verdict, expires_at, now)
        elif verdict.phase == "Active":
            await self._issue(body, req, verdict, expires_at, kind="issue")
        elif (
            phase == "Active"
            and verdict.phase == "AwaitingApproval"
            and ((body.get("status") or {}).get("decision") or {}).get("needsApproval")
        ):
            # It was approved and the approval no longer holds: expired or withdrawn.
            reason = (
                "ApprovalExpired" if self.index.approvals_for(ns, name) else "ApprovalWithdrawn"
            )
            await self._terminate(
                body, "Revoked", reason, verdict.message, trigger_at=now, verdict=verdict
            )
        elif phase == "Active" and verdict.phase in ("Revoked", "Denied"):
            await self._terminate(
                body, "Revoked", verdict.reason, verdict.message, trigger_at=now, verdict=verdict
            )
        elif verdict.phase in ("Revoked", "Denied"):
            await self._terminate(
                body, "Denied", verdict.reason, verdict.message, trigger_at=now, verdict=verdict
            )
        else:
            await self._wait(body, verdict, expires_at, now)

    def _expires_at(self, body: Mapping[str, Any], req: policy.TaskRequest) -> float:
        st = body.get("status") or {}
        if st.get("expiresAt"):
            return timeutil.parse(st["expiresAt"])
        created = timeutil.parse(body["metadata"]["creationTimestamp"])
        return lifecycle.expiry(created, req.ttl)

    async def _check(self, body: Mapping[str, Any], req: policy.TaskRequest, now: float) -> Verdict:
        """Policy, then identity, then delegation and approval: the first failing check wins."""
        ns, name, _ = _meta(body)
        spec, st = body.get("spec") or {}, body.get("status") or {}
        decision = policy.evaluate(req, self.index.policies_in(ns))
        metrics.policy_decisions.labels(decision="allow" if decision.allowed else "deny").inc()
        if not decision.allowed:
            reason = "PolicyChanged" if st.get("phase") == "Active" else decision.reason
            return Verdict("Denied", reason, decision.message, decision=decision)

        agent = spec.get("agent") or {}
        recorded = (st.get("identity") or {}).get("podUID") if agent.get("podName") else None
        att = identity.attest(
            trust_domain=self.settings.identity.trust_domain,
            namespace=ns,
            service_account=agent.get("serviceAccountName", ""),
            pod_name=agent.get("podName"),
            recorded_uid=recorded,
            pods=self.index.pods_in(ns),
        )
        metrics.identity_verifications.labels(result="ok" if att.ok else att.reason).inc()
        if not att.ok:
            if st.get("phase") == "Active":
                return Verdict("Revoked", "PodGone", att.message, decision, att)
            return Verdict("Pending", att.reason, att.message, decision, att)

        parent_expires_at, act = None, None
        if req.delegated_from:
            d = await self._delegation(body, req, decision)
            if isinstance(d, Verdict):
                return d
            parent_expires_at, act = d

        approval = None
        if decision.needs_approval:
            pol = self.index.policies.get(ns, {}).get(decision.policy or "")
            approval = approvals.state(
                task_name=name,
                spec_hash=policy.spec_hash(spec),
                requester=_requester(body),
                policy=pol,
                approvals=self.index.approvals_for(ns, name),
                now=now,
            )
            if approval.denied:
                return Verdict(
                    "Denied", "ApprovalDenied", approval.message, decision, att, approval
                )
            if not approval.approved:
                return Verdict(
                    "AwaitingApproval", approval.reason, approval.message, decision, att, approval
                )
        return Verdict(
            "Active", "Issued", decision.message, decision, att, approval, parent_expires_at, act
        )

    async def _delegation(
        self, body: Mapping[str, Any], req: policy.TaskRequest, decision: policy.Decision
    ) -> Verdict | tuple[float, dict[str, Any]]:
        """A child must narrow an Active parent; returns (parent expiry, act chain)."""
        ns = body["metadata"]["namespace"]
        chain: list[Mapping[str, Any]] = []
        parent_name: str | None = req.delegated_from
        while parent_name:
            try:
                parent = await self.kube.get(TASKS, ns, parent_name)
            except ApiError as e:
                if e.status != 404:
                    raise
                return Verdict("Revoked", "ParentRevoked", f"parent task {parent_name} is gone")
            chain.append(parent)
            if len(chain) > 8:
                return Verdict("Denied", "DelegationTooDeep", "spec.delegatedFrom chain too deep")
            parent_name = (parent.get("spec") or {}).get("delegatedFrom")
        parent = chain[0]
        pst = parent.get("status") or {}
        if pst.get("phase") != "Active":
            if pst.get("phase") in status.TERMINAL:
                return Verdict(
                    "Revoked",
                    "ParentRevoked",
                    f"parent task {req.delegated_from} is {pst.get('phase')}",
                )
            return Verdict(
                "Pending", "ParentNotActive", f"parent task {req.delegated_from} is not Active yet"
            )
        parent_req = policy.task_request(ns, parent["metadata"]["name"], parent.get("spec") or {})
        ppol_name = (pst.get("decision") or {}).get("policy") or ""
        ppol = self.index.policies.get(ns, {}).get(ppol_name) or {}
        deleg = (ppol.get("spec") or {}).get("delegation") or {}
        if not deleg.get("allowed", False):
            return Verdict(
                "Denied",
                "DelegationNotAllowed",
                f"policy {ppol_name} of the parent task does not allow delegation "
                "(spec.delegation.allowed)",
            )
        parent_exp = timeutil.parse(pst["expiresAt"])
        violation = policy.narrowing_violation(
            req,
            parent_req,
            parent_depth=len(chain) - 1,
            max_depth=int(deleg.get("maxDepth", 1)),
            child_expires_at=parent_exp,
            parent_expires_at=parent_exp,
        )
        if violation:
            return Verdict("Denied", "NotANarrowing", violation)
        act: dict[str, Any] | None = None
        for ancestor in reversed(chain):
            ast = ancestor.get("status") or {}
            a_md = ancestor["metadata"]
            act = tokens.actor(
                spiffe_id=(ast.get("identity") or {}).get("spiffeID")
                or identity.spiffe_id(
                    self.settings.identity.trust_domain,
                    ns,
                    ((ancestor.get("spec") or {}).get("agent") or {}).get("serviceAccountName", ""),
                ),
                task={"namespace": ns, "name": a_md["name"], "uid": a_md.get("uid", "")},
                parent_act=act,
            )
        assert act is not None
        return parent_exp, act

    # ------------------------------------------------------------------ transitions

    async def _wait(
        self, body: Mapping[str, Any], verdict: Verdict, expires_at: float, now: float
    ) -> None:
        """Pending or AwaitingApproval: write status only when something changed."""
        ns, name, _ = _meta(body)
        st = body.get("status") or {}
        if st.get("credential", {}).get("jti"):
            # Back from Active (approval withdrawn or now required): the credential goes.
            await self._revoke_credential(body, verdict.reason, trigger_at=now)
        if (
            st.get("phase") == verdict.phase
            and st.get("reason") == verdict.reason
            and st.get("expiresAt")
        ):
            return
        patch = status.transition(
            st,
            verdict.phase,
            verdict.reason,
            verdict.message,
            now,
            generation=body["metadata"].get("generation"),
            identity_ok=verdict.attestation.ok if verdict.attestation else None,
            identity_reason=verdict.attestation.reason if verdict.attestation else "",
            approved=False if verdict.phase == "AwaitingApproval" else None,
            approval_reason=verdict.reason if verdict.phase == "AwaitingApproval" else "",
        )
        patch["expiresAt"] = timeutil.rfc3339(expires_at)
        patch["specHash"] = policy.spec_hash(body.get("spec") or {})
        patch["credential"] = None
        if verdict.decision:
            patch["decision"] = self._decision_status(verdict.decision, now)
        await self.kube.patch_status(
            TASKS, ns, name, patch, resource_version=body["metadata"]["resourceVersion"]
        )
        self._event(body, "Normal", verdict.reason, verdict.message, "Wait")
        audit.emit(
            self._audit_record(
                body,
                "awaiting-approval" if verdict.phase == "AwaitingApproval" else "pending",
                verdict,
            ),
            now,
        )

    async def _keep_active(
        self,
        body: Mapping[str, Any],
        req: policy.TaskRequest,
        verdict: Verdict,
        expires_at: float,
        now: float,
    ) -> None:
        ns, name, _ = _meta(body)
        cred = (body.get("status") or {}).get("credential") or {}
        jti = cred.get("jti")
        self._active.add((ns, name))
        metrics.active_credentials.set(len(self._active))
        skey = (ns, delivery.secret_name(name))
        if self.index.secrets.get(skey) != jti:
            # Not written by this process (another replica, before a restart): look, then act.
            secret = await self.kube.get_secret(*skey)
            held = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(
                delivery.JTI_ANNOTATION
            )
            if held == jti:
                self.index.secrets[skey] = jti
            elif now - timeutil.parse(cred["issuedAt"]) < SECRET_GRACE:
                # The writer of that status may still be writing the Secret: look again soon.
                self.scheduler.schedule(
                    (ns, name), "retry", timeutil.parse(cred["issuedAt"]) + SECRET_GRACE
                )
                return
            else:
                # Missing or holding another token (a crash between the two writes): reissue.
                await self._issue(body, req, verdict, expires_at, kind="reissue")
                return
        if verdict.approval and verdict.approval.expires_at:
            self.scheduler.schedule((ns, name), "approval", verdict.approval.expires_at)
        issued = timeutil.parse(cred["issuedAt"])
        token_exp = timeutil.parse(cred["expiresAt"])
        rot = lifecycle.rotation_at(issued, token_exp, expires_at)
        if rot is None:
            return
        if now >= rot:
            await self._issue(body, req, verdict, expires_at, kind="rotate")
        else:
            self.scheduler.schedule((ns, name), "rotate", rot)

    async def _issue(
        self,
        body: Mapping[str, Any],
        req: policy.TaskRequest,
        verdict: Verdict,
        expires_at: float,
        *,
        kind: str,
    ) -> None:
        started = self.clock()
        ns, name, uid = _meta(body)
        key = (ns, name)
        st = body.get("status") or {}
        att, decision = verdict.attestation, verdict.decision
        assert att is not None and decision is not None and att.spiffe_id
        if verdict.parent_expires_at is not None:
            expires_at = min(expires_at, verdict.parent_expires_at)
        now = self.clock()
        token_exp = lifecycle.token_expiry(now, req.credential_ttl, expires_at)
        if token_exp <= int(now):
            await self._terminate(body, "Expired", "Expired", "the task expired", trigger_at=now)
            return
        key_ = self.keys.active()
        spec = body.get("spec") or {}
        pod = {"name": att.pod_name, "uid": att.pod_uid} if att.pod_name and att.pod_uid else None
        claims = tokens.build_claims(
            issuer=self.settings.identity.issuer,
            spiffe_id=att.spiffe_id,
            audiences=list(req.audiences),
            now=now,
            ttl=req.credential_ttl,
            not_after=token_exp,
            task={"namespace": ns, "name": name, "uid": uid},
            scopes=[dict(s) for s in spec.get("scopes") or []],
            data_class=req.data_class,
            intent=str(spec.get("intent", "")),
            pod=pod,
            act=verdict.act,
        )
        token = tokens.sign(claims, key_, self.keys.jwks(), now=now)
        old = st.get("credential") or {}
        rotations = int(old.get("rotations", 0)) + 1 if kind == "rotate" else 0
        reason = {"issue": "Issued", "rotate": "Rotated", "reissue": "Reissued"}[kind]
        message = (
            f"credential {claims['jti']} issued under policy {decision.policy} rule "
            f"{decision.rule}, valid until {timeutil.rfc3339(claims['exp'])}"
        )
        patch = status.transition(
            st,
            "Active",
            reason,
            message,
            now,
            generation=body["metadata"].get("generation"),
            identity_ok=True,
            approved=True if decision.needs_approval else None,
            approval_reason=(
                f"approved by {verdict.approval.approver}"
                if verdict.approval and verdict.approval.approved
                else ""
            ),
        )
        patch.update(
            {
                "identity": {
                    "spiffeID": att.spiffe_id,
                    "podName": att.pod_name,
                    "podUID": att.pod_uid,
                    "nodeName": att.node_name,
                },
                "decision": self._decision_status(decision, now),
                "credential": {
                    "secretName": delivery.secret_name(name),
                    "jti": claims["jti"],
                    "keyID": key_.kid,
                    "issuedAt": timeutil.rfc3339(claims["iat"]),
                    "expiresAt": timeutil.rfc3339(claims["exp"]),
                    "rotations": rotations,
                },
                "expiresAt": timeutil.rfc3339(expires_at),
                "specHash": policy.spec_hash(spec),
            }
        )
        # Status first, conditioned on what we read: loses (409) to any concurrent writer.
        await self.kube.patch_status(
            TASKS, ns, name, patch, resource_version=body["metadata"]["resourceVersion"]
        )
        if kind == "reissue" and old.get("jti"):
            # The previous token may have reached the pod before the crash: revoke it.
            old_exp = timeutil.parse(old["expiresAt"])
            self.revocations.add(old["jti"], old_exp)
        secret = delivery.credential_secret(
            namespace=ns,
            task_name=name,
            task_uid=uid,
            token=token,
            jti=claims["jti"],
            expires_at=claims["exp"],
            spiffe_id=att.spiffe_id,
            jwks=self.keys.jwks(),
        )
        del token
        await delivery.deliver(self.kube, secret)
        self.index.secrets[(ns, delivery.secret_name(name))] = claims["jti"]
        self._active.add(key)
        metrics.active_credentials.set(len(self._active))
        metrics.credentials_issued.labels(kind=kind).inc()
        if kind == "issue":
            metrics.issuance_duration.observe(self.clock() - started)
        rot = lifecycle.rotation_at(claims["iat"], claims["exp"], expires_at)
        if rot is not None:
            self.scheduler.schedule(key, "rotate", rot)
        self.scheduler.schedule(key, "expire", expires_at)
        self._event(body, "Normal", reason, message, "Issue")
        record = self._audit_record(
            body, {"issue": "issued", "rotate": "rotated", "reissue": "reissued"}[kind], verdict
        )
        audit.emit(
            _with(
                record,
                jti=claims["jti"],
                keyID=key_.kid,
                issuedAt=timeutil.rfc3339(claims["iat"]),
                expiresAt=timeutil.rfc3339(claims["exp"]),
            ),
            now,
        )

    async def _revoke_credential(
        self, body: Mapping[str, Any], reason: str, *, trigger_at: float
    ) -> str | None:
        """Revocation proper: jti listed and Secret deleted, concurrently; returns the jti."""
        ns, name, _ = _meta(body)
        cred = (body.get("status") or {}).get("credential") or {}
        jti = cred.get("jti")
        waits: list[Any] = [self._drop_secret(ns, name)]
        if jti and cred.get("expiresAt"):
            waits.append(self.revocations.add(jti, timeutil.parse(cred["expiresAt"])))
        await asyncio.gather(*waits)
        self._active.discard((ns, name))
        metrics.active_credentials.set(len(self._active))
        if jti:
            metrics.credentials_revoked.labels(reason=reason).inc()
            metrics.revocation_lag.observe(max(0.0, self.clock() - trigger_at))
        return str(jti) if jti else None

    async def _drop_secret(self, ns: str, name: str) -> None:
        await self.kube.delete_secret(ns, delivery.secret_name(name))
        self.index.secrets.pop((ns, delivery.secret_name(name)), None)

    async def _terminate(
        self,
        body: Mapping[str, Any],
        phase: str,
        reason: str,
        message: str,
        *,
        trigger_at: float,
        verdict: Verdict | None = None,
    ) -> None:
        ns, name, _ = _meta(body)
        st = body.get("status") or {}
        jti = await self._revoke_credential(body, reason, trigger_at=trigger_at)
        now = self.clock()
        patch = status.transition(
            st, phase, reason, message, now, generation=body["metadata"].get("generation")
        )
        if verdict and verdict.decision:
            patch["decision"] = self._decision_status(verdict.decision, now)
        if not st.get("expiresAt"):
            with contextlib.suppress(Exception):
                req = policy.task_request(ns, name, body.get("spec") or {})
                patch["expiresAt"] = timeutil.rfc3339(self._expires_at(body, req))
        patch["specHash"] = policy.spec_hash(body.get("spec") or {})
        # Unconditional: a terminal phase must land even if the object moved on meanwhile.
        try:
            await self.kube.patch_status(TASKS, ns, name, patch)
        except ApiError as e:
            if e.status != 404:
                raise
        self._forget((ns, name))
        self._cascade(ns, name)
        self._event(
            body,
            "Normal" if phase in ("Completed", "Expired") else "Warning",
            reason,
            message,
            phase,
        )
        event = {"Completed": "completed", "Expired": "expired", "Denied": "denied"}.get(
            phase, "revoked"
        )
        audit.emit(
            _with(
                self._audit_record(body, event, verdict),
                jti=jti or "",
                reason=reason,
                message=message,
            ),
            now,
        )

    async def _on_deleted(self, body: Mapping[str, Any]) -> None:
        ns, name, _ = _meta(body)
        st = body.get("status") or {}
        if st.get("phase") not in status.TERMINAL:
            await self._revoke_credential(body, "Deleted", trigger_at=self.clock())
            audit.emit(
                _with(
                    self._audit_record(body, "revoked", None),
                    reason="Deleted",
                    jti=(st.get("credential") or {}).get("jti", ""),
                ),
                self.clock(),
            )
        self._forget((ns, name))
        self._cascade(ns, name)

    def _cascade(self, ns: str, name: str) -> None:
        children = self.index.children_of(ns, name)
        if children:
            self.refresh_soon(children)

    # ------------------------------------------------------------------ resync

    async def resync_secrets(self) -> int:
        """Delete credential Secrets whose task is gone, terminal, or holds another jti."""
        ns_filter = self.settings.watch.namespaces
        secrets: list[dict[str, Any]] = []
        if ns_filter:
            for ns in ns_filter:
                secrets += await self.kube.list_secrets(ns, delivery.TASK_LABEL)
        else:
            secrets = await self.kube.list_secrets(None, delivery.TASK_LABEL)
        # One paged LIST of the tasks (uid, phase, jti only) rather than a GET per Secret: at
        # 10,000 credentials that is the difference between half a minute and a few seconds.
        tasks: dict[Key, dict[str, Any]] = {}
        for ns in ns_filter or (None,):
            for t in await self.kube.list_tasks_brief(ns):
                tasks[(t["metadata"]["namespace"], t["metadata"]["name"])] = t
        removed = 0
        seen: set[Key] = set()
        for s in secrets:
            if s.get("type") != delivery.SECRET_TYPE:
                continue
            md = s["metadata"]
            ns, sname = md["namespace"], md["name"]
            task_name = (md.get("labels") or {}).get(delivery.TASK_LABEL, "")
            jti = (md.get("annotations") or {}).get(delivery.JTI_ANNOTATION, "")
            seen.add((ns, sname))
            task = tasks.get((ns, task_name))
            if task is None:
                try:  # created after the LIST?
                    task = await self.kube.get(TASKS, ns, task_name)
                except ApiError as e:
                    if e.status != 404:
                        raise
            tst = (task or {}).get("status") or {}
            live_jti = (tst.get("credential") or {}).get("jti")
            owner_ok = task is not None and any(
                o.get("uid") == task["metadata"].get("uid") for o in md.get("ownerReferences") or []
            )
            if task is None or tst.get("phase") != "Active" or live_jti != jti or not owner_ok:
                if jti and task is None:
                    exp = (md.get("annotations") or {}).get(delivery.EXP_ANNOTATION)
                    if exp:
                        self.revocations.add(jti, timeutil.parse(exp))
                async with self._lock((ns, task_name)):
                    # Re-check under the lock: an issue may have just landed.
                    if self.index.secrets.get((ns, sname)) not in (None, jti) and task:
                        continue
                    await self.kube.delete_secret(ns, sname)
                    self.index.secrets.pop((ns, sname), None)
                removed += 1
                log.info("removed orphaned credential secret %s/%s", ns, sname)
            else:
                self.index.secrets[(ns, sname)] = jti
        for k in list(self.index.secrets):
            if k not in seen:
                self.index.secrets.pop(k, None)
        return removed

    # ------------------------------------------------------------------ explain

    def _decision_status(self, d: policy.Decision, now: float) -> dict[str, Any]:
        return {
            "allowed": d.allowed,
            "needsApproval": d.needs_approval,
            "policy": d.policy,
            "rule": d.rule,
            "reason": f"{d.reason}: {d.message}"[:1024],
            "evaluatedAt": timeutil.rfc3339(int(now)),
        }

    def _audit_record(
        self, body: Mapping[str, Any], event: str, verdict: Verdict | None
    ) -> audit.AuditRecord:
        ns, name, uid = _meta(body)
        st = body.get("status") or {}
        spec = body.get("spec") or {}
        att = verdict.attestation if verdict else None
        ident = st.get("identity") or {}
        d = verdict.decision if verdict else None
        scopes = []
        for s in spec.get("scopes") or []:
            for a in s.get("actions") or []:
                for r in s.get("resources") or []:
                    scopes.append(f"{s.get('tool')}:{a}:{r}")
        return audit.AuditRecord(
            event=event,
            namespace=ns,
            name=name,
            uid=uid,
            spiffeID=(att.spiffe_id if att and att.spiffe_id else ident.get("spiffeID", "")) or "",
            pod={
                "name": (att.pod_name if att else ident.get("podName")) or "",
                "uid": (att.pod_uid if att else ident.get("podUID")) or "",
            },
            requester=_requester(body),
            policy=d.policy if d else (st.get("decision") or {}).get("policy"),
            rule=d.rule if d else (st.get("decision") or {}).get("rule"),
            scopes=scopes,
            dataClass=str(spec.get("dataClass", "")),
            reason=verdict.reason if verdict else "",
            message=verdict.message if verdict else "",
            approver=(verdict.approval.approver if verdict and verdict.approval else "") or "",
        )

    def _event(
        self, body: Mapping[str, Any], type_: str, reason: str, note: str, action: str
    ) -> None:
        ns, name, uid = _meta(body)
        now = self.clock()
        ev = {
            "metadata": {"name": f"{name}.{secrets.token_hex(8)}", "namespace": ns},
            "eventTime": audit.now_rfc3339(now),
            "reportingController": "taskwarden.dev/operator",
            "reportingInstance": self.instance[:128],
            "action": action,
            "reason": reason or "Unknown",
            "type": type_,
            "note": note[:1024],
            "regarding": {
                "apiVersion": f"{body.get('apiVersion', 'taskwarden.dev/v1alpha1')}",
                "kind": "AgentTask",
                "name": name,
                "namespace": ns,
                "uid": uid,
            },
        }

        async def post() -> None:
            try:
                await self.kube.create_event(ns, ev)
            except Exception as e:  # events are best effort; the audit line is the record
                log.debug("event for %s/%s not posted: %s", ns, name, e)

        self._spawn(post())


def _with(record: audit.AuditRecord, **changes: Any) -> audit.AuditRecord:
    return dataclasses.replace(record, **changes)
