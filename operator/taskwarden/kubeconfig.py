"""Where the API server is and how to authenticate to it, without the `kubernetes` client.

kube.py talks to the API over aiohttp and kopf logs in with the same settings (handlers.login),
so the operator never imports the official client (~32 MiB of RSS). `parse` turns kubeconfig
documents into a `ClusterConfig` (pure); `load` finds them the way the official client does:
in a pod, the ServiceAccount's token and CA; else $KUBECONFIG (files joined with ':', the first
to name a cluster, user or context wins) or ~/.kube/config.

Covered: server, certificate-authority(-data), insecure-skip-tls-verify, tls-server-name,
proxy-url, client-certificate(-data), client-key(-data), token, tokenFile. A user with an `exec`
plugin, an `auth-provider` or a username/password gets `needs_client` set: kube.py then loads
that kubeconfig with `kubernetes.config` (imported only then), so such setups pay its memory.
Stdlib and PyYAML only.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
"""A token file is read again at most this often: a pod's bound ServiceAccount token is
rotated by the kubelet (the official client re-reads it every minute too)."""


class KubeconfigError(ValueError):
    """The kubeconfig (or the pod's ServiceAccount files) cannot be used; says which field."""


@dataclass(frozen=True)
class ClusterConfig:
    server: str
    ca_file: str | None = None
    ca_data: str | None = None
    """PEM text (the kubeconfig's base64 is decoded)."""
    cert_file: str | None = None
    cert_data: str | None = None
    key_file: str | None = None
    key_data: str | None = None
    token: str | None = None
    token_file: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    namespace: str | None = None
    needs_client: str = ""
    """Non-empty (naming the field) when only `kubernetes.config` can authenticate this user."""
    context: str | None = None

    def __repr__(self) -> str:  # never print a token or a key
        return f"ClusterConfig(server={self.server!r}, context={self.context!r})"


def _pem(value: Any, where: str) -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError) as e:
        raise KubeconfigError(f"{where}: not base64-encoded PEM") from e


def _path(value: Any, base: Path) -> str | None:
    """A file named in a kubeconfig: relative to the directory of the file naming it."""
    if not value:
        return None
    p = Path(os.path.expanduser(str(value)))
    return str(p if p.is_absolute() else base / p)


def parse(
    docs: Sequence[tuple[Mapping[str, Any], Path]], context: str | None = None
) -> ClusterConfig:
    """ClusterConfig of `context` (else current-context) from kubeconfig documents, each with
    the directory its relative paths are resolved against. Merged as kubectl merges them."""
    named: dict[str, dict[str, tuple[Mapping[str, Any], Path]]] = {
        "clusters": {},
        "users": {},
        "contexts": {},
    }
    current = context
    for doc, base in docs:
        if not isinstance(doc, Mapping):
            raise KubeconfigError("kubeconfig: must be a mapping")
        current = current or doc.get("current-context") or None
        for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for item in doc.get(section) or ():
                if isinstance(item, Mapping) and item.get("name"):
                    named[section].setdefault(str(item["name"]), (item.get(key) or {}, base))
    if not current:
        raise KubeconfigError("kubeconfig: current-context is not set")
    if current not in named["contexts"]:
        raise KubeconfigError(f"kubeconfig: contexts[{current}] is not defined")
    ctx, _ = named["contexts"][current]
    cluster_name, user_name = str(ctx.get("cluster") or ""), str(ctx.get("user") or "")
    if cluster_name not in named["clusters"]:
        raise KubeconfigError(
            f"kubeconfig: context {current}: clusters[{cluster_name}] is not defined"
        )
    cluster, cbase = named["clusters"][cluster_name]
    user, ubase = named["users"].get(user_name, ({}, cbase))
    if not cluster.get("server"):
        raise KubeconfigError(f"kubeconfig: clusters[{cluster_name}].server is not set")
    u = f"users[{user_name}]"
    needs = next((f"{u}.{k}" for k in ("exec", "auth-provider", "username") if user.get(k)), "")
    c = f"clusters[{cluster_name}]"
    return ClusterConfig(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=_path(cluster.get("certificate-authority"), cbase),
        ca_data=_pem(cluster["certificate-authority-data"], f"{c}.certificate-authority-data")
        if cluster.get("certificate-authority-data")
        else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name") or None,
        proxy_url=cluster.get("proxy-url") or None,
        cert_file=_path(user.get("client-certificate"), ubase),
        cert_data=_pem(user["client-certificate-data"], f"{u}.client-certificate-data")
        if user.get("client-certificate-data")
        else None,
        key_file=_path(user.get("client-key"), ubase),
        key_data=_pem(user["client-key-data"], f"{u}.client-key-data")
        if user.get("client-key-data")
        else None,
        token=user.get("token") or None,
        token_file=_path(user.get("tokenFile"), ubase),
        namespace=ctx.get("namespace") or None,
        needs_client=needs,
        context=current,
    )


def in_cluster(env: Mapping[str, str], sa_dir: Path = SA_DIR) -> ClusterConfig | None:
    """The pod's API server and ServiceAccount, or None when not running in a pod."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token = sa_dir / "token"
    if not host or not port or not token.is_file():
        return None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    ca = sa_dir / "ca.crt"
    ns = sa_dir / "namespace"
    return ClusterConfig(
        server=f"https://{host}:{port}",
        ca_file=str(ca) if ca.is_file() else None,
        token_file=str(token),
        namespace=ns.read_text().strip() if ns.is_file() else None,
    )


def load(env: Mapping[str, str] | None = None, sa_dir: Path = SA_DIR) -> ClusterConfig:
    """In a pod, its ServiceAccount; else $KUBECONFIG, else ~/.kube/config."""
    import yaml

    env = os.environ if env is None else env
    found = in_cluster(env, sa_dir)
    if found is not None:
        return found
    paths = [p for p in (env.get("KUBECONFIG") or "").split(os.pathsep) if p.strip()]
    if not paths:
        paths = [os.path.expanduser("~/.kube/config")]
    docs: list[tuple[Mapping[str, Any], Path]] = []
    for raw in paths:
        path = Path(os.path.expanduser(raw.strip()))
        if not path.is_file():
            if len(paths) == 1:
                raise KubeconfigError(f"kubeconfig: {path}: no such file (set KUBECONFIG)")
            continue  # kubectl skips missing files of a list
        docs.append((yaml.safe_load(path.read_text()) or {}, path.parent))
    return parse(docs)


class BearerToken:
    """The token to send: fixed, or read from a file again every TOKEN_REREAD_SECONDS."""

    def __init__(
        self,
        token: str | None,
        token_file: str | None,
        clock: Callable[[], float] = time.monotonic,  # tests pass a fake clock
    ) -> None:
        self._token, self._file, self._clock = token, token_file, clock
        self._read_at = -TOKEN_REREAD_SECONDS - 1.0

    def value(self) -> str | None:
        if self._file and self._clock() - self._read_at >= TOKEN_REREAD_SECONDS:
            try:
                self._token = Path(self._file).read_text().strip() or self._token
            except OSError:
                if self._token is None:
                    raise
            self._read_at = self._clock()
        return self._token
