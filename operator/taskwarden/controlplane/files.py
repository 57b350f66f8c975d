"""The files a local control plane starts from: its PKI and the admin kubeconfig.

Called by taskwarden.controlplane.cluster.start. Certificates come from taskwarden.pki (the
same profile as the webhook server's).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from taskwarden import pki

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
    sa_key = pki.new_key()
    files = {
        "ca.crt": pki.cert_pem(ca),
        "ca.key": pki.key_pem(ca_key),
        "apiserver.crt": pki.cert_pem(srv),
        "apiserver.key": pki.key_pem(srv_key),
        "admin.crt": pki.cert_pem(adm),
        "admin.key": pki.key_pem(adm_key),
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
