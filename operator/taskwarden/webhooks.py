"""The operator's HTTPS endpoint: admission webhooks, OIDC discovery, JWKS and revocation list.

Started by runtime.build() (`start`) and stopped by Runtime.stop(); handlers.approval_event calls
`on_approval_event` to keep AgentApproval status current. This service owns:
- the serving TLS material: a CA and a serving certificate (EC P-256) in Secret
  `taskwarden-webhook-tls` of the operator namespace, shared by every replica, regenerated
  30 days before either expires (the previous CA stays in the bundle meanwhile);
- the Mutating/ValidatingWebhookConfiguration `taskwarden` (created or updated, never deleted);
- an aiohttp server that reads what a review needs from the API (`gather`) and lets the pure
  functions of admission.py decide.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from taskwarden import GROUP, VERSION, admission, audit, config, metrics, timeutil
from taskwarden.kube import APPROVALS, POLICIES, TASKS, ApiError, Kube

if TYPE_CHECKING:
    from taskwarden.runtime import Runtime

log = logging.getLogger(__name__)
TLS_SECRET = "taskwarden-webhook-tls"
CONFIGURATION = "taskwarden"
LABELS = {"app.kubernetes.io/managed-by": "taskwarden"}
CERT_VALIDITY = 365 * 86400.0
RENEW_BEFORE = 30 * 86400.0
MAINTAIN_INTERVAL = 3600.0
MAX_BODY = 16 * 1024 * 1024
READ_WORKERS = 16


# --- TLS material --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSMaterial:
    ca_bundle: str
    """PEM: the current CA first, then the previous CA while it is still valid."""
    cert: str
    key: str


def tls_hosts(settings: config.Settings) -> list[str]:
    """SANs: loopback, the webhook URL's host, and the Service's DNS names when set."""
    hosts = ["127.0.0.1"]
    url_host = urllib.parse.urlsplit(settings.server.webhook_url).hostname
    if url_host:
        hosts.append(url_host)
    svc, ns = settings.server.webhook_service, settings.watch.operator_namespace
    if svc:
        hosts += [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc"]
    return list(dict.fromkeys(hosts))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def generate_tls(hosts: Sequence[str], now: float, previous_bundle: str = "") -> TLSMaterial:
    """A fresh CA and serving certificate for `hosts`, both valid CERT_VALIDITY from `now`."""
    start = dt.datetime.fromtimestamp(now - 300, dt.UTC)
    end = dt.datetime.fromtimestamp(now + CERT_VALIDITY, dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "taskwarden-webhook-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "taskwarden-webhook")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    bundle = _pem(ca)
    with contextlib.suppress(ValueError, IndexError):
        old = x509.load_pem_x509_certificates(previous_bundle.encode())[0]
        if old.not_valid_after_utc.timestamp() > now:
            bundle += _pem(old)  # replicas still serving the old certificate stay trusted
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return TLSMaterial(ca_bundle=bundle, cert=_pem(cert), key=key_pem)


def tls_problem(material: TLSMaterial, hosts: Sequence[str], now: float) -> str | None:
    """Why `material` must be regenerated, or None when it is good for 30 more days."""
    try:
        cert = x509.load_pem_x509_certificate(material.cert.encode())
        ca = x509.load_pem_x509_certificates(material.ca_bundle.encode())[0]
        key = serialization.load_pem_private_key(material.key.encode(), password=None)
    except (ValueError, IndexError, TypeError) as e:
        return f"unreadable ({type(e).__name__})"
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return "the key does not match the certificate"
    if cert.issuer != ca.subject:
        return "the certificate was not issued by the CA"
    for what, c in (("certificate", cert), ("CA", ca)):
        if c.not_valid_after_utc.timestamp() - now < RENEW_BEFORE:
            return f"the {what} expires at {c.not_valid_after_utc.isoformat()}"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the certificate has no subjectAltName"
    missing = [h for h in hosts if _san(h) not in sans]
    if missing:
        return f"the certificate does not name {', '.join(missing)}"
    return None


def _secret_body(namespace: str, material: TLSMaterial, rv: str | None) -> dict[str, Any]:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    metadata: dict[str, Any] = {"name": TLS_SECRET, "namespace": namespace, "labels": LABELS}
    if rv:
        metadata["resourceVersion"] = rv
    return {
        "metadata": metadata,
        "type": "kubernetes.io/tls",
        "data": {
            "ca.crt": b64(material.ca_bundle),
            "tls.crt": b64(material.cert),
            "tls.key": b64(material.key),
        },
    }


def _from_secret(secret: Mapping[str, Any]) -> TLSMaterial:
    data = secret.get("data") or {}

    def text(key: str) -> str:
        with contextlib.suppress(ValueError, TypeError):
            return base64.b64decode(data.get(key) or "").decode()
        return ""

    return TLSMaterial(ca_bundle=text("ca.crt"), cert=text("tls.crt"), key=text("tls.key"))


async def ensure_tls(kube: Kube, settings: config.Settings, now: float) -> TLSMaterial:
    """Load the shared TLS Secret; create it (adopting a racing replica's) or regenerate it."""
    ns, hosts = settings.watch.operator_namespace, tls_hosts(settings)
    for _ in range(5):
        secret = await kube.get_secret(ns, TLS_SECRET)
        if secret is None:
            material = generate_tls(hosts, now)
            try:
                await kube.create_secret(ns, _secret_body(ns, material, None))
                log.info("created webhook TLS Secret %s/%s for %s", ns, TLS_SECRET, hosts)
                return material
            except ApiError as e:
                if e.status != 409:
                    raise
                continue  # another replica created it first: adopt theirs
        current = _from_secret(secret)
        problem = tls_problem(current, hosts, now)
        if problem is None:
            return current
        material = generate_tls(hosts, now, current.ca_bundle)
        rv = (secret.get("metadata") or {}).get("resourceVersion")
        try:
            await kube.replace_secret(ns, TLS_SECRET, _secret_body(ns, material, rv))
            log.info("regenerated webhook TLS Secret %s/%s: %s", ns, TLS_SECRET, problem)
            return material
        except ApiError as e:
            if e.status != 409:
                raise
    raise RuntimeError(f"webhook TLS Secret {ns}/{TLS_SECRET}: too many write conflicts")


def _load_chain(ctx: ssl.SSLContext, material: TLSMaterial) -> None:
    # load_cert_chain only reads files: write them to a private directory for the moment.
    with tempfile.TemporaryDirectory(prefix="taskwarden-tls-") as d:
        cert, key = Path(d) / "tls.crt", Path(d) / "tls.key"
        cert.write_text(material.cert)
        key.touch(mode=0o600)
        key.write_text(material.key)
        ctx.load_cert_chain(str(cert), str(key))


def ssl_context(material: TLSMaterial) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, material)
    return ctx


# --- Webhook configurations ----------------------------------------------------------------------


def webhook_configurations(
    settings: config.Settings, ca_bundle: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(MutatingWebhookConfiguration, ValidatingWebhookConfiguration) named `taskwarden`."""
    op_ns = settings.watch.operator_namespace
    exprs: list[dict[str, Any]] = [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": sorted({"kube-system", op_ns}),
        }
    ]
    if settings.watch.namespaces:
        exprs.append(
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": sorted(settings.watch.namespaces),
            }
        )
    bundle = base64.b64encode(ca_bundle.encode()).decode()

    def client_config(path: str) -> dict[str, Any]:
        if settings.server.webhook_url:
            return {"url": f"{settings.server.webhook_url.rstrip('/')}/{path}", "caBundle": bundle}
        return {
            "service": {
                "name": settings.server.webhook_service,
                "namespace": op_ns,
                "port": 443,
                "path": f"/{path}",
            },
            "caBundle": bundle,
        }

    def hook(
        path: str, resource: str, operations: list[str], failure: str, *, enforce: bool = False
    ) -> dict[str, Any]:
        group, version = ("", "v1") if resource == "pods" else (GROUP, VERSION)
        selector: dict[str, Any] = {"matchExpressions": exprs}
        if enforce:
            selector = {**selector, "matchLabels": {"taskwarden.dev/enforce": "true"}}
        verb, _, _ = path.partition("-")
        return {
            "name": f"{resource}.{verb}.taskwarden.dev",
            "clientConfig": client_config(path),
            "rules": [
                {
                    "apiGroups": [group],
                    "apiVersions": [version],
                    "operations": operations,
                    "resources": [resource],
                    "scope": "Namespaced",
                }
            ],
            "failurePolicy": failure,
            "matchPolicy": "Equivalent",
            "namespaceSelector": selector,
            "objectSelector": {},
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
        }

    mutating = [
        hook(admission.MUTATE_TASKS, "agenttasks", ["CREATE", "UPDATE"], "Fail"),
        hook(admission.MUTATE_APPROVALS, "agentapprovals", ["CREATE", "UPDATE"], "Fail"),
        hook(admission.MUTATE_PODS, "pods", ["CREATE"], "Ignore"),
    ]
    mutating[0]["reinvocationPolicy"] = "Never"
    mutating[1]["reinvocationPolicy"] = "Never"
    mutating[2]["reinvocationPolicy"] = "IfNeeded"  # idempotent: mounts later containers too
    validating = [
        hook(admission.VALIDATE_TASKS, "agenttasks", ["CREATE", "UPDATE"], "Fail"),
        hook(admission.VALIDATE_APPROVALS, "agentapprovals", ["CREATE", "UPDATE"], "Fail"),
        hook(admission.VALIDATE_PODS, "pods", ["CREATE"], "Fail", enforce=True),
    ]
    metadata = {"name": CONFIGURATION, "labels": LABELS}
    return (
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": metadata,
            "webhooks": mutating,
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": metadata,
            "webhooks": validating,
        },
    )


# --- Reading what a review needs -----------------------------------------------------------------


async def _task_or_none(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return await kube.get(TASKS, ns, name)
    except ApiError as e:
        if e.status == 404:
            return None
        raise


async def gather(
    kube: Kube, webhook: str, body: Any, *, consistent: bool = False
) -> admission.Facts:
    """Read from the API what `admission.needs` asks for. Never raises: errors land in
    Facts.error and the review denies (fail closed).

    Policies come from the API, not from the operator's index, so a standby replica (whose
    watches are paused) cannot decide by a stale policy. By default they are read from the
    apiserver's watch cache (milliseconds behind; a consistent LIST waits up to ~100 ms);
    `handle` repeats a refusal's reads with `consistent=True`, so a policy created just before
    the task is never missed."""
    need = admission.needs(webhook, body)
    if need is None or not need.namespace:
        return admission.Facts()
    ns = need.namespace

    async def policies() -> tuple[dict[str, Any], ...]:
        if not need.policies:
            return ()
        read = kube.list if consistent else kube.list_cached
        return tuple(await read(POLICIES, ns))

    async def tasks() -> dict[str, dict[str, Any] | None]:
        found = dict(
            zip(
                need.tasks,
                await asyncio.gather(*(_task_or_none(kube, ns, n) for n in need.tasks)),
                strict=True,
            )
        )
        if need.follow_delegation:
            for start in need.tasks:
                name = admission.delegated_from(found.get(start))
                while name and name not in found and len(found) < admission.MAX_CHAIN:
                    found[name] = await _task_or_none(kube, ns, name)
                    name = admission.delegated_from(found[name])
        return found

    try:
        pols, found = await asyncio.gather(policies(), tasks())
    except ApiError as e:
        return admission.Facts(
            error=f"could not read AgentPolicies or AgentTasks of namespace {ns} from the "
            f"Kubernetes API ({e.status} {e.reason}); try again"
        )
    except Exception as e:
        return admission.Facts(
            error=f"could not read AgentPolicies or AgentTasks of namespace {ns} "
            f"({type(e).__name__}); try again"
        )
    return admission.Facts(policies=pols, tasks=found)


# --- The service ---------------------------------------------------------------------------------


class WebhookService:
    """TLS material, webhook configurations and the HTTPS server of one operator process."""

    def __init__(
        self,
        rt: Runtime,
        clock: Callable[[], float] = time.time,
        reader: Kube | None = None,
    ) -> None:
        self.rt, self.settings, self.kube, self.clock = rt, rt.settings, rt.kube, clock
        self.reader = reader or rt.kube
        """Client for the reads of a review: its own connections and threads (see `start`),
        so admission latency does not queue behind the reconciler's writes."""
        self.tls: TLSMaterial | None = None
        self.ssl: ssl.SSLContext | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._pending: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.tls = await ensure_tls(self.kube, self.settings, self.clock())
        self.ssl = ssl_context(self.tls)
        app = web.Application(client_max_size=MAX_BODY)
        for name in admission.WEBHOOKS:
            app.router.add_post(f"/{name}", self._handler(name))
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        app.router.add_get("/revocations", self._revocations)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        host = os.environ.get("TASKWARDEN_BIND", "0.0.0.0")  # noqa: S104 - the apiserver calls in
        site = web.TCPSite(
            self.runner,
            host,
            self.settings.server.webhook_port,
            ssl_context=self.ssl,
            backlog=1024,
        )
        await site.start()
        self.port = self.settings.server.webhook_port
        log.info("webhook server listening on https://%s:%d", host, self.port)
        if self.settings.server.manage_webhooks:
            await self.ensure_configurations()
        self._tasks.append(asyncio.create_task(self._maintain()))

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for t in [*self._tasks, *self._pending]:
            t.cancel()
        for t in [*self._tasks, *self._pending]:
            with contextlib.suppress(BaseException):
                await t
        if self.runner is not None:
            await self.runner.cleanup()  # configurations stay: other replicas may serve them
        if self.reader is not self.kube:
            self.reader.close()

    async def ensure_configurations(self) -> None:
        assert self.tls is not None
        if not (self.settings.server.webhook_url or self.settings.server.webhook_service):
            # Crash-looping would also stop revocation; refuse loudly instead.
            log.error(
                "webhook configurations not registered: set TASKWARDEN_WEBHOOK_URL or "
                "TASKWARDEN_WEBHOOK_SERVICE (requester binding and approvals are NOT enforced)"
            )
            return
        mutating, validating = webhook_configurations(self.settings, self.tls.ca_bundle)
        await self.kube.put_webhook_configuration("mutating", mutating)
        await self.kube.put_webhook_configuration("validating", validating)

    async def _maintain(self) -> None:
        """Renew the certificate (or adopt another replica's), keep the configurations current."""
        while True:
            await asyncio.sleep(MAINTAIN_INTERVAL)
            try:
                material = await ensure_tls(self.kube, self.settings, self.clock())
                if material != self.tls and self.ssl is not None:
                    _load_chain(self.ssl, material)  # new handshakes use the new certificate
                    self.tls = material
                    log.info("webhook server now serves the renewed certificate")
                if self.settings.server.manage_webhooks:
                    await self.ensure_configurations()
            except Exception:
                log.exception("webhook TLS/configuration maintenance failed; will retry")

    # ------------------------------------------------------------------ HTTP handlers

    def _handler(self, webhook: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            return await self.handle(webhook, request)

        return handle

    async def handle(self, webhook: str, request: web.Request) -> web.Response:
        started = time.perf_counter()
        body: Any = None
        with contextlib.suppress(Exception):
            body = await request.json()
        failed = False
        try:
            facts = await gather(self.reader, webhook, body)
            outcome = admission.decide(webhook, body, facts)
            need = admission.needs(webhook, body)
            if not outcome.allowed and need is not None and need.policies:
                # Refusals are rare: confirm against a consistent read before refusing.
                facts = await gather(self.reader, webhook, body, consistent=True)
                outcome = admission.decide(webhook, body, facts)
        except Exception as e:  # never an HTTP 500: the apiserver gets a clear refusal
            log.exception("admission %s failed", webhook)
            failed = True
            outcome = admission.Outcome(
                False, f"request.object: the {webhook} webhook failed ({type(e).__name__})", 400
            )
        response = admission.envelope(admission.request_uid(body), outcome)
        metrics.admission_duration.labels(webhook=webhook).observe(time.perf_counter() - started)
        metrics.admission_requests.labels(
            webhook=webhook, allowed="error" if failed else ("true" if outcome.allowed else "false")
        ).inc()
        if not outcome.allowed:
            self._record_denial(webhook, body, outcome)
        return web.json_response(response)

    def _record_denial(self, webhook: str, body: Any, outcome: admission.Outcome) -> None:
        with contextlib.suppress(Exception):
            req = admission.parse(body)
            log.info(
                "admission %s denied %s %s/%s by %s: %s",
                webhook,
                req.operation,
                req.namespace,
                req.name,
                req.username,
                outcome.message,
            )
            metadata = req.obj.get("metadata") or {}
            audit.emit(
                audit.AuditRecord(
                    event="admission-denied",
                    namespace=req.namespace,
                    name=req.name,
                    uid=str(metadata.get("uid") or ""),
                    requester=req.username,
                    reason=webhook,
                    message=outcome.message,
                ),
                self.clock(),
            )

    async def _discovery(self, request: web.Request) -> web.Response:
        issuer = self.settings.identity.issuer.rstrip("/")
        return web.json_response(
            {
                "issuer": self.settings.identity.issuer,
                "jwks_uri": f"{issuer}/.well-known/jwks.json",
                "id_token_signing_alg_values_supported": [self.settings.keys.alg],
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
            },
            headers={"Cache-Control": "max-age=300"},
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.rt.keys.jwks(), headers={"Cache-Control": "max-age=60"})

    async def _revocations(self, request: web.Request) -> web.Response:
        data = self.rt.revocations.list.to_configmap_data(self.clock())
        return web.Response(
            text=data["revocations.json"],
            content_type="application/json",
            headers={"Cache-Control": "no-cache"},
        )

    # ------------------------------------------------------------------ AgentApproval status

    async def approval_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Write status {approver, approvedAt, expiresAt, valid, reason}; re-check at expiry."""
        md = body.get("metadata") or {}
        ns, name = md.get("namespace"), md.get("name")
        if not ns or not name:
            return
        timer = self._timers.pop((ns, name), None)
        if timer is not None:
            timer.cancel()
        if event_type == "DELETED":
            return
        task_name = (body.get("spec") or {}).get("taskName") or ""
        task = await _task_or_none(self.kube, ns, task_name) if task_name else None
        policies = await self.kube.list_cached(POLICIES, ns)
        now = self.clock()
        new = admission.approval_status(body, task, policies, now)
        old = dict(body.get("status") or {})
        if any(old.get(k) != v for k, v in new.items()):
            await self.kube.patch_status(APPROVALS, ns, name, new)
            if new["valid"] and not old.get("valid") and task is not None:
                self._audit_approval(body, task, new, now)
        expires = new.get("expiresAt")
        if new["valid"] and expires:
            delay = max(0.0, timeutil.parse(expires) - now) + 0.5
            self._timers[(ns, name)] = asyncio.get_running_loop().call_later(
                delay, self._recheck, ns, name
            )

    def _recheck(self, ns: str, name: str) -> None:
        async def run() -> None:
            try:
                body = await self.kube.get(APPROVALS, ns, name)
            except ApiError as e:
                if e.status != 404:
                    log.warning("re-reading approval %s/%s failed: %s", ns, name, e)
                return
            await on_approval_event(self.rt, "MODIFIED", body)

        t = asyncio.create_task(run())
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)

    def _audit_approval(
        self, body: Mapping[str, Any], task: Mapping[str, Any], st: Mapping[str, Any], now: float
    ) -> None:
        tmd, spec = task.get("metadata") or {}, body.get("spec") or {}
        audit.emit(
            audit.AuditRecord(
                event="approved" if spec.get("decision") == "approve" else "approval-denied",
                namespace=str(tmd.get("namespace") or ""),
                name=str(tmd.get("name") or ""),
                uid=str(tmd.get("uid") or ""),
                approver=str(st.get("approver") or ""),
                reason=str(spec.get("reason") or ""),
                message=f"AgentApproval {(body.get('metadata') or {}).get('name')}: "
                f"{st.get('reason')}; valid until {st.get('expiresAt')}",
            ),
            now,
        )


def _plain(value: Any) -> Any:
    # kopf hands out Mapping views; the status comparison and the API want plain dicts.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def start(rt: Runtime) -> WebhookService:
    """Called by runtime.build(): TLS, server, then (if managed) the webhook configurations."""
    service = WebhookService(rt, reader=Kube(workers=READ_WORKERS))
    try:
        await service.start()
    except BaseException:
        await service.stop()
        raise
    return service


async def on_approval_event(rt: Runtime, event_type: str | None, body: Mapping[str, Any]) -> None:
    """For handlers.approval_event: keep the approval's status current. Never raises."""
    service = rt.extras.get("webhooks")
    if not isinstance(service, WebhookService):
        return
    try:
        await service.approval_event(event_type, _plain(body))
    except Exception as e:
        md = body.get("metadata") or {}
        log.warning(
            "status of AgentApproval %s/%s not written: %s", md.get("namespace"), md.get("name"), e
        )
