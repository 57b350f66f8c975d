"""The RFC 8693 token exchange of tasks with `spec.delivery: exchange`: POST /token.

A form with
  grant_type=urn:ietf:params:oauth:grant-type:token-exchange
  subject_token=<the pod's projected, pod-bound ServiceAccount token, audience = the issuer>
  subject_token_type=urn:ietf:params:oauth:token-type:jwt
  resource=taskwarden://<namespace>/<task>      (or audience=, the same URI)
answers {access_token, issued_token_type, token_type: N_A, expires_in}, or an RFC 6749 error
JSON ({error, error_description}, HTTP 400; 503 when the API cannot be read: fail closed).

Checks, in this order, so that a caller that does not authenticate learns nothing of any task:
the form; a TokenReview of the subject token for the audience [issuer] (authenticated, a
ServiceAccount, bound to a pod: pod-name and pod-uid extras); the ServiceAccount's namespace is
the task's; then a fresh read of the task: delivery exchange, the ServiceAccount is the task's
agent, the pod name and UID equal the attested pod (status.identity), phase Active, and a current
credential in status.

The token handed out carries exactly the jti, iat and exp that status names: tasks/issue.py
wrote that jti to the ledger, then status, before any exchange could see it, so no token
exists whose jti the ledger and status do not name (a crash or restart leaves nothing
unknown), and revoking the jti revokes every copy. Rotation: tasks/issue.py rotates the jti on
its usual schedule and the agent exchanges again (taskwarden.agent does so at half life). The
token is signed by the key that signs now, which after a key rotation may differ from the
status keyID. Never logged; an audit record is written only for an authenticated exchange.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from taskwarden import audit, names, policy, timeutil
from taskwarden.credentials import signing, tokens
from taskwarden.kube import TASKS, ApiError, Kube

log = logging.getLogger(__name__)
GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"
POD_NAME_EXTRA: Final = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA: Final = "authentication.kubernetes.io/pod-uid"
SA_PREFIX: Final = "system:serviceaccount:"
MAX_SUBJECT: Final = 16 * 1024

Signer = Callable[[], signing.Signer]


class Refused(Exception):
    """An RFC 6749 error: `error` code, a description naming the rule, and the HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class Caller:
    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str


def target(form: Mapping[str, str]) -> tuple[str, str]:
    """(namespace, task) from `resource` or `audience` `taskwarden://<namespace>/<task>`."""
    raw = form.get("resource") or form.get("audience") or ""
    if not raw:
        raise Refused("invalid_request", "resource: name the task as taskwarden://<ns>/<task>")
    rest = raw.removeprefix(names.EXCHANGE_RESOURCE_PREFIX)
    parts = rest.split("/")
    if rest == raw or len(parts) != 2 or not all(parts):
        raise Refused(
            "invalid_target", f"resource: {raw[:200]!r} is not taskwarden://<namespace>/<task>"
        )
    return parts[0], parts[1]


def check_form(form: Mapping[str, str]) -> str:
    """The subject token, once the form is an RFC 8693 exchange this endpoint serves."""
    if form.get("grant_type") != GRANT_TYPE:
        raise Refused("unsupported_grant_type", f"grant_type: only {GRANT_TYPE} is served")
    if form.get("subject_token_type") != JWT_TYPE:
        raise Refused("invalid_request", f"subject_token_type: must be {JWT_TYPE}")
    subject = form.get("subject_token") or ""
    if not subject or len(subject) > MAX_SUBJECT:
        raise Refused(
            "invalid_request", "subject_token: the pod's ServiceAccount token is required"
        )
    return subject


def caller_of(review: Mapping[str, Any]) -> Caller:
    """The pod-bound ServiceAccount a TokenReview status authenticated, or Refused."""
    if review.get("authenticated") is not True:
        raise Refused(
            "invalid_grant",
            "subject_token: not a valid ServiceAccount token for this issuer's audience "
            "(expired, its pod gone, or another audience)",
        )
    user = review.get("user") or {}
    username = str(user.get("username") or "")
    parts = username.removeprefix(SA_PREFIX).split(":")
    if not username.startswith(SA_PREFIX) or len(parts) != 2:
        raise Refused("invalid_grant", "subject_token: not a ServiceAccount token")
    extra = user.get("extra") or {}
    pod_name = _first(extra.get(POD_NAME_EXTRA))
    pod_uid = _first(extra.get(POD_UID_EXTRA))
    if not pod_name or not pod_uid:
        raise Refused(
            "invalid_grant",
            "subject_token: not bound to a pod; use the projected ServiceAccount token the pod "
            "mutation mounts",
        )
    return Caller(parts[0], parts[1], pod_name, pod_uid)


def _first(values: Any) -> str:
    """The one value of a TokenReview extra ('' when absent or not exactly one string)."""
    ok = isinstance(values, list) and len(values) == 1 and isinstance(values[0], str)
    return str(values[0]) if ok else ""


def check_task(task: Mapping[str, Any] | None, caller: Caller, now: float) -> Mapping[str, Any]:
    """The task's status credential, when `caller` may have its token now; else Refused."""
    spec = (task or {}).get("spec") or {}
    st = (task or {}).get("status") or {}
    if task is None or (spec.get("agent") or {}).get("serviceAccountName") != (
        caller.service_account
    ):
        # The same answer for a task that does not exist and one of another agent.
        raise Refused("invalid_target", "resource: no task of this ServiceAccount has that name")
    if spec.get("delivery") != names.DELIVERY_EXCHANGE:
        raise Refused("invalid_target", "resource: the task's spec.delivery is not exchange")
    ident = st.get("identity") or {}
    if (ident.get("podName"), ident.get("podUID")) != (caller.pod_name, caller.pod_uid):
        raise Refused(
            "invalid_grant",
            f"subject_token: pod {caller.pod_name} ({caller.pod_uid}) is not the task's "
            "attested pod (status.identity)",
        )
    phase = st.get("phase")
    if phase != "Active":
        raise Refused("invalid_grant", f"resource: the task is {phase or 'Pending'}, not Active")
    cred = st.get("credential") or {}
    if not cred.get("jti") or timeutil.parse(str(cred.get("expiresAt") or "")) <= now:
        raise Refused(
            "temporarily_unavailable", "the task's credential is being renewed; retry", 503
        )
    return cred


def claims_of(task: Mapping[str, Any], issuer: str) -> dict[str, Any]:
    """The claims of the credential status names: its jti, iat and exp; everything else as
    tasks/issue.py built them from the spec and the attested identity."""
    meta, spec, st = task["metadata"], task.get("spec") or {}, task.get("status") or {}
    cred, ident = st["credential"], st.get("identity") or {}
    req = policy.task_request(meta["namespace"], meta["name"], spec)
    iat, exp = timeutil.parse(cred["issuedAt"]), timeutil.parse(cred["expiresAt"])
    return tokens.build_claims(
        issuer=issuer,
        spiffe_id=str(ident.get("spiffeID") or ""),
        audiences=list(req.audiences),
        now=iat,
        ttl=exp - iat,
        not_after=exp,
        task={"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
        scopes=[dict(s) for s in spec.get("scopes") or []],
        data_class=req.data_class,
        intent=str(spec.get("intent", "")),
        pod={"name": str(ident["podName"]), "uid": str(ident["podUID"])},
        jti=str(cred["jti"]),
    )


class Exchange:
    """The /token endpoint's logic, apart from HTTP: `answer(form)` -> (status, JSON body)."""

    def __init__(
        self,
        kube: Kube,
        issuer: str,
        signer: Signer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube, self.issuer, self.signer, self.clock = kube, issuer, signer, clock

    async def answer(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            return 200, await self._exchange(form)
        except Refused as r:
            log.info("token exchange refused: %s (%s)", r.error, r.description)
            return r.status, r.body()
        except ApiError as e:
            log.warning("token exchange: the API answered %s; refused", e.status)
            return 503, Refused("temporarily_unavailable", "the API could not be read").body()

    async def _exchange(self, form: Mapping[str, str]) -> dict[str, Any]:
        subject = check_form(form)
        ns, name = target(form)
        caller = caller_of(await self.kube.token_review(subject, [self.issuer]))
        if caller.namespace != ns:
            raise Refused(
                "invalid_target",
                f"resource: a ServiceAccount of namespace {caller.namespace} cannot exchange "
                f"for a task in namespace {ns}",
            )
        try:
            task: dict[str, Any] | None = await self.kube.get(TASKS, ns, name)
        except ApiError as e:
            if e.status != 404:
                raise
            task = None
        now = self.clock()
        cred = check_task(task, caller, now)
        assert task is not None
        claims = claims_of(task, self.issuer)
        token = self.signer().sign(claims, now)
        audit.emit(
            audit.AuditRecord(
                event="credential-exchanged",
                namespace=ns,
                name=name,
                uid=str(task["metadata"]["uid"]),
                spiffeID=claims["sub"],
                pod={"name": caller.pod_name, "uid": caller.pod_uid},
                jti=claims["jti"],
                keyID=str(cred.get("keyID") or ""),
                issuedAt=str(cred["issuedAt"]),
                expiresAt=str(cred["expiresAt"]),
            ),
            now,
        )
        return {
            "access_token": token,
            "issued_token_type": JWT_TYPE,
            "token_type": "N_A",
            "expires_in": max(0, int(claims["exp"] - now)),
        }
