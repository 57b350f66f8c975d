"""The operator's public HTTPS endpoints: OIDC discovery, JWKS, the revocation list and the
RFC 8693 token exchange (taskwarden.server.exchange decides who gets a token).

Anyone may read these (verifiers fetch them), so they live on their own port
(`ServerSettings.public_port`), apart from admission: this application has no admission
route, and the admission port (taskwarden.server.https) has none of these. Built by
taskwarden.server.https, which owns the TLS material both ports serve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from taskwarden import config, names
from taskwarden.server import exchange as exchange_mod

Jwks = Callable[[], Mapping[str, Any]]
"""The JWKS document to serve."""
Revocations = Callable[[float], Mapping[str, str]]
"""The revocation list ConfigMap data at a time; served is its `revocations.json`."""

DISCOVERY = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks.json"
REVOCATIONS = "/revocations"


def application(
    settings: config.Settings,
    *,
    jwks: Jwks,
    revocations: Revocations,
    clock: Callable[[], float],
    exchange: exchange_mod.Exchange | None = None,
) -> web.Application:
    """The public routes, and nothing else."""

    async def discovery(request: web.Request) -> web.Response:
        issuer = settings.identity.issuer.rstrip("/")
        return web.json_response(
            {
                "issuer": settings.identity.issuer,
                "jwks_uri": f"{issuer}{JWKS_PATH}",
                "id_token_signing_alg_values_supported": [settings.keys.alg],
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
            },
            headers={"Cache-Control": "max-age=300"},
        )

    async def jwks_document(request: web.Request) -> web.Response:
        return web.json_response(jwks(), headers={"Cache-Control": "max-age=60"})

    async def revocation_list(request: web.Request) -> web.Response:
        data = revocations(clock())
        return web.Response(
            text=data["revocations.json"],
            content_type="application/json",
            headers={"Cache-Control": "no-cache"},
        )

    async def token_exchange(request: web.Request) -> web.Response:
        assert exchange is not None
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        status, body = await exchange.answer(form)
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get(DISCOVERY, discovery)
    app.router.add_get(JWKS_PATH, jwks_document)
    app.router.add_get(REVOCATIONS, revocation_list)
    if exchange is not None:
        app.router.add_post(names.EXCHANGE_PATH, token_exchange)
    return app
