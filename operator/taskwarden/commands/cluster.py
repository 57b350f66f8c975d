"""`taskwarden controlplane up|down|env|build` and `taskwarden dev` (the demo).

`up` and `env` print, as `export` lines, everything a local `taskwarden run` needs: the
kubeconfig, and the webhook URL, ports and issuer the operator serves admission and the JWKS
on. So `eval "$(taskwarden controlplane up)"` then `taskwarden run` enforces admission.
The ports are chosen once, when the control plane starts, and kept in <dir>/operator.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskwarden.controlplane import ControlPlane

OPERATOR_NAMESPACE = "taskwarden-system"
PORTS = ("webhook", "public", "metrics", "health")


def operator_env(ports: dict[str, int]) -> dict[str, str]:
    """What `taskwarden run` reads to serve admission on loopback for this control plane."""
    return {
        "TASKWARDEN_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
        "TASKWARDEN_WEBHOOK_URL": f"https://127.0.0.1:{ports['webhook']}",
        "TASKWARDEN_WEBHOOK_PORT": str(ports["webhook"]),
        "TASKWARDEN_PUBLIC_PORT": str(ports["public"]),
        "TASKWARDEN_ISSUER": f"https://127.0.0.1:{ports['public']}",
        "TASKWARDEN_BIND": "127.0.0.1",
        "TASKWARDEN_METRICS_PORT": str(ports["metrics"]),
        "TASKWARDEN_HEALTH_PORT": str(ports["health"]),
    }


def exports(env: dict[str, str]) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())


def _ports(workdir: Path, *, fresh: bool) -> dict[str, int]:
    from taskwarden import controlplane

    path = workdir / "operator.json"
    if not fresh:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            saved = json.loads(path.read_text())
            return {k: int(saved[k]) for k in PORTS}
    ports = {k: controlplane.free_port() for k in PORTS}
    path.write_text(json.dumps(ports))
    return ports


def _operator_namespace(cp: ControlPlane) -> None:
    """Where the operator keeps keys, JWKS, revocation list and TLS; `run` needs it to exist."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(cp.api_client())
    try:
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NAMESPACE))
        )
    except ApiException as e:
        if e.status != 409:
            raise


def cmd_controlplane(args: argparse.Namespace) -> int:
    from taskwarden import controlplane

    workdir = Path(args.dir) if args.dir else controlplane.default_state_dir()
    if args.action == "build":
        bins = controlplane.find_binaries()
        for name, path in bins.items():
            print(f"{name}: {path}")
        return 0
    if args.action == "up":
        cp = controlplane.ControlPlane.load(workdir)
        fresh = cp is None or not all(cp.alive().values())
        if cp is None or fresh:
            if cp is not None:
                cp.stop()
            cp = controlplane.start(workdir, detach=True)
            controlplane.install_crds(cp.api_client(), Path(args.crds))
            print(f"control plane {cp.version} up at {cp.server}", file=sys.stderr)
        else:
            print(f"already running: {cp.server}", file=sys.stderr)
        _operator_namespace(cp)
        env = {**cp.env(), **operator_env(_ports(workdir, fresh=fresh))}
        print(exports(env))
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
        print(exports({**running.env(), **operator_env(_ports(workdir, fresh=False))}))
        return 0
    return 2


def cmd_dev(args: argparse.Namespace) -> int:
    from taskwarden import demo

    return demo.run(keep=args.keep)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cp = sub.add_parser("controlplane", help="local etcd + kube-apiserver + controller-manager")
    cp.add_argument("action", choices=["up", "down", "env", "build"])
    cp.add_argument("--dir", help="state directory (default ~/.cache/taskwarden/run/default)")
    cp.add_argument("--crds", default=str(Path.cwd() / "crds"))
    cp.set_defaults(fn=cmd_controlplane)

    dev = sub.add_parser("dev", help="local control plane + CRDs + operator + example, end to end")
    dev.add_argument("--keep", action="store_true", help="leave the control plane running")
    dev.set_defaults(fn=cmd_dev)
