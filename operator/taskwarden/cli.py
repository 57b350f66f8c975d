"""The `taskwarden` command: run the operator, manage the local control plane, inspect tasks.

Entry point of the console script and of `python -m taskwarden`. Loads settings, sets up
logging (human log on stderr, JSON audit lines on stdout) and runs kopf with handlers.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from taskwarden import __version__, config


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(err)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # kopf logs every handler success at INFO: at thousands of tasks that is the bottleneck.
    for noisy in ("kubernetes", "urllib3", "aiohttp.access", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    audit = logging.getLogger("taskwarden.audit")
    audit.handlers.clear()
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    audit.addHandler(out)
    audit.setLevel(logging.INFO)
    audit.propagate = False


def _ensure_peering(settings: config.Settings) -> None:
    """kopf does not create its peering object; without it, it would silently run standalone."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from taskwarden import kube

    name = settings.watch.peering
    api = client.CustomObjectsApi(client.ApiClient(kube.load_client_config(2)))
    body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": name}}
    try:
        if settings.watch.namespaces:
            for ns in settings.watch.namespaces:
                body["kind"] = "KopfPeering"
                with contextlib.suppress(ApiException):
                    api.create_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", body)
        else:
            body["kind"] = "ClusterKopfPeering"
            api.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
    except ApiException as e:
        if e.status not in (409, 403):
            raise


def _install_memory_dump() -> None:
    """Debugging aid: with TASKWARDEN_MEMORY_DUMP=1, SIGUSR1 logs the most numerous live object
    types (cheap enough for a loaded operator, unlike tracemalloc)."""
    import collections
    import gc
    import signal

    from taskwarden import kube

    def dump(*_: Any) -> None:
        gc.collect()
        kube.trim_memory()
        counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        logging.getLogger("taskwarden.memory").warning(
            "live objects: %s", ", ".join(f"{n}={c}" for n, c in counts.most_common(30))
        )

    signal.signal(signal.SIGUSR1, dump)


def _limit_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own heap arena; with a pool of API threads
    handling large LIST responses, freed memory stays stranded per arena. Two arenas keep RSS
    proportional to live data (the same effect as MALLOC_ARENA_MAX=2)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX


def cmd_run(args: argparse.Namespace) -> int:
    _limit_malloc_arenas()
    import kopf
    from prometheus_client import start_http_server

    from taskwarden import handlers

    overrides: dict[str, Any] = {}
    if args.namespace:
        overrides["namespaces"] = tuple(args.namespace)
    for flag in ("operator_namespace", "trust_domain", "issuer", "metrics_port", "health_port"):
        if getattr(args, flag, None):
            overrides[flag] = getattr(args, flag)
    if args.standalone:
        overrides["peering"] = ""
    settings = config.from_env(**overrides)
    _setup_logging(args.verbose)
    if os.environ.get("TASKWARDEN_MEMORY_DUMP"):
        _install_memory_dump()
    start_http_server(settings.server.metrics_port, addr=args.bind)
    peering = settings.watch.peering
    if peering:
        _ensure_peering(settings)
    logging.getLogger("taskwarden").info(
        "taskwarden %s starting: %s, operator namespace %s, issuer %s, peering %s",
        __version__,
        f"namespaces {','.join(settings.watch.namespaces)}"
        if settings.watch.namespaces
        else "cluster-wide",
        settings.watch.operator_namespace,
        settings.identity.issuer,
        peering or "standalone",
    )
    kopf.run(
        clusterwide=not settings.watch.namespaces,
        namespaces=list(settings.watch.namespaces),
        standalone=not peering,
        peering_name=peering or None,
        liveness_endpoint=f"http://{args.bind}:{settings.server.health_port}/healthz",
        memo=handlers.memo(settings),
    )
    return 0


def cmd_controlplane(args: argparse.Namespace) -> int:
    from taskwarden import controlplane

    workdir = Path(args.dir) if args.dir else controlplane.default_state_dir()
    if args.action == "build":
        bins = controlplane.find_binaries()
        for name, path in bins.items():
            print(f"{name}: {path}")
        return 0
    if args.action == "up":
        existing = controlplane.ControlPlane.load(workdir)
        if existing and all(existing.alive().values()):
            print(f"already running: {existing.server}", file=sys.stderr)
        else:
            if existing:
                existing.stop()
            cp = controlplane.start(workdir, detach=True)
            client = cp.api_client()
            controlplane.install_crds(client, Path(args.crds))
            print(f"control plane {cp.version} up at {cp.server}", file=sys.stderr)
        print(f"export KUBECONFIG={workdir / 'kubeconfig'}")
        return 0
    if args.action == "down":
        stopped = controlplane.stop_dir(workdir)
        print("stopped" if stopped else "not running", file=sys.stderr)
        return 0
    if args.action == "env":
        running = controlplane.ControlPlane.load(workdir)
        if running is None:
            print("no control plane running; run `taskwarden controlplane up`", file=sys.stderr)
            return 1
        for k, v in running.env().items():
            print(f"export {k}={v}")
        return 0
    return 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskwarden", description=__doc__)
    p.add_argument("--version", action="version", version=f"taskwarden {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument("--namespace", "-n", action="append", help="watch only this namespace")
    run.add_argument("--all-namespaces", "-A", action="store_true", help="watch cluster-wide")
    run.add_argument("--operator-namespace")
    run.add_argument("--trust-domain")
    run.add_argument("--issuer")
    run.add_argument("--metrics-port", type=int)
    run.add_argument("--health-port", type=int)
    run.add_argument("--bind", default=os.environ.get("TASKWARDEN_BIND", "0.0.0.0"))  # noqa: S104
    run.add_argument("--standalone", action="store_true", help="no peering (single replica)")
    run.add_argument("--verbose", "-v", action="store_true")
    run.set_defaults(fn=cmd_run)

    cp = sub.add_parser("controlplane", help="local etcd + kube-apiserver + controller-manager")
    cp.add_argument("action", choices=["up", "down", "env", "build"])
    cp.add_argument("--dir", help="state directory (default ~/.cache/taskwarden/run/default)")
    cp.add_argument("--crds", default=str(Path.cwd() / "crds"))
    cp.set_defaults(fn=cmd_controlplane)

    from taskwarden import commands

    commands.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:
        return 130
