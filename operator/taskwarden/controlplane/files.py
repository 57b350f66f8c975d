"""The files a local control plane starts from: its PKI, the admin kubeconfig, and the admission
configuration that makes the apiserver present a client certificate to admission webhooks.

Called by taskwarden.controlplane.cluster.start. Certificates come from taskwarden.pki (the
same profile as the webhook server's). The webhook client certificate is signed by its own CA
(`WEBHOOK_CLIENT_CA`), not the cluster CA, so the operator's admission port accepts the
apiserver and nobody holding an ordinary cluster client certificate.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from taskwarden import pki

WEBHOOK_CLIENT_CA = "webhook-client-ca.crt"
"""The CA the operator's admission port trusts for client certificates (in the pki directory)."""
ADMISSION_CONFIG = "admission-config.json"
WEBHOOK_KUBECONFIG = "webhook-kubeconfig.json"

SANS = (
    "127.0.0.1",
    "10.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
"""Names the local apiserver's serving certificate is valid for."""


def write_pki(d: Path, now: float | None = None) -> None:
    """CA, apiserver serving cert, admin client cert (system:masters), SA signing key pair."""
    d.mkdir(parents=True, exist_ok=True)
    now = time.time() if now is None else now
    year = 365 * 86400.0
    ca_key = pki.new_key()
    ca_name = pki.name("taskwarden-local-ca")
    ca = pki.certificate(ca_name, ca_key, ca_name, ca_key, now=now, validity=10 * year, ca=True)
    srv_key = pki.new_key()
    srv = pki.certificate(
        pki.name("kube-apiserver"), srv_key, ca_name, ca_key, now=now, validity=year, hosts=SANS
    )
    adm_key = pki.new_key()
    adm = pki.certificate(
        pki.name("taskwarden-admin", organization="system:masters"),
        adm_key,
        ca_name,
        ca_key,
        now=now,
        validity=year,
        client=True,
    )
    wca_key = pki.new_key()
    wca_name = pki.name("taskwarden-local-webhook-client-ca")
    wca = pki.certificate(
        wca_name, wca_key, wca_name, wca_key, now=now, validity=10 * year, ca=True
    )
    wcl_key = pki.new_key()
    wcl = pki.certificate(
        pki.name("kube-apiserver-webhook-client"),
        wcl_key,
        wca_name,
        wca_key,
        now=now,
        validity=year,
        client=True,
    )
    sa_key = pki.new_key()
    files = {
        "ca.crt": pki.cert_pem(ca),
        "ca.key": pki.key_pem(ca_key),
        "apiserver.crt": pki.cert_pem(srv),
        "apiserver.key": pki.key_pem(srv_key),
        "admin.crt": pki.cert_pem(adm),
        "admin.key": pki.key_pem(adm_key),
        WEBHOOK_CLIENT_CA: pki.cert_pem(wca),
        "webhook-client.crt": pki.cert_pem(wcl),
        "webhook-client.key": pki.key_pem(wcl_key),
        "sa.key": pki.key_pem(sa_key),
        "sa.pub": pki.public_pem(sa_key),
    }
    for name, data in files.items():
        p = d / name
        p.write_text(data)
        p.chmod(0o600)


def write_kubeconfig(path: Path, server: str, pki: Path) -> None:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "taskwarden-local",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": "taskwarden-admin",
                "user": {
                    "client-certificate": str(pki / "admin.crt"),
                    "client-key": str(pki / "admin.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "taskwarden-local",
                "context": {"cluster": "taskwarden-local", "user": "taskwarden-admin"},
            }
        ],
        "current-context": "taskwarden-local",
    }
    path.write_text(json.dumps(cfg, indent=2))
    path.chmod(0o600)


def write_admission_config(d: Path, pki_dir: Path) -> Path:
    """The apiserver's --admission-control-config-file: both webhook plugins present the
    webhook client certificate to every webhook (user `*`: the operator's port is chosen later,
    and on this loopback control plane Taskwarden's are the only webhooks). Returns its path."""
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [
            {
                "name": "*",
                "user": {
                    "client-certificate": str(pki_dir / "webhook-client.crt"),
                    "client-key": str(pki_dir / "webhook-client.key"),
                },
            }
        ],
    }
    (d / WEBHOOK_KUBECONFIG).write_text(json.dumps(kubeconfig, indent=2))
    plugin = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": str(d / WEBHOOK_KUBECONFIG),
    }
    config = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {"name": name, "configuration": plugin}
            for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
        ],
    }
    path = d / ADMISSION_CONFIG
    path.write_text(json.dumps(config, indent=2))
    return path
