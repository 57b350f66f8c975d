"""Which cluster and namespace a command talks to, and API failures as one line.

Like kubectl: `--kubeconfig` (else $KUBECONFIG, else ~/.kube/config; in a pod without either,
the in-cluster account) and `--context` pick the cluster; `-n` defaults to the context's
namespace (in a pod: the pod's namespace), else `default`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def add_cluster_flags(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """`--kubeconfig` and `--context`, accepted before or after the subcommand."""
    default = None if top else argparse.SUPPRESS
    p.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file")
    p.add_argument("--context", default=default, help="the kubeconfig context to use")


def add_namespace_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n", "--namespace", help="namespace (default: the kubeconfig context's namespace)"
    )


def context_namespace(
    contexts: list[dict[str, Any]], active: dict[str, Any] | None, name: str | None
) -> str:
    """The namespace of context `name` (else the current one), or "default"."""
    chosen = next((c for c in contexts if c.get("name") == name), None) if name else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _in_cluster(args: argparse.Namespace) -> bool:
    explicit = getattr(args, "kubeconfig", None) or getattr(args, "context", None)
    return not explicit and not os.environ.get("KUBECONFIG") and IN_CLUSTER_NAMESPACE.is_file()


def namespace(args: argparse.Namespace) -> str:
    """`-n`, else the namespace of the kubeconfig context in use, as kubectl chooses it."""
    if getattr(args, "namespace", None):
        return str(args.namespace)
    if _in_cluster(args):
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    import kubernetes

    config: Any = kubernetes.config  # untyped
    try:
        contexts, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
    except config.ConfigException:
        return "default"
    return context_namespace(contexts, active, args.context)


def api_client(args: argparse.Namespace, pool_size: int = 4) -> Any:
    import kubernetes

    client, config = kubernetes.client, kubernetes.config
    cfg = client.Configuration()
    loader: Any = config.load_kube_config  # untyped
    if not (args.kubeconfig or args.context):
        in_cluster: Any = config.load_incluster_config  # untyped
        try:  # in a pod, its ServiceAccount; else KUBECONFIG / ~/.kube/config
            in_cluster(client_configuration=cfg)
        except config.ConfigException:
            loader(client_configuration=cfg, persist_config=False)
    else:
        loader(
            config_file=args.kubeconfig,
            context=args.context,
            client_configuration=cfg,
            persist_config=False,
        )
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)


def custom(args: argparse.Namespace) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client(args))


def api_message(status: int | None, reason: str | None, body: str | bytes | None) -> str:
    """`Error from server (Forbidden): <the API's message>`, as kubectl prints it."""
    message, kind = "", reason or ""
    try:
        doc = json.loads(body or "")
    except (TypeError, ValueError):
        doc = None
    if isinstance(doc, dict):
        message = str(doc.get("message") or "")
        kind = str(doc.get("reason") or kind)
    if not message:
        message = f"HTTP {status} {reason or ''}".strip()
    return f"Error from server ({kind or status}): {' '.join(message.split())}"


def error_line(e: BaseException) -> str | None:
    """One line for a failure talking to the cluster, or None for anything else (a bug)."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import HTTPError

    if isinstance(e, ApiException):
        return api_message(e.status, e.reason, e.body)
    if isinstance(e, ConfigException):
        return f"error: kubeconfig: {' '.join(str(e).split())}"
    if isinstance(e, HTTPError):
        reason = getattr(e, "reason", None) or e
        return f"error: cannot reach the API server: {' '.join(str(reason).split())}"
    if isinstance(e, (FileNotFoundError, PermissionError)) and e.filename:
        return f"error: {e.strerror}: {e.filename}"
    return None
