"""The webhook server's TLS material, shared by every replica through one Secret.

Called by taskwarden.server.https at start and hourly. A CA and a serving certificate (EC P-256,
made by taskwarden.pki) live in Secret `taskwarden-webhook-tls` of the operator namespace; they
are regenerated 30 days before either expires, and the previous CA stays in the bundle
meanwhile so replicas still serving the old certificate stay trusted.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import ssl
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from taskwarden import config, pki
from taskwarden.kube import ApiError, Kube
from taskwarden.server import webhook_config

log = logging.getLogger(__name__)
TLS_SECRET: Final = "taskwarden-webhook-tls"


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


def secret_body(namespace: str, material: pki.TLSMaterial, rv: str | None) -> dict[str, Any]:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    metadata: dict[str, Any] = {
        "name": TLS_SECRET,
        "namespace": namespace,
        "labels": dict(webhook_config.LABELS),
    }
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


def from_secret(secret: Mapping[str, Any]) -> pki.TLSMaterial:
    data = secret.get("data") or {}

    def text(key: str) -> str:
        with contextlib.suppress(ValueError, TypeError):
            return base64.b64decode(data.get(key) or "").decode()
        return ""

    return pki.TLSMaterial(ca_bundle=text("ca.crt"), cert=text("tls.crt"), key=text("tls.key"))


async def ensure_tls(kube: Kube, settings: config.Settings, now: float) -> pki.TLSMaterial:
    """Load the shared TLS Secret; create it (adopting a racing replica's) or regenerate it."""
    ns, hosts = settings.watch.operator_namespace, tls_hosts(settings)
    for _ in range(5):
        secret = await kube.get_secret(ns, TLS_SECRET)
        if secret is None:
            material = pki.generate_tls(hosts, now)
            try:
                await kube.create_secret(ns, secret_body(ns, material, None))
                log.info("created webhook TLS Secret %s/%s for %s", ns, TLS_SECRET, hosts)
                return material
            except ApiError as e:
                if e.status != 409:
                    raise
                continue  # another replica created it first: adopt theirs
        current = from_secret(secret)
        problem = pki.tls_problem(current, hosts, now)
        if problem is None:
            return current
        material = pki.generate_tls(hosts, now, current.ca_bundle)
        rv = (secret.get("metadata") or {}).get("resourceVersion")
        try:
            await kube.replace_secret(ns, TLS_SECRET, secret_body(ns, material, rv))
            log.info("regenerated webhook TLS Secret %s/%s: %s", ns, TLS_SECRET, problem)
            return material
        except ApiError as e:
            if e.status != 409:
                raise
    raise RuntimeError(f"webhook TLS Secret {ns}/{TLS_SECRET}: too many write conflicts")


def load_chain(ctx: ssl.SSLContext, material: pki.TLSMaterial) -> None:
    """Serve `material` from `ctx`: new handshakes use it, open connections keep theirs."""
    # load_cert_chain only reads files: write them to a private directory for the moment.
    with tempfile.TemporaryDirectory(prefix="taskwarden-tls-") as d:
        cert, key = Path(d) / "tls.crt", Path(d) / "tls.key"
        cert.write_text(material.cert)
        key.touch(mode=0o600)
        key.write_text(material.key)
        ctx.load_cert_chain(str(cert), str(key))


def ssl_context(material: pki.TLSMaterial, client_ca: str = "") -> ssl.SSLContext:
    """A server context for `material`. With `client_ca` (a PEM file) a client must present a
    certificate signed by that CA, and by no other: the system trust store is never loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(
                f"TASKWARDEN_ADMISSION_CLIENT_CA: cannot read a CA certificate from {client_ca!r}"
                f" ({e})"
            ) from e
        ctx.verify_mode = ssl.CERT_REQUIRED
    load_chain(ctx, material)
    return ctx
