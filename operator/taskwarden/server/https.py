"""The operator's HTTPS endpoint: admission webhooks, OIDC discovery, JWKS and revocation list.

Started by `taskwarden.server.start`. For each admission request it reads what the review needs
(`reads.gather`), lets the pure `admission.decide` answer, and records metrics and, for a
refusal, a log line and an audit record; it never answers HTTP 500. The JWKS and revocation
list it serves come from callables passed in, so the server knows nothing of the runtime.
Every hour it renews the TLS material (or adopts another replica's) and the webhook
configurations.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from taskwarden import admission, audit, config, metrics, names, pki
from taskwarden.kube import Kube
from taskwarden.server import exchange, reads, tls, webhook_config

log = logging.getLogger(__name__)
MAINTAIN_INTERVAL: Final = 3600.0
MAX_BODY: Final = 16 * 1024 * 1024

Jwks = Callable[[], Mapping[str, Any]]
"""The JWKS document to serve."""
Revocations = Callable[[float], Mapping[str, str]]
"""The revocation list ConfigMap data at a time; served is its `revocations.json`."""


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
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.tls = await tls.ensure_tls(self.kube, self.settings, self.clock())
        self.ssl = tls.ssl_context(self.tls)
        app = web.Application(client_max_size=MAX_BODY)
        for name in admission.WEBHOOKS:
            app.router.add_post(f"/{name}", self._handler(name))
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        app.router.add_get("/revocations", self._revocations)
        if self.exchange is not None:
            app.router.add_post(names.EXCHANGE_PATH, self._exchange)
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
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.runner is not None:
            await self.runner.cleanup()  # configurations stay: other replicas may serve them
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
                if material != self.tls and self.ssl is not None:
                    tls.load_chain(self.ssl, material)  # new handshakes use the new certificate
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
        response = admission.response(admission.request_uid(body), outcome)
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
        return web.json_response(self.jwks(), headers={"Cache-Control": "max-age=60"})

    async def _revocations(self, request: web.Request) -> web.Response:
        data = self.revocations(self.clock())
        return web.Response(
            text=data["revocations.json"],
            content_type="application/json",
            headers={"Cache-Control": "no-cache"},
        )

    async def _exchange(self, request: web.Request) -> web.Response:
        assert self.exchange is not None
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        status, body = await self.exchange.answer(form)
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})
