"""Integration test helpers: the operator as a real subprocess, waiting, playing the kubelet."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client

from taskwarden import controlplane

T = TypeVar("T")
GROUP, VERSION = "taskwarden.dev", "v1alpha1"
ADMISSION_MODE = os.environ.get("TASKWARDEN_ADMISSION_MODE", "auto").strip().lower() or "auto"
"""The operators under test run with this TASKWARDEN_ADMISSION_MODE (they inherit the test
environment). `make test` runs the admission files once more with `webhook`."""
CEL_MODE = ADMISSION_MODE != "webhook"
"""The pinned control plane (1.36) serves the admission policies: auto and cel mean CEL mode."""
POLICY_REFUSAL = "ValidatingAdmissionPolicy 'taskwarden-agenttasks'"
"""How the API server names a refusal by Taskwarden's CEL policy (admission/cel.py)."""


def taskwarden_refusal(message: str) -> bool:
    """Refused by Taskwarden admission: one of its webhooks, or in CEL mode its policy."""
    return ("admission webhook" in message and "taskwarden.dev" in message) or (
        CEL_MODE and POLICY_REFUSAL in message
    )


def wait_for(
    fn: Callable[[], T | None], timeout: float = 20, interval: float = 0.05, what: str = ""
) -> T:
    """Poll fn until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}: last={last!r}")


@dataclass
class OperatorProcess:
    """`taskwarden run` as a subprocess against the local control plane."""

    kubeconfig: Path
    workdir: Path
    operator_namespace: str
    env: dict[str, str]
    extra_args: list[str] = field(default_factory=list)
    name: str = "operator"
    metrics_port: int = field(default_factory=controlplane.free_port)
    health_port: int = field(default_factory=controlplane.free_port)
    webhook_port: int = field(default_factory=controlplane.free_port)
    public_port: int = field(default_factory=controlplane.free_port)
    admission_client_ca: Path | None = None
    """The CA of the apiserver's webhook client certificate; default: the control plane's next
    to `kubeconfig`."""
    webhook_url: str = ""
    """Where the apiserver calls admission; default: this process's own webhook port. Replicas
    share one URL (in a cluster the Service fronts them all)."""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.workdir / "operator.log"

    def start(self, wait: bool = True) -> None:
        env = dict(self.env)
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "TASKWARDEN_OPERATOR_NAMESPACE": self.operator_namespace,
                "TASKWARDEN_METRICS_PORT": str(self.metrics_port),
                "TASKWARDEN_HEALTH_PORT": str(self.health_port),
                "TASKWARDEN_WEBHOOK_PORT": str(self.webhook_port),
                "TASKWARDEN_WEBHOOK_URL": self.webhook_url
                or f"https://127.0.0.1:{self.webhook_port}",
                "TASKWARDEN_PUBLIC_PORT": str(self.public_port),
                "TASKWARDEN_ISSUER": f"https://127.0.0.1:{self.public_port}",
                "TASKWARDEN_BIND": "127.0.0.1",
            }
        )
        # The local control plane's apiserver presents a webhook client certificate.
        client_ca = self.admission_client_ca or (
            self.kubeconfig.parent / "pki" / controlplane.files.WEBHOOK_CLIENT_CA
        )
        env.setdefault("TASKWARDEN_ADMISSION_CLIENT_CA", str(client_ca))
        # Tests run one operator at a time unless they ask for peering explicitly.
        env.setdefault("TASKWARDEN_PEERING", "")
        self.starts += 1
        fh = self.log.open("ab")
        fh.write(f"\n===== start #{self.starts} =====\n".encode())
        fh.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taskwarden", "run", *self.extra_args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        fh.close()
        if wait:
            wait_for(self.healthy, timeout=60, what="operator /healthz")

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"operator exited with {self.proc and self.proc.returncode}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=15
        ) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, rest = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tails(self, lines: int = 80) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --------------------------------------------------------------------------- identities


def as_token(cluster: controlplane.ControlPlane, token: str) -> client.ApiClient:
    """An ApiClient that authenticates with a bearer token (a real ServiceAccount token)."""
    cfg = client.Configuration()
    cfg.host = cluster.server
    cfg.ssl_ca_cert = str(cluster.pki / "ca.crt")
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


def as_user(api: client.ApiClient, username: str, group: str | None = None) -> client.ApiClient:
    """Admin impersonating `username` (ServiceAccounts get their groups added by the apiserver)."""
    cfg = api.configuration
    imp = client.ApiClient(cfg)
    imp.default_headers["Impersonate-User"] = username
    if group:
        imp.default_headers["Impersonate-Group"] = group
    return imp


def sa_token(
    api: client.ApiClient, ns: str, sa: str, pod: str | None = None, seconds: int = 3600
) -> str:
    """TokenRequest; bound to a pod when given, so userInfo carries pod-name and pod-uid."""
    spec: dict[str, Any] = {"expirationSeconds": seconds}
    if pod:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod}
    tr = client.CoreV1Api(api).create_namespaced_service_account_token(sa, ns, {"spec": spec})
    return str(tr.status.token)


def agent_api(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    ns: str,
    sa: str,
    pod: str | None = None,
) -> client.ApiClient:
    """The API as the agent's own pod-bound ServiceAccount token sees it."""
    return as_token(cluster, sa_token(api, ns, sa, pod))


# --------------------------------------------------------------------------- objects


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create(api: client.ApiClient, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    return dict(custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, plural, body))


def get(api: client.ApiClient, ns: str, plural: str, name: str) -> dict[str, Any]:
    return dict(custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, plural, name))


def patch(
    api: client.ApiClient, ns: str, plural: str, name: str, body: dict[str, Any]
) -> dict[str, Any]:
    return dict(custom(api).patch_namespaced_custom_object(GROUP, VERSION, ns, plural, name, body))


def service_account(api: client.ApiClient, ns: str, name: str) -> None:
    with contextlib.suppress(client.ApiException):
        client.CoreV1Api(api).create_namespaced_service_account(ns, {"metadata": {"name": name}})


UNSCHEDULED = "taskwarden-tests-unscheduled"
"""A schedulerName nothing serves: a pod created with it stays Pending until `run_pod` binds it."""


def pod(
    api: client.ApiClient,
    ns: str,
    name: str,
    sa: str,
    *,
    running: bool = True,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Create a pod; with running=True, bound to the kwok Node and returned once it is Running.

    With running=False the pod is left Pending (unscheduled) until `run_pod`.
    """
    service_account(api, ns, sa)
    core = client.CoreV1Api(api)
    spec: dict[str, Any] = {
        "serviceAccountName": sa,
        "automountServiceAccountToken": False,
        "containers": [{"name": "agent", "image": "busybox", "command": ["sleep", "3600"]}],
    }
    if running:
        spec["nodeName"] = controlplane.NODE
    else:
        spec["schedulerName"] = UNSCHEDULED
    body = {"metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}
    created = core.create_namespaced_pod(ns, body)
    if running:
        wait_pod_phase(api, ns, name, "Running")
    return dict(api.sanitize_for_serialization(created))


def run_pod(api: client.ApiClient, ns: str, name: str) -> None:
    """Bind a Pending pod to the kwok Node, as a scheduler would, and wait until kwok runs it."""
    core = client.CoreV1Api(api)
    if not core.read_namespaced_pod(name, ns).spec.node_name:
        binding = {
            "metadata": {"name": name},
            "target": {"kind": "Node", "name": controlplane.NODE},
        }
        # The client cannot deserialise the Status this returns into a V1Binding: skip that.
        core.create_namespaced_pod_binding(name, ns, binding, _preload_content=False)
    wait_pod_phase(api, ns, name, "Running")


def fail_pod(api: client.ApiClient, ns: str, name: str) -> None:
    """kwok's chaos Stage fails the Running pod's container, as a crash would; wait for Failed."""
    client.CoreV1Api(api).patch_namespaced_pod(
        name, ns, {"metadata": {"labels": {controlplane.FAIL_LABEL: "true"}}}
    )
    wait_pod_phase(api, ns, name, "Failed")


def pod_phase(api: client.ApiClient, ns: str, name: str) -> str | None:
    found = pod_or_none(api, ns, name)
    return str(found.status.phase) if found and found.status and found.status.phase else None


def wait_pod_phase(api: client.ApiClient, ns: str, name: str, phase: str) -> None:
    wait_for(lambda: pod_phase(api, ns, name) == phase, what=f"pod {ns}/{name} {phase}")


def delete_pod(api: client.ApiClient, ns: str, name: str, *, wait: bool = True) -> None:
    """Delete with the default grace period: Terminating, then kwok ends it. With wait=True
    (as `kubectl delete` does) return once the pod is gone; otherwise while it may terminate."""
    client.CoreV1Api(api).delete_namespaced_pod(name, ns)
    if wait:
        wait_for(lambda: pod_or_none(api, ns, name) is None, what=f"pod {ns}/{name} gone")


def pod_or_none(api: client.ApiClient, ns: str, name: str) -> Any:
    try:
        return client.CoreV1Api(api).read_namespaced_pod(name, ns)
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def secret_or_none(api: client.ApiClient, ns: str, name: str) -> Any:
    try:
        return client.CoreV1Api(api).read_namespaced_secret(name, ns)
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


# --------------------------------------------------------------------------- bodies


def policy_body(
    name: str = "agents",
    accounts: tuple[str, ...] = ("agent",),
    *,
    tool: str = "github",
    actions: tuple[str, ...] = ("read", "comment"),
    resources: tuple[str, ...] = ("repo:acme/*",),
    audiences: tuple[str, ...] = ("https://api.github.com",),
    approval: str = "none",
    max_ttl: str = "1h",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "subjects": {"serviceAccounts": list(accounts)},
        "rules": [
            {
                "tool": tool,
                "actions": list(actions),
                "resources": list(resources),
                "audiences": list(audiences),
                "maxDataClass": "internal",
                "approval": approval,
            }
        ],
        "maxTTL": max_ttl,
        "maxCredentialTTL": "10m",
    }
    if approval == "required":
        spec["approvers"] = ["user:alice", "group:sre"]
    spec.update(extra or {})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def task_body(
    name: str,
    sa: str = "agent",
    *,
    pod_name: str | None = None,
    tool: str = "github",
    actions: tuple[str, ...] = ("read",),
    resources: tuple[str, ...] = ("repo:acme/widgets",),
    audiences: tuple[str, ...] = ("https://api.github.com",),
    ttl: str = "30m",
    credential_ttl: str = "5m",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    agent: dict[str, Any] = {"serviceAccountName": sa}
    if pod_name:
        agent["podName"] = pod_name
    spec: dict[str, Any] = {
        "agent": agent,
        "intent": f"integration test {name}",
        "scopes": [{"tool": tool, "actions": list(actions), "resources": list(resources)}],
        "audiences": list(audiences),
        "dataClass": "internal",
        "ttl": ttl,
        "credentialTTL": credential_ttl,
    }
    spec.update(extra or {})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentTask",
        "metadata": {"name": name},
        "spec": spec,
    }


def phase_of(api: client.ApiClient, ns: str, name: str) -> str | None:
    return (get(api, ns, "agenttasks", name).get("status") or {}).get("phase")


def wait_phase(
    api: client.ApiClient, ns: str, name: str, phase: str, timeout: float = 20
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        t = get(api, ns, "agenttasks", name)
        return t if (t.get("status") or {}).get("phase") == phase else None

    try:
        return wait_for(check, timeout=timeout, what=f"{ns}/{name} phase {phase}")
    except AssertionError as e:
        st = get(api, ns, "agenttasks", name).get("status")
        raise AssertionError(f"{e}; status now: {st}") from None


def jwks(api: client.ApiClient, operator_ns: str) -> dict[str, Any]:
    import json

    cm = client.CoreV1Api(api).read_namespaced_config_map("taskwarden-jwks", operator_ns)
    return dict(json.loads(cm.data["jwks.json"]))


def revoked_jtis(api: client.ApiClient, operator_ns: str) -> set[str]:
    import json

    try:
        cm = client.CoreV1Api(api).read_namespaced_config_map("taskwarden-revocations", operator_ns)
    except client.ApiException as e:
        if e.status == 404:
            return set()
        raise
    data = json.loads((cm.data or {}).get("revocations.json", "{}") or "{}")
    return {e["jti"] for e in data.get("revoked", [])}


def token_of(secret: Any) -> str:
    import base64

    return base64.b64decode(secret.data["token"]).decode()


def events_for(api: client.ApiClient, ns: str, name: str) -> list[Any]:
    evs = client.EventsV1Api(api).list_namespaced_event(ns, field_selector=f"regarding.name={name}")
    return list(evs.items)


def create_task(
    api: client.ApiClient, ns: str, body: dict[str, Any], as_username: str | None = None
) -> dict[str, Any]:
    """Create an AgentTask as its agent's own ServiceAccount (impersonated), as agents do."""
    sa = body["spec"]["agent"]["serviceAccountName"]
    who = as_username or f"system:serviceaccount:{ns}:{sa}"
    return create(as_user(api, who), ns, "agenttasks", body)


def agent_namespace(api: client.ApiClient, name: str, role: str = "taskwarden:agent") -> None:
    """A namespace whose ServiceAccounts (and user alice, group sre) may use AgentTasks."""
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        name,
        {
            "metadata": {"name": "agents"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [
                {
                    "kind": "Group",
                    "name": f"system:serviceaccounts:{name}",
                    "apiGroup": "rbac.authorization.k8s.io",
                },
                {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"},
                {"kind": "Group", "name": "sre", "apiGroup": "rbac.authorization.k8s.io"},
            ],
        },
    )


# --------------------------------------------------------------------------- prepared namespaces


@dataclass
class Task:
    """An AgentTask a test created and saw reach a phase, with accessors for its credential."""

    env: AgentEnv
    name: str
    created: dict[str, Any]
    """The object as admission returned it (uid, stamped annotations)."""
    body: dict[str, Any]
    """The object as first seen in the phase waited for."""

    @property
    def namespace(self) -> str:
        return self.env.namespace

    @property
    def uid(self) -> str:
        return str(self.created["metadata"]["uid"])

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body["status"])

    @property
    def jti(self) -> str:
        return str(self.body["status"]["credential"]["jti"])

    @property
    def secret_name(self) -> str:
        return f"{self.name}-credential"

    def get(self) -> dict[str, Any]:
        return get(self.env.api, self.namespace, "agenttasks", self.name)

    def phase(self) -> str | None:
        return phase_of(self.env.api, self.namespace, self.name)

    def wait(self, phase: str, timeout: float = 20) -> dict[str, Any]:
        return wait_phase(self.env.api, self.namespace, self.name, phase, timeout)

    def secret(self) -> Any:
        """The credential Secret, waiting for it to appear."""
        return wait_for(
            lambda: secret_or_none(self.env.api, self.namespace, self.secret_name),
            what=f"secret {self.namespace}/{self.secret_name}",
        )

    def token(self) -> str:
        return token_of(self.secret())


@dataclass
class AgentEnv:
    """A namespace prepared for agents: Running pods of one ServiceAccount and an AgentPolicy."""

    api: client.ApiClient
    namespace: str
    policy: dict[str, Any]
    pods: dict[str, dict[str, Any]]
    sa: str = "agent"
    cluster: controlplane.ControlPlane | None = None

    @property
    def pod(self) -> dict[str, Any]:
        """The first pod, as created."""
        return next(iter(self.pods.values()))

    @property
    def pod_uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.sa}"

    def as_agent(self) -> client.ApiClient:
        """Admin impersonating the agent's ServiceAccount."""
        return as_user(self.api, self.username)

    def agent_api(self, pod: str | None = "agent-0") -> client.ApiClient:
        """The API as the agent's real (pod-bound unless pod is None) ServiceAccount token."""
        assert self.cluster is not None, "AgentEnv made without a cluster"
        return agent_api(self.cluster, self.api, self.namespace, self.sa, pod)

    def create_task(
        self, name: str, *, creator: client.ApiClient | None = None, **task: Any
    ) -> dict[str, Any]:
        """Create an AgentTask for this env's agent, as the agent (impersonated) by default."""
        body = task_body(name, self.sa, **task)
        if creator is None:
            return create_task(self.api, self.namespace, body)
        return create(creator, self.namespace, "agenttasks", body)

    def task(
        self,
        name: str = "task",
        *,
        creator: client.ApiClient | None = None,
        phase: str = "Active",
        timeout: float = 20,
        **task: Any,
    ) -> Task:
        """Create a task and wait for `phase`; an Active one also has its Secret by then."""
        created = self.create_task(name, creator=creator, **task)
        body = wait_phase(self.api, self.namespace, name, phase, timeout)
        t = Task(self, name, created, body)
        if phase == "Active":
            t.secret()
        return t


def agent_env(
    api: client.ApiClient,
    ns: str,
    *,
    policy: dict[str, Any] | None = None,
    pods: tuple[str, ...] = ("agent-0",),
    sa: str = "agent",
    cluster: controlplane.ControlPlane | None = None,
) -> AgentEnv:
    """Running pods for ServiceAccount `sa` and an AgentPolicy (default `policy_body()`)."""
    made = {name: pod(api, ns, name, sa) for name in pods}
    pol = policy if policy is not None else policy_body(accounts=(sa,))
    create(api, ns, "agentpolicies", pol)
    return AgentEnv(api, ns, pol, made, sa, cluster)


def cel_policies_active(api: client.ApiClient, ns: str) -> bool:
    """Both admission policies are in force in `ns`: a dry-run create by the agent's own
    ServiceAccount is stamped (MutatingAdmissionPolicy), a forged stamp is refused by the
    ValidatingAdmissionPolicy. Impersonation adds system:masters, so no RBAC is needed."""
    me = as_user(api, f"system:serviceaccount:{ns}:agent", group="system:masters")
    made = custom(me).create_namespaced_custom_object(
        GROUP, VERSION, ns, "agenttasks", task_body("probe-stamp"), dry_run="All"
    )
    if "taskwarden.dev/requester" not in ((made.get("metadata") or {}).get("annotations") or {}):
        return False
    forged = task_body("probe-forged")
    forged["metadata"]["annotations"] = {"taskwarden.dev/requester": '{"username":"x"}'}
    try:
        custom(me).create_namespaced_custom_object(
            GROUP, VERSION, ns, "agenttasks", forged, dry_run="All"
        )
    except client.ApiException as e:
        return POLICY_REFUSAL in (e.body or "")
    return False
