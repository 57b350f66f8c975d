"""A real local Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (one kubelet-less Node, see taskwarden.controlplane.nodes).

`start` launches the processes (binaries from taskwarden.controlplane.binaries, PKI and
kubeconfig from taskwarden.controlplane.files) and returns a `ControlPlane` whose `stop()` ends
them; `ControlPlane.load` re-attaches to a detached one by its state directory. Everything
here is real: RBAC, admission webhooks, TokenRequest/TokenReview, impersonation and garbage
collection all work.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskwarden.controlplane import files, nodes
from taskwarden.controlplane.binaries import K8S_VERSION, ControlPlaneError, find_binaries

# What Taskwarden relies on: owner-reference GC, namespace deletion, service accounts and their
# tokens, and the kube-root-ca.crt ConfigMap; plus Deployments, ReplicaSets and Jobs so workloads
# make pods as in a cluster. Node lifecycle and cloud controllers: kwok owns the one Node.
CONTROLLERS = ",".join(
    [
        "garbage-collector-controller",
        "namespace-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "root-ca-certificate-publisher-controller",
        "deployment-controller",
        "replicaset-controller",
        "job-controller",
    ]
)


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free now, for a server started later by another process. Drawn below
    the kernel's ephemeral range: a port from bind(0) is an ephemeral one, and between this
    call and the server's bind an outgoing connection of any process may take it as its local
    port (seen in CI: a replica's webhook port held for minutes by a client connection).
    Never the same port twice in one process."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200) if low > 11000 else ():
        port = rng.randrange(10000, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # no room below the ephemeral range
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- processes


def _running(pid: int) -> bool:
    """Alive and not a zombie (a detached process's reaper may be slow to collect it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def _die_with_parent() -> None:
    """Run in the child: get SIGKILL when the launching process dies, so nothing leaks."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class ControlPlane:
    """A running control plane. `stop()` ends every process; state lives in `workdir`."""

    workdir: Path
    server: str
    kubeconfig: Path
    pids: dict[str, int] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    version: str = K8S_VERSION
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    def api_client(self) -> Any:
        """An admin `kubernetes.client.ApiClient` (imported lazily: only callers need it)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]  # kubernetes.config is untyped
            config_file=str(self.kubeconfig), client_configuration=cfg, persist_config=False
        )
        return client.ApiClient(cfg)

    def log_tails(self, lines: int = 40) -> str:
        out = []
        for name, path in self.logs.items():
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"----- {name} ({path}) last {len(tail)} lines -----")
                out.extend(tail)
        return "\n".join(out)

    def alive(self) -> dict[str, bool]:
        res = {name: _running(pid) for name, pid in self.pids.items()}
        for name, p in self._procs.items():
            res[name] = p.poll() is None
        return res

    def stop(self) -> None:
        """Terminate in reverse start order; SIGKILL whatever ignores SIGTERM for 5 s."""
        order = list(reversed(self.pids))
        for name in order:
            pid = self.pids.get(name)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for name in order:
            pid = self.pids.get(name)
            if pid is None:
                continue
            proc = self._procs.get(name)
            while time.monotonic() < deadline:
                if proc is not None:
                    if proc.poll() is not None:
                        break
                elif not _running(pid):
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if proc is not None:
                    with contextlib.suppress(Exception):
                        proc.wait(2)
                else:
                    gone = time.monotonic() + 2
                    while _running(pid) and time.monotonic() < gone:
                        time.sleep(0.05)
        self.pids.clear()
        self._procs.clear()
        with contextlib.suppress(OSError):
            (self.workdir / "state.json").unlink()

    def save(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "pids": self.pids,
            "logs": {k: str(v) for k, v in self.logs.items()},
            "version": self.version,
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, workdir: Path) -> ControlPlane | None:
        try:
            state = json.loads((workdir / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(
            workdir=workdir,
            server=state["server"],
            kubeconfig=Path(state["kubeconfig"]),
            pids={k: int(v) for k, v in state["pids"].items()},
            logs={k: Path(v) for k, v in state["logs"].items()},
            version=state.get("version", K8S_VERSION),
        )

    def env(self) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "TASKWARDEN_CONTROLPLANE": str(self.workdir),
            "TASKWARDEN_ADMISSION_CLIENT_CA": str(self.pki / files.WEBHOOK_CLIENT_CA),
        }


def _spawn(
    name: str, argv: list[str], logdir: Path, *, detach: bool
) -> tuple[subprocess.Popen[bytes], Path]:
    log = logdir / f"{name}.log"
    fh = log.open("ab")
    proc = subprocess.Popen(
        argv,
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop them in order
        preexec_fn=None if detach else _die_with_parent,
    )
    fh.close()
    return proc, log


def _ssl_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def _check_alive(cp: ControlPlane, what: str) -> None:
    dead = [n for n, ok in cp.alive().items() if not ok]
    if dead:
        raise ControlPlaneError(
            f"{', '.join(dead)} exited while waiting for {what}\n{cp.log_tails()}"
        )


def _wait_http(
    url: str, ctx: ssl.SSLContext | None, timeout: float, cp: ControlPlane, what: str
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        _check_alive(cp, what)
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.1)
    raise ControlPlaneError(f"{what} not ready after {timeout:.0f}s ({last})\n{cp.log_tails()}")


def start(
    workdir: Path | None = None, *, detach: bool = False, with_controller_manager: bool = True
) -> ControlPlane:
    """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on loopback.

    Returns once /readyz, the controllers' /healthz and the kwok Node's Ready condition answer.
    With detach=False the processes die with the calling process even if it is SIGKILLed
    (PR_SET_PDEATHSIG). with_controller_manager=False starts only etcd and the apiserver.
    """
    bins = find_binaries()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="taskwarden-cp-"))
    workdir.mkdir(parents=True, exist_ok=True)
    pki, logdir, etcd_dir = workdir / "pki", workdir / "logs", workdir / "etcd"
    logdir.mkdir(exist_ok=True)
    files.write_pki(pki)
    admission_config = files.write_admission_config(workdir, pki)
    etcd_port, peer_port, api_port, kcm_port, sched_port, kwok_port = (
        free_port() for _ in range(6)
    )
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = workdir / "kubeconfig"
    files.write_kubeconfig(kubeconfig, server, pki)
    cp = ControlPlane(workdir=workdir, server=server, kubeconfig=kubeconfig)

    def launch(name: str, argv: list[str]) -> None:
        proc, log = _spawn(name, argv, logdir, detach=detach)
        cp.pids[name], cp.logs[name] = proc.pid, log
        cp._procs[name] = proc
        cp.save()

    try:
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        launch(
            "etcd",
            [
                str(bins["etcd"]),
                f"--data-dir={etcd_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        _wait_http(f"{etcd_url}/health", None, 30, cp, "etcd")
        launch(
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                # Webhook calls carry pki/webhook-client.crt: the operator's admission port
                # answers only them (TASKWARDEN_ADMISSION_CLIENT_CA, see env()).
                f"--admission-control-config-file={admission_config}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                # bench/rotation.py --apiserver-profile: where the API server's CPU goes.
                f"--profiling={'true' if os.environ.get('TASKWARDEN_CP_PROFILING') else 'false'}",
                "--watch-cache=true",
                "--event-ttl=1h",
                # It taints every new Node not-ready, and only the node lifecycle controller lifts
                # that; kwok owns the one Node's conditions here, so the Node starts untainted.
                "--disable-admission-plugins=TaintNodesByCondition",
            ],
        )
        _wait_http(f"{server}/readyz", _ssl_context(pki), 90, cp, "kube-apiserver /readyz")
        if with_controller_manager:
            launch(
                "kube-controller-manager",
                [
                    str(bins["kube-controller-manager"]),
                    f"--kubeconfig={kubeconfig}",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    "--use-service-account-credentials=false",
                    "--leader-elect=false",
                    f"--controllers={CONTROLLERS}",
                    f"--secure-port={kcm_port}",
                    "--bind-address=127.0.0.1",
                    f"--cert-dir={workdir / 'kcm-certs'}",
                    "--concurrent-gc-syncs=5",
                ],
            )
            launch(
                "kube-scheduler",
                nodes.scheduler_argv(bins, kubeconfig, sched_port, workdir / "scheduler-certs"),
            )
            nodes.create_node(server, _ssl_context(pki))
            launch("kwok", nodes.kwok_argv(bins, kubeconfig, kwok_port))
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE  # their self-signed serving certs; /healthz only
            for name, port in (
                ("kube-controller-manager", kcm_port),
                ("kube-scheduler", sched_port),
            ):
                _wait_http(
                    f"https://127.0.0.1:{port}/healthz", insecure, 60, cp, f"{name} /healthz"
                )
            _wait_http(f"http://127.0.0.1:{kwok_port}/healthz", None, 60, cp, "kwok /healthz")
            nodes.wait_node_ready(
                server, _ssl_context(pki), 60, lambda: _check_alive(cp, f"Node {nodes.NODE}")
            )
    except BaseException:
        cp.stop()
        raise
    return cp


def stop_dir(workdir: Path) -> bool:
    cp = ControlPlane.load(workdir)
    if cp is None:
        return False
    cp.stop()
    return True
