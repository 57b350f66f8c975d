"""The operator's two HTTPS ports: admission webhooks, and apart from them the public endpoints.

Started by `taskwarden.server.start`. The admission port (`webhook_port`) serves only
/mutate-* and /validate-*; the public port (`public_port`, taskwarden.server.public) serves
only OIDC discovery, JWKS and the revocation list, whose sources are callables passed in, so
the server knows nothing of the runtime.

Who may ask for a review: with `admission_client_ca` set (the local control plane always sets
it) the TLS handshake requires a client certificate signed by that CA, which only the API
server holds; any other caller is refused before a byte of the review is read. Without it the
caller is unauthenticated (a cluster whose API server presents no client certificate): the
review still runs, because the API server needs its answer, but a refusal's message is a fixed
sentence naming nothing read from the cluster (so a forged AdmissionReview learns no other
namespace's tasks, requesters, hashes or approvers), and no audit record is written.

For each review it reads what the review needs (`reads.gather`), lets the pure
`admission.decide` answer, and records metrics and, for a refusal, a log line and (when
authenticated) an audit record; it never answers HTTP 500. Every hour it renews the TLS
material (or adopts another replica's) and the webhook configurations.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from taskwarden import admission, audit, config, metrics, pki
from taskwarden.kube import Kube
from taskwarden.server import exchange, public, reads, tls, webhook_config

log = logging.getLogger(__name__)
MAINTAIN_INTERVAL: Final = 3600.0
MAX_BODY: Final = 16 * 1024 * 1024

Jwks = public.Jwks
Revocations = public.Revocations
WITHHELD: Final = (
    "denied by Taskwarden admission; the reason is withheld because the operator cannot "
    "authenticate its webhook caller (give the API server a client certificate and set "
    "TASKWARDEN_ADMISSION_CLIENT_CA to see it)"
)
"""A refusal's whole message to an unauthenticated caller: nothing read from the cluster."""


class WebhookServer:
    """TLS material, webhook configurations and the HTTPS server of one operator process."""

    def __init__(
        self,
        settings: config.Settings,
        kube: Kube,
        *,
        jwks: Jwks,
        revocations: Revocations,
        reader: Kube | None = None,
        signer: exchange.Signer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.kube, self.clock = settings, kube, clock
        self.exchange = (
            None
            if signer is None
            else exchange.Exchange(kube, settings.identity.issuer, signer, clock)
        )
        self.jwks, self.revocations = jwks, revocations
        self.reader = reader or kube
        """Client for the reads of a review: its own connections and threads, so admission
        latency does not queue behind the reconciler's writes."""
        self.tls: pki.TLSMaterial | None = None
        self.ssl: ssl.SSLContext | None = None
        """The admission port's context (client certificates required when configured)."""
        self.public_ssl: ssl.SSLContext | None = None
        self.runners: list[web.AppRunner] = []
        self.port = 0
        self.public_port = 0
        self.authenticating = bool(settings.server.admission_client_ca)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        server = self.settings.server
        self.tls = await tls.ensure_tls(self.kube, self.settings, self.clock())
        self.ssl = tls.ssl_context(self.tls, server.admission_client_ca)
        self.public_ssl = tls.ssl_context(self.tls)
        app = web.Application(client_max_size=MAX_BODY)
        for name in admission.WEBHOOKS:
            app.router.add_post(f"/{name}", self._handler(name))
        host = os.environ.get("TASKWARDEN_BIND", "0.0.0.0")  # noqa: S104 - the apiserver calls in
        await self._serve(app, host, server.webhook_port, self.ssl)
        self.port = server.webhook_port
        log.info(
            "admission webhooks on https://%s:%d (%s)",
            host,
            self.port,
            "client certificate required" if self.authenticating else "callers unauthenticated",
        )
        pub = public.application(
            self.settings,
            jwks=self.jwks,
            revocations=self.revocations,
            clock=self.clock,
            exchange=self.exchange,
        )
        await self._serve(pub, host, server.public_port, self.public_ssl)
        self.public_port = server.public_port
        log.info(
            "OIDC discovery, JWKS, revocations and token exchange on https://%s:%d",
            host,
            self.public_port,
        )
        if server.manage_webhooks:
            await self.ensure_configurations()
        self._tasks.append(asyncio.create_task(self._maintain()))

    async def _serve(self, app: web.Application, host: str, port: int, ctx: ssl.SSLContext) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self.runners.append(runner)
        await web.TCPSite(runner, host, port, ssl_context=ctx, backlog=1024).start()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        for runner in self.runners:
            await runner.cleanup()  # configurations stay: other replicas may serve them
        if self.reader is not self.kube:
            self.reader.close()

    async def ensure_configurations(self) -> None:
        assert self.tls is not None
        await webhook_config.register(self.kube, self.settings, self.tls.ca_bundle)

    async def _maintain(self) -> None:
        """Renew the certificate (or adopt another replica's), keep the configurations current."""
        while True:
            await asyncio.sleep(MAINTAIN_INTERVAL)
            try:
                material = await tls.ensure_tls(self.kube, self.settings, self.clock())
                if material != self.tls and self.ssl and self.public_ssl:
                    tls.load_chain(self.ssl, material)  # new handshakes use the new certificate
                    tls.load_chain(self.public_ssl, material)
                    self.tls = material
                    log.info("webhook server now serves the renewed certificate")
                if self.settings.server.manage_webhooks:
                    await self.ensure_configurations()
            except Exception:
                log.exception("webhook TLS/configuration maintenance failed; will retry")

    # ------------------------------------------------------------------ HTTP handlers

    def _handler(self, webhook: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await self.handle(webhook, request)

        return handle

    async def handle(self, webhook: str, request: web.Request) -> web.Response:
        peer = request.transport and request.transport.get_extra_info("peercert")
        if self.authenticating and not peer:
            # The handshake already demands the certificate; never review without one.
            return web.Response(status=401, text="client certificate required\n")
        started = time.perf_counter()
        body: Any = None
        with contextlib.suppress(Exception):
            body = await request.json()
        failed = False
        try:
            facts = await reads.gather(self.reader, webhook, body)
            facts = dataclasses.replace(facts, issuer=self.settings.identity.issuer)
            outcome = admission.decide(webhook, body, facts)
            need = admission.needs(webhook, body)
            if not outcome.allowed and need is not None and need.policies:
                # Refusals are rare: confirm against a consistent read before refusing.
                facts = await reads.gather(self.reader, webhook, body, consistent=True)
                outcome = admission.decide(webhook, body, facts)
        except Exception as e:  # never an HTTP 500: the apiserver gets a clear refusal
            log.exception("admission %s failed", webhook)
            failed = True
            outcome = admission.Outcome(
                False, f"request.object: the {webhook} webhook failed ({type(e).__name__})", 400
            )
        if not outcome.allowed and not self.authenticating:
            self._log_denial(webhook, body, outcome, authenticated=False)
            outcome = admission.Outcome(False, WITHHELD, outcome.code)
        response = admission.response(admission.request_uid(body), outcome)
        metrics.admission_duration.labels(webhook=webhook).observe(time.perf_counter() - started)
        metrics.admission_requests.labels(
            webhook=webhook, allowed="error" if failed else ("true" if outcome.allowed else "false")
        ).inc()
        if not outcome.allowed and self.authenticating:
            self._log_denial(webhook, body, outcome, authenticated=True)
            self._record_denial(body, webhook, outcome)
        return web.json_response(response)

    def _log_denial(
        self, webhook: str, body: Any, outcome: admission.Outcome, *, authenticated: bool
    ) -> None:
        with contextlib.suppress(Exception):
            req = admission.parse(body)
            log.info(
                "admission %s denied %s %r/%r by %r%s: %s",
                webhook,
                req.operation,
                req.namespace,
                req.name,
                req.username,
                "" if authenticated else " (unauthenticated caller, no audit record)",
                outcome.message,
            )

    def _record_denial(self, body: Any, webhook: str, outcome: admission.Outcome) -> None:
        """An audit record, for a review the API server is known to have sent."""
        with contextlib.suppress(Exception):
            req = admission.parse(body)
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
