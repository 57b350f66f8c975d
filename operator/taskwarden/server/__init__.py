"""The operator's serving side: two HTTPS ports (admission webhooks for the API server only;
apart from them OIDC discovery, JWKS and revocation list for anyone) and the AgentApproval
status controller, started and stopped together.

- `https`: the aiohttp servers and the admission port; `public`: the public endpoints;
  `reads`: the API reads a review needs; `tls`: the serving material in its Secret (and who
  may call admission); `webhook_config`: the webhook configurations;
  `approval_status`: the AgentApproval status controller.

runtime.build() calls `start` with the explicit dependencies (settings, the API client, where
the JWKS and the revocation list come from) and keeps the returned `Server`; Runtime.stop()
stops it. handlers.approval_event calls `on_approval_event`. Nothing here imports the runtime.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from taskwarden import config
from taskwarden.kube import Kube
from taskwarden.server import approval_status, exchange, https

READ_WORKERS: Final = 16
"""Requests in flight at once on the reviews' own API connections (kube.Kube workers)."""


@dataclass
class Server:
    endpoint: https.WebhookServer
    approvals: approval_status.ApprovalStatusController

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.approvals.stop()
        await self.endpoint.stop()


async def start(
    settings: config.Settings,
    kube: Kube,
    *,
    jwks: https.Jwks,
    revocations: https.Revocations,
    signer: exchange.Signer | None = None,
) -> Server:
    """TLS, the HTTPS server, then (if managed) the webhook configurations."""
    server = Server(
        https.WebhookServer(
            settings,
            kube,
            jwks=jwks,
            revocations=revocations,
            reader=Kube(workers=READ_WORKERS),
            signer=signer,
        ),
        approval_status.ApprovalStatusController(kube),
    )
    try:
        await server.endpoint.start()
    except BaseException:
        await server.stop()
        raise
    return server


async def on_approval_event(
    server: object, event_type: str | None, body: Mapping[str, Any]
) -> None:
    """For handlers.approval_event: keep the approval's status current. Never raises; does
    nothing when no server runs (`server` is what `start` returned, or None)."""
    if isinstance(server, Server):
        await server.approvals.on_event(event_type, body)
