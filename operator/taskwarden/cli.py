"""The `taskwarden` command: run the operator, manage the local control plane, inspect tasks.

Entry point of the console scripts `taskwarden` and `kubectl-taskwarden` (so `kubectl taskwarden
...` works) and of `python -m taskwarden`. `run` loads settings, refuses to start without an
admission path, sets up logging (the operator's log on stderr, as text or JSON; JSON audit lines
on stdout) and runs kopf with handlers.py. The other commands live in commands/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from taskwarden import __version__, config


def _setup_logging(verbose: bool, log_format: str = "text") -> None:
    root = logging.getLogger()
    root.handlers.clear()
    if log_format == "json":
        from taskwarden.kopf_without_client import kopf

        # kopf's JSON formatter: one object per line with timestamp, severity, message and, for
        # per-object messages, the object's reference under "object".
        kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON, log_refkey="object")
    else:
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


NO_ADMISSION = (
    "error: no admission path, so requester binding, approvals and the pod guard would NOT be "
    'enforced. Set TASKWARDEN_WEBHOOK_URL (outside a cluster: `eval "$(taskwarden controlplane '
    'up)"` prints it), TASKWARDEN_WEBHOOK_SERVICE (in a cluster: the chart sets it) or '
    "TASKWARDEN_MANAGE_WEBHOOKS=false (you register the webhook configurations yourself); or "
    "pass --no-admission to run without admission."
)


def cmd_run(args: argparse.Namespace) -> int:
    if args.context:
        print(
            "error: run does not take --context: use a kubeconfig whose current context is the "
            "cluster (--kubeconfig or KUBECONFIG)",
            file=sys.stderr,
        )
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # read by kopf's login and by kube.py
    _limit_malloc_arenas()
    from prometheus_client import start_http_server

    from taskwarden import handlers
    from taskwarden.kopf_without_client import kopf

    overrides: dict[str, Any] = {}
    if args.namespace:
        overrides["namespaces"] = tuple(args.namespace)
    for flag in ("operator_namespace", "trust_domain", "issuer", "metrics_port", "health_port"):
        if getattr(args, flag, None):
            overrides[flag] = getattr(args, flag)
    if args.standalone:
        overrides["peering"] = ""
    settings = config.from_env(**overrides)
    admission = config.admission_path(settings.server)
    if not admission and not args.no_admission:
        print(NO_ADMISSION, file=sys.stderr)
        return 2
    if not admission:  # --no-admission: nothing to register the configurations for
        server = dataclasses.replace(settings.server, manage_webhooks=False)
        settings = dataclasses.replace(settings, server=server)
    _setup_logging(args.verbose, args.log_format)
    if not admission:
        logging.getLogger("taskwarden").warning(
            "--no-admission: requester binding, approvals and the pod guard are NOT enforced"
        )
    if os.environ.get("TASKWARDEN_MEMORY_DUMP"):
        _install_memory_dump()
    start_http_server(settings.server.metrics_port, addr=args.bind)
    peering = settings.watch.peering
    logging.getLogger("taskwarden").info(
        "taskwarden %s starting: %s, operator namespace %s, issuer %s, %s, admission %s",
        __version__,
        f"namespaces {','.join(settings.watch.namespaces)}"
        if settings.watch.namespaces
        else "cluster-wide",
        settings.watch.operator_namespace,
        settings.identity.issuer,
        f"sharding group {peering}" if peering else "standalone",
        admission or "off",
    )
    kopf.run(
        clusterwide=not settings.watch.namespaces,
        namespaces=list(settings.watch.namespaces),
        standalone=True,  # no kopf peering: replicas share the work through Leases (sharding/)
        liveness_endpoint=f"http://{args.bind}:{settings.server.health_port}/healthz",
        memo=handlers.memo(settings),
    )
    return 0


def build_parser(prog: str = "taskwarden") -> argparse.ArgumentParser:
    from taskwarden import commands

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"taskwarden {__version__}")
    commands.session.add_cluster_flags(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[commands.common_flags()], help="run the operator")
    run.add_argument("--namespace", "-n", action="append", help="watch only this namespace")
    run.add_argument("--all-namespaces", "-A", action="store_true", help="watch cluster-wide")
    run.add_argument("--operator-namespace")
    run.add_argument("--trust-domain")
    run.add_argument("--issuer")
    run.add_argument("--metrics-port", type=int)
    run.add_argument("--health-port", type=int)
    run.add_argument("--bind", default=os.environ.get("TASKWARDEN_BIND", "0.0.0.0"))  # noqa: S104
    run.add_argument(
        "--standalone", action="store_true", help="no sharding: this one replica owns every task"
    )
    run.add_argument(
        "--no-admission",
        action="store_true",
        help="start without an admission path (requester binding and approvals NOT enforced)",
    )
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument("--verbose", "-v", action="store_true")
    run.set_defaults(fn=cmd_run)

    commands.register(sub)
    return p


def _prog(argv0: str) -> str:
    """`kubectl taskwarden` when run as the kubectl plugin, so usage lines read right."""
    name = Path(argv0).name
    return "kubectl taskwarden" if name.startswith("kubectl-taskwarden") else "taskwarden"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(_prog(sys.argv[0]))
    args = parser.parse_args(argv)
    args.root_parser = parser
    try:
        return int(args.fn(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    except Exception as e:
        from taskwarden.commands import session

        line = session.error_line(e)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
