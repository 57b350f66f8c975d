"""`taskwarden dev` / `make demo`: the whole story on a real local control plane, then clean up.

Starts etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok (a kubelet-less
Node), installs the CRDs, runs the operator as a subprocess, runs one agent pod, and walks
through a granted task (printing the decoded, verified claims — never the token), a denied task,
completion and revocation.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from taskwarden import controlplane, names

T = TypeVar("T")
NS = "agents"


def repo_root() -> Path:
    here = Path(__file__).resolve().parents[2]
    return here if (here / "crds").is_dir() else Path.cwd()


def say(msg: str = "") -> None:
    print(msg, flush=True)


def step(msg: str) -> None:
    say(f"\n\033[1m==> {msg}\033[0m")


def wait(fn: Callable[[], T | None], timeout: float = 30, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            v = fn()
            if v:
                return v
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def published(core: Any, configmap: str, key: str) -> str:
    """A document the operator publishes in a ConfigMap of its namespace."""
    data = core.read_namespaced_config_map(configmap, "taskwarden-system").data or {}
    return str(data[key])


def run(keep: bool = False) -> int:
    import yaml
    from kubernetes import client

    from taskwarden.credentials import tokens

    root = repo_root()
    workdir = Path(tempfile.mkdtemp(prefix="taskwarden-demo-"))
    step("Starting a real control plane (etcd, kube-apiserver, kube-controller-manager)")
    t0 = time.monotonic()
    cp = controlplane.start(workdir / "cp", detach=keep)
    say(f"kube-apiserver {cp.version} ready at {cp.server} in {time.monotonic() - t0:.1f}s")
    op: subprocess.Popen[bytes] | None = None
    try:
        api = cp.api_client()
        core = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        step("Installing the CRDs")
        for name in controlplane.install_crds(api, root / "crds"):
            say(f"  {name}")
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name="taskwarden-system"))
        )

        step("Starting the operator (taskwarden run)")
        ports = {k: controlplane.free_port() for k in ("metrics", "health", "webhook", "public")}
        env = dict(os.environ)
        env.update(cp.env())
        env.update(
            KUBECONFIG=str(cp.kubeconfig),
            TASKWARDEN_OPERATOR_NAMESPACE="taskwarden-system",
            TASKWARDEN_METRICS_PORT=str(ports["metrics"]),
            TASKWARDEN_HEALTH_PORT=str(ports["health"]),
            TASKWARDEN_WEBHOOK_PORT=str(ports["webhook"]),
            TASKWARDEN_WEBHOOK_URL=f"https://127.0.0.1:{ports['webhook']}",
            TASKWARDEN_PUBLIC_PORT=str(ports["public"]),
            TASKWARDEN_ISSUER=f"https://127.0.0.1:{ports['public']}",
        )
        log = (workdir / "operator.log").open("wb")
        op = subprocess.Popen(
            [sys.executable, "-m", "taskwarden", "run", "--bind", "127.0.0.1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def healthy() -> bool:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{ports['health']}/healthz", timeout=1
            ) as r:
                return bool(r.status == 200)

        wait(healthy, 60, "operator health")
        say(f"operator healthy; audit log and operator log in {workdir / 'operator.log'}")

        step("Applying the examples: namespace, service accounts, policy")
        for f in ("namespace.yaml", "serviceaccount.yaml", "policy.yaml"):
            for doc in yaml.safe_load_all((root / "manifests/examples" / f).read_text()):
                if not doc:
                    continue
                kind = doc["kind"]
                if kind == "Namespace":
                    core.create_namespace(doc)
                elif kind == "ServiceAccount":
                    core.create_namespaced_service_account(NS, doc)
                elif kind == "AgentPolicy":
                    custom.create_namespaced_custom_object(
                        names.GROUP, names.VERSION, NS, "agentpolicies", doc
                    )
                say(f"  {kind}/{doc['metadata']['name']}")
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            NS,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="agent-tasks"),
                rules=[
                    client.V1PolicyRule(
                        api_groups=[names.GROUP],
                        resources=["agenttasks"],
                        verbs=["create", "get", "list", "watch", "patch"],
                    )
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            NS,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="agent-tasks"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="agent-tasks"
                ),
                subjects=[
                    client.RbacV1Subject(
                        kind="Group",
                        name=f"system:serviceaccounts:{NS}",
                        api_group="rbac.authorization.k8s.io",
                    )
                ],
            ),
        )

        # The task first: the pod guard admits a pod naming a task's credential only once the
        # task exists (it waits Pending until a pod of its ServiceAccount runs).
        step("Access is asked for: AgentTask triage-4711 (as the agent's ServiceAccount)")
        task = yaml.safe_load((root / "manifests/examples/task.yaml").read_text())
        agent = client.ApiClient(api.configuration)
        agent.default_headers["Impersonate-User"] = f"system:serviceaccount:{NS}:research-agent"
        t0 = time.monotonic()
        client.CustomObjectsApi(agent).create_namespaced_custom_object(
            names.GROUP, names.VERSION, NS, "agenttasks", task
        )

        step("An agent pod starts (kube-scheduler binds it, kwok runs it on a kubelet-less Node)")
        pod = yaml.safe_load((root / "manifests/examples/agent-pod.yaml").read_text())
        created = core.create_namespaced_pod(NS, pod)
        name = pod["metadata"]["name"]

        def pod_running() -> Any:
            found = core.read_namespaced_pod(name, NS)
            return found if found.status and found.status.phase == "Running" else None

        running = wait(pod_running, 30, f"pod {name} Running")
        meta, pod_spec = created.metadata or client.V1ObjectMeta(), created.spec
        say(f"  pod/{meta.name} uid={meta.uid} Running on node {running.spec.node_name}")
        say(f"  pod IP {running.status.pod_ip}")
        say(f"  mounted volumes: {[v.name for v in (pod_spec and pod_spec.volumes) or []]}")

        def phase(name: str, want: str) -> dict[str, Any] | None:
            raw = custom.get_namespaced_custom_object(
                names.GROUP, names.VERSION, NS, "agenttasks", name
            )
            obj = raw if isinstance(raw, dict) else {}
            return obj if (obj.get("status") or {}).get("phase") == want else None

        obj = wait(lambda: phase("triage-4711", "Active"), 30, "triage-4711 Active")
        st = obj["status"]
        say(f"  Active after {time.monotonic() - t0:.2f}s: {st['message']}")
        say(f"  identity: {st['identity']['spiffeID']} pod {st['identity']['podName']}")
        say(f"  decision: policy {st['decision']['policy']} rule {st['decision']['rule']}")
        requester = obj["metadata"].get("annotations", {}).get(names.REQUESTER_ANNOTATION)
        if requester:
            say(f"  requester (stamped by admission): {requester}")

        step("The credential Secret, verified against the published JWKS (claims only)")
        secret = core.read_namespaced_secret("triage-4711-credential", NS)
        secret_data = secret.data or {}
        token = base64.b64decode(secret_data["token"]).decode()
        jwks = json.loads(published(core, "taskwarden-jwks", "jwks.json"))
        claims = tokens.verify(
            token,
            jwks,
            now=time.time(),
            audience="https://api.github.com",
            issuer=env["TASKWARDEN_ISSUER"],
        )
        del token
        secret_name = (secret.metadata or client.V1ObjectMeta()).name
        say(f"  Secret {secret_name} type={secret.type} keys={sorted(secret_data)}")
        say("  " + json.dumps(claims, indent=2, sort_keys=True).replace("\n", "\n  "))

        step("A task asking for more than the policy allows is denied")
        bad = json.loads(json.dumps(task))
        bad["metadata"]["name"] = "push-4711"
        bad["spec"]["scopes"][0]["actions"] = ["read", "push"]
        client.CustomObjectsApi(agent).create_namespaced_custom_object(
            names.GROUP, names.VERSION, NS, "agenttasks", bad
        )
        obj = wait(lambda: phase("push-4711", "Denied"), 30, "push-4711 Denied")
        say(f"  Denied: {obj['status']['reason']}: {obj['status']['message']}")

        step("The agent finishes: spec.completed=true revokes at once")
        t0 = time.monotonic()
        client.CustomObjectsApi(agent).patch_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            NS,
            "agenttasks",
            "triage-4711",
            {"spec": {"completed": True}},
        )
        obj = wait(lambda: phase("triage-4711", "Completed"), 30, "triage-4711 Completed")

        def secret_gone() -> bool:
            try:
                core.read_namespaced_secret("triage-4711-credential", NS)
                return False
            except client.ApiException as e:
                return bool(e.status == 404)

        wait(secret_gone, 10, "Secret deleted")
        revoked = json.loads(published(core, "taskwarden-revocations", "revocations.json"))
        listed = claims["jti"] in {e["jti"] for e in revoked["revoked"]}
        say(f"  Completed in {time.monotonic() - t0:.2f}s; Secret deleted; jti listed: {listed}")
        say(
            "  history: "
            + ", ".join(f"{h['phase']}/{h['reason']}" for h in obj["status"]["history"])
        )

        step("Metrics (taskwarden_*)")
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if (
                    line.startswith("taskwarden_")
                    and not line.startswith(
                        (
                            "taskwarden_issuance_duration_seconds_bucket",
                            "taskwarden_revocation_lag_seconds_bucket",
                            "taskwarden_admission_duration_seconds_bucket",
                        )
                    )
                    and "_created" not in line
                ):
                    say(f"  {line}")

        step("Audit trail (one JSON line per decision)")
        for line in (workdir / "operator.log").read_text().splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                say(f"  {rec['event']:>10} {rec['name']:<12} {rec['reason']:<16} jti={rec['jti']}")
        say("\nDemo finished.")
        return 0
    finally:
        step("Cleaning up")
        if op is not None:
            op.terminate()
            with contextlib.suppress(Exception):
                op.wait(20)
        if not keep:
            cp.stop()
            say("control plane stopped")
        else:
            say(f"control plane left running: export KUBECONFIG={cp.kubeconfig}")
