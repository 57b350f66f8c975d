"""The Helm chart, the rendered install manifest and the operator RBAC, on the real apiserver.

* `helm lint --strict` and `helm template` with default and all-features values; the schema
  rejects unknown keys and bad values.
* Every rendered object is accepted by `kubectl apply --dry-run=server` on the local control
  plane (ServiceMonitor/PrometheusRule through minimal monitoring.coreos.com CRDs installed here),
  and so is manifests/install.yaml; the operator pod passes the `restricted` Pod Security level.
* manifests/install.yaml and charts/taskwarden/files/crds/ are in sync with the chart and crds/.
* Install, upgrade and uninstall with Helm for real: the chart owns every admission object (its
  webhooks are the operator's, plus matchConditions), its CA is stable across upgrades, an upgrade
  from the previous chart version upgrades the CRDs, and after `helm uninstall` nothing blocks
  writes and nothing of Taskwarden is left but the kept CRDs.
* RBAC least privilege, decided by the real authorizer: the chart's roles are created, a
  ServiceAccount bound as the chart binds it gets a TokenRequest token, and SelfSubjectAccessReview
  (plus a few real calls) shows it can make exactly the calls the operator makes, and not others.

Helm comes from hack/install-helm.sh (built from the Go module proxy, cached); kubectl from the
control plane's binaries.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from taskwarden import controlplane
from taskwarden.credentials import ledger
from tests.integration import helpers as h
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "taskwarden"
INSTALL = ROOT / "manifests" / "install.yaml"
GROUP = "taskwarden.dev"

Doc = dict[str, Any]

ALERTS = {
    "TaskwardenIssuanceFailures",
    "TaskwardenRevocationLagHigh",
    "TaskwardenWebhookErrors",
    "TaskwardenWebhookLatencyHigh",
    "TaskwardenSigningKeyOld",
    "TaskwardenOperatorDown",
    "TaskwardenNoActiveReplica",
    "TaskwardenRevocationListNearCapacity",
    "TaskwardenShardWithoutOwner",
    "TaskwardenRotationBehind",
}

# The operator's own objects in its namespace (publishing.py, webhooks) and its webhook
# configurations: fixed names, so RBAC pins them with resourceNames.
OPERATOR_SECRETS = ("taskwarden-signing-keys", "taskwarden-webhook-tls")
OPERATOR_CONFIGMAPS = ("taskwarden-jwks", "taskwarden-revocations")
WEBHOOK_CONFIG = "taskwarden"
CRD_NAMES = {
    "agenttasks.taskwarden.dev",
    "agentpolicies.taskwarden.dev",
    "agentapprovals.taskwarden.dev",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
}
# The operator generates its CA and registers the webhook configurations itself.
OPERATOR_CA = {"webhook": {"certificate": {"generate": False}}}


# --------------------------------------------------------------------------- tools


@pytest.fixture(scope="session")
def helm() -> Path:
    """Helm from the cache, built from the Go module proxy on first use (about 3 minutes)."""
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "install-helm.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, f"hack/install-helm.sh failed:\n{proc.stderr[-4000:]}"
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def kubectl(cluster: controlplane.ControlPlane) -> list[str]:
    return [str(controlplane.find_binaries()["kubectl"]), "--kubeconfig", str(cluster.kubeconfig)]


def run(
    argv: list[str], stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def render(
    helm: Path,
    tmp_path: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = "taskwarden",
    namespace: str = "taskwarden-system",
    extra: tuple[str, ...] = (),
) -> str:
    argv = [str(helm), "template", release, str(CHART), "--namespace", namespace, *extra]
    if values is not None:
        vf = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
        vf.write_text(yaml.safe_dump(values))
        argv += ["-f", str(vf)]
    proc = run(argv)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return proc.stdout


def docs(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def one(objs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kubectl_apply(kubectl: list[str], text: str, *, dry_run: bool = True) -> str:
    argv = [*kubectl, "apply", "-f", "-"]
    if dry_run:
        argv.append("--dry-run=server")
    proc = run(argv, stdin=text)
    assert proc.returncode == 0, f"kubectl apply failed:\n{proc.stderr}\n{proc.stdout}"
    return proc.stdout


def all_features(watch: list[str]) -> dict[str, Any]:
    return {
        "replicaCount": 3,
        "watchNamespaces": watch,
        "trustDomain": "prod.example.org",
        "issuer": "https://taskwarden.example.org",
        "verbose": True,
        "extraEnv": [{"name": "TASKWARDEN_REVOCATION_MAX_ENTRIES", "value": "5000"}],
        "signingKeys": {"algorithm": "EdDSA", "rotationSeconds": 3600},
        "podAnnotations": {"example.org/team": "security"},
        "priorityClassName": "",
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}, "interval": "15s"},
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "prometheus"},
            "additionalAlertLabels": {"team": "security"},
        },
        "grafanaDashboard": {"enabled": True},
        "metrics": {"service": {"annotations": {"prometheus.io/scrape": "true"}}},
    }


# --------------------------------------------------------------------------- namespaces


@pytest.fixture
def make_namespace(api: client.ApiClient) -> Iterator[Callable[..., str]]:
    core = client.CoreV1Api(api)
    made: list[str] = []

    def make(prefix: str = "chart", labels: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
        made.append(name)
        return name

    yield make
    for name in made:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name)


@pytest.fixture(scope="module")
def monitoring_crds(api: client.ApiClient) -> Iterator[None]:
    """Minimal ServiceMonitor and PrometheusRule CRDs, so the apiserver can dry-run those kinds."""
    ext = client.ApiextensionsV1Api(api)
    created: list[str] = []
    for kind, plural in (
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ):
        name = f"{plural}.monitoring.coreos.com"
        body = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {
                    "kind": kind,
                    "plural": plural,
                    "singular": kind.lower(),
                    "listKind": f"{kind}List",
                },
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        }
        try:
            ext.create_custom_resource_definition(body)
            created.append(name)
        except ApiException as e:
            if e.status != 409:
                raise

        def established(n: str = name) -> bool:
            conds = ext.read_custom_resource_definition(n).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conds)

        wait_for(established, timeout=30, what=f"CRD {name} Established")
    yield
    for name in created:
        with contextlib.suppress(ApiException):
            ext.delete_custom_resource_definition(name)


# --------------------------------------------------------------------------- sync and lint


def test_chart_crds_are_a_copy_of_crds() -> None:
    repo = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert repo, "crds/ is empty"
    assert sorted(chart) == sorted(repo), (
        "charts/taskwarden/files/crds/ has other files than crds/: run hack/render-install.sh"
    )
    drifted = [n for n in repo if chart[n] != repo[n]]
    assert not drifted, (
        f"charts/taskwarden/files/crds/ drifted from crds/ in {drifted}: run hack/render-install.sh"
    )


def test_install_manifest_is_a_fresh_render(helm: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "render-install.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "HELM": str(helm)},
    )
    assert proc.returncode == 0, f"out of sync (run hack/render-install.sh):\n{proc.stderr[-6000:]}"
    objs = docs(INSTALL.read_text())
    assert objs[0]["kind"] == "Namespace" and objs[0]["metadata"]["name"] == "taskwarden-system"
    crds = {o["metadata"]["name"] for o in objs if o["kind"] == "CustomResourceDefinition"}
    assert {
        "agenttasks.taskwarden.dev",
        "agentpolicies.taskwarden.dev",
        "agentapprovals.taskwarden.dev",
        "clusterkopfpeerings.kopf.dev",
    } <= crds


def test_helm_lint_strict(helm: Path, tmp_path: Path) -> None:
    vf = tmp_path / "all.yaml"
    vf.write_text(yaml.safe_dump(all_features(["agents", "tools"])))
    for extra in ([], ["-f", str(vf)]):
        proc = run([str(helm), "lint", "--strict", str(CHART), *extra])
        assert proc.returncode == 0, f"helm lint {extra}:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2, "bogus": True}, "bogus"),
        ({"image": {"repository": "x", "tga": "1"}}, "tga"),
        ({"serviceMonitor": {"enabled": True, "intervall": "1m"}}, "intervall"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"signingKeys": {"algorithm": "RS256"}}, "algorithm"),
        ({"issuer": "http://plain.example"}, "issuer"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"replicaCount": 2, "peering": {"name": ""}}, "peering.name must be set"),
        ({"sharding": {"renewDeadlineSeconds": 15}}, "renewDeadlineSeconds < leaseDuration"),
        ({"sharding": {"shards": 0}}, "shards"),
        ({"webhook": {"timeoutSeconds": 31}}, "timeoutSeconds"),
        ({"webhook": {"pods": {"mutation": {"failurePolicy": "Sometimes"}}}}, "failurePolicy"),
        # The guard and the task/approval webhooks are Fail, not configurable.
        ({"webhook": {"pods": {"guard": {"failurePolicy": "Ignore"}}}}, "failurePolicy"),
        ({"webhook": {"failurePolicy": "Ignore"}}, "failurePolicy"),
        ({"certManager": {"enabled": True, "renewBefore": "30d"}}, "renewBefore"),
        ({"crds": {"enabled": True, "kept": True}}, "kept"),
        ({"rotationConcurrency": 0}, "rotationConcurrency"),
    ],
)
def test_values_are_validated(
    helm: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    vf = tmp_path / "bad.yaml"
    vf.write_text(yaml.safe_dump(values))
    proc = run([str(helm), "template", "taskwarden", str(CHART), "-f", str(vf)])
    assert proc.returncode != 0, f"accepted bad values {values}"
    assert message in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- what is rendered


def test_default_render(helm: Path, tmp_path: Path) -> None:
    objs = docs(render(helm, tmp_path))
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    dep = one(objs, "Deployment", "taskwarden")
    spec = dep["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == f"ghcr.io/taskwarden/taskwarden:{chart['appVersion']}"
    assert c["args"] == ["run"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["TASKWARDEN_NAMESPACES"]["value"] == ""
    assert env["TASKWARDEN_TRUST_DOMAIN"]["value"] == "cluster.local"
    assert env["TASKWARDEN_ISSUER"]["value"] == "https://taskwarden.taskwarden-system.svc"
    assert env["TASKWARDEN_PEERING"]["value"] == "taskwarden"
    assert env["TASKWARDEN_ROTATION_CONCURRENCY"]["value"] == "16"
    assert env["TASKWARDEN_SHARDS"]["value"] == "16"
    assert env["TASKWARDEN_LEASE_DURATION_SECONDS"]["value"] == "15"
    assert env["TASKWARDEN_LEASE_RENEW_DEADLINE_SECONDS"]["value"] == "10"
    assert env["TASKWARDEN_LEASE_RETRY_SECONDS"]["value"] == "2"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"admission": 9443, "public": 8443, "metrics": 9090, "health": 8080}
    for var, port in (
        ("TASKWARDEN_WEBHOOK_PORT", 9443),
        ("TASKWARDEN_PUBLIC_PORT", 8443),
        ("TASKWARDEN_METRICS_PORT", 9090),
        ("TASKWARDEN_HEALTH_PORT", 8080),
    ):
        assert env[var]["value"] == str(port)
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["serviceAccountName"] == one(objs, "ServiceAccount")["metadata"]["name"]

    # The webhook Service is the one the operator points its webhook configurations at.
    svc = one(objs, "Service", env["TASKWARDEN_WEBHOOK_SERVICE"]["value"])
    assert svc["metadata"]["name"] == "taskwarden"
    # 443 is the issuer (public endpoints); admission has its own port, apart from them.
    assert svc["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "public", "protocol": "TCP"},
        {"name": "admission", "port": 9443, "targetPort": "admission", "protocol": "TCP"},
    ]
    metrics = one(objs, "Service", "taskwarden-metrics")
    assert metrics["spec"]["ports"][0]["port"] == 9090
    for s in (svc, metrics):
        assert s["spec"]["selector"] == spec["selector"]["matchLabels"]
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap", "Issuer", "Certificate"}
    # The chart owns the admission objects and the CRDs (templates, kept on uninstall).
    assert env["TASKWARDEN_MANAGE_WEBHOOKS"]["value"] == "false"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        assert one(objs, kind, "taskwarden")["webhooks"]
    crds = {o["metadata"]["name"]: o for o in objs if o["kind"] == "CustomResourceDefinition"}
    assert set(crds) == CRD_NAMES
    for crd in crds.values():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    ca = one(objs, "Secret", "taskwarden-webhook-ca")
    tls = one(objs, "Secret", "taskwarden-webhook-tls")
    assert tls["data"]["ca.crt"] == ca["data"]["tls.crt"]
    roles = {o["metadata"]["name"] for o in objs if o["kind"] == "ClusterRole"}
    assert {"taskwarden:agent", "taskwarden:approver"} <= roles
    # One replica: no PDB (minAvailable 1 of 1 would block node drains).
    single = docs(render(helm, tmp_path, {"replicaCount": 1}))
    assert not [o for o in single if o["kind"] == "PodDisruptionBudget"]


def test_namespaced_mode_binds_only_the_watched_namespaces(helm: Path, tmp_path: Path) -> None:
    objs = docs(render(helm, tmp_path, {"watchNamespaces": ["agents", "tools"]}))
    env = {
        e["name"]: e.get("value")
        for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TASKWARDEN_NAMESPACES"] == "agents,tools"
    crbs = {o["roleRef"]["name"] for o in objs if o["kind"] == "ClusterRoleBinding"}
    assert crbs == {"taskwarden:operator-cluster"}
    rbs = {
        (o["metadata"]["namespace"], o["roleRef"]["kind"], o["roleRef"]["name"])
        for o in objs
        if o["kind"] == "RoleBinding"
    }
    assert rbs == {
        ("agents", "ClusterRole", "taskwarden:operator"),
        ("tools", "ClusterRole", "taskwarden:operator"),
        ("taskwarden-system", "Role", "taskwarden:operator"),
    }

    def resources(role: Doc) -> set[str]:
        return {r for rule in role["rules"] for r in rule["resources"]}

    # kopf peering is not used (sharding holds coordination.k8s.io Leases in the release
    # namespace instead): no kopf.dev rights anywhere.
    assert "kopfpeerings" not in resources(one(objs, "ClusterRole", "taskwarden:operator"))
    assert "clusterkopfpeerings" not in resources(
        one(objs, "ClusterRole", "taskwarden:operator-cluster")
    )
    assert "leases" in resources(one(objs, "Role", "taskwarden:operator"))


def test_monitoring_objects(helm: Path, tmp_path: Path) -> None:
    objs = docs(render(helm, tmp_path, all_features(["agents"])))
    sm = one(objs, "ServiceMonitor")
    metrics_svc = one(objs, "Service", "taskwarden-metrics")
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        assert metrics_svc["metadata"]["labels"][k] == v
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "prometheus"

    rule = one(objs, "PrometheusRule")
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    for r in rules:
        anchor = r["alert"].lower()
        assert r["annotations"]["runbook_url"].endswith(f"docs/operations.md#{anchor}")
        assert r["labels"]["severity"] in {"warning", "critical"}
        assert r["labels"]["team"] == "security"
    by_name = {r["alert"]: r["expr"] for r in rules}
    assert "taskwarden_reconcile_errors_total" in by_name["TaskwardenIssuanceFailures"]
    assert "histogram_quantile(0.99" in by_name["TaskwardenRevocationLagHigh"]
    assert by_name["TaskwardenRevocationLagHigh"].rstrip().endswith("> 1")
    assert 'allowed="error"' in by_name["TaskwardenWebhookErrors"]
    assert by_name["TaskwardenWebhookLatencyHigh"].rstrip().endswith("> 0.02")
    # 1.5 x the configured rotation period (3600 s in these values).
    assert by_name["TaskwardenSigningKeyOld"].rstrip().endswith("> 5400")
    assert "taskwarden_replica_active" in by_name["TaskwardenNoActiveReplica"]
    assert by_name["TaskwardenRevocationListNearCapacity"].rstrip().endswith("> 0.8")
    assert "taskwarden_shards_owned" in by_name["TaskwardenShardWithoutOwner"]
    assert by_name["TaskwardenRotationBehind"].rstrip().endswith("> 0.25")

    cm = one(objs, "ConfigMap", "taskwarden-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["taskwarden.json"])
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for metric in (
        "taskwarden_credentials_issued_total",
        "taskwarden_credentials_revoked_total",
        "taskwarden_active_credentials",
        "taskwarden_issuance_duration_seconds_bucket",
        "taskwarden_revocation_lag_seconds_bucket",
        "taskwarden_policy_decisions_total",
        "taskwarden_admission_duration_seconds_bucket",
        "taskwarden_identity_verifications_total",
    ):
        assert any(metric in e for e in exprs), f"no dashboard panel queries {metric}"

    # Every taskwarden_* series named in alerts and dashboard is one the operator exports.
    from prometheus_client import REGISTRY

    from taskwarden import metrics  # noqa: F401 - registers the metrics

    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
    }
    exported = {m.name + sfx for m in REGISTRY.collect() for sfx in suffixes.get(m.type, ("",))}
    used = set(re.findall(r"taskwarden_[a-z_]+", " ".join([*by_name.values(), *exprs])))
    assert used <= exported, f"unknown metrics referenced: {sorted(used - exported)}"


# --------------------------------------------------------------------------- the real apiserver


def test_default_chart_is_accepted_by_the_apiserver(
    helm: Path,
    kubectl: list[str],
    crds: list[str],
    make_namespace: Callable[..., str],
    tmp_path: Path,
) -> None:
    ns = make_namespace("chart")
    out = kubectl_apply(kubectl, render(helm, tmp_path, release=f"tw-{ns}", namespace=ns))
    assert "deployment.apps/tw-" in out and "(server dry run)" in out


def test_all_features_chart_is_accepted_by_the_apiserver(
    helm: Path,
    kubectl: list[str],
    crds: list[str],
    monitoring_crds: None,
    make_namespace: Callable[..., str],
    tmp_path: Path,
) -> None:
    ns = make_namespace("chart")
    watched = [make_namespace("agents"), make_namespace("tools")]
    text = render(
        helm,
        tmp_path,
        all_features(watched),
        release=f"tw-{ns}",
        namespace=ns,
        extra=("--include-crds",),
    )
    out = kubectl_apply(kubectl, text)
    for kind in (
        "servicemonitor.monitoring.coreos.com",
        "prometheusrule.monitoring.coreos.com",
        "configmap/",
        "customresourcedefinition.apiextensions.k8s.io/agenttasks",
    ):
        assert kind in out, out


def test_install_manifest_is_accepted_by_the_apiserver(
    api: client.ApiClient, kubectl: list[str], crds: list[str]
) -> None:
    # Namespaced objects can only be dry-run into a namespace that exists.
    with contextlib.suppress(ApiException):
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "taskwarden-system"}})
    # The session's operator may have registered webhook configurations named taskwarden (with
    # a URL, for a local run): validate the manifest's under another name.
    objs = docs(INSTALL.read_text())
    for o in objs:
        if o["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            assert o["metadata"]["name"] == WEBHOOK_CONFIG
            o["metadata"]["name"] = f"install-{uuid.uuid4().hex[:6]}"
    out = kubectl_apply(kubectl, yaml.safe_dump_all(objs))
    assert "deployment.apps/taskwarden" in out
    assert "mutatingwebhookconfiguration.admissionregistration.k8s.io/install-" in out


def test_operator_pod_passes_restricted_pod_security(
    helm: Path, api: client.ApiClient, make_namespace: Callable[..., str], tmp_path: Path
) -> None:
    ns = make_namespace(
        "psa",
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        },
    )
    dep = one(docs(render(helm, tmp_path, namespace=ns)), "Deployment")
    core = client.CoreV1Api(api)
    client.CoreV1Api(api).create_namespaced_service_account(
        ns, {"metadata": {"name": "taskwarden"}}
    )
    template = dep["spec"]["template"]
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "taskwarden-psa", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    core.create_namespaced_pod(ns, body, dry_run="All")  # raises 403 on a violation
    # The check is real: the same pod running as root is refused.
    bad = json.loads(json.dumps(body))
    bad["spec"]["containers"][0]["securityContext"].update(runAsNonRoot=False, runAsUser=0)
    bad["spec"]["securityContext"].update(runAsNonRoot=False, runAsUser=0)
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod(ns, bad, dry_run="All")
    assert exc.value.status == 403 and "restricted" in exc.value.body


# --------------------------------------------------------------------------- RBAC


RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@contextlib.contextmanager
def chart_rbac(
    helm: Path,
    kubectl: list[str],
    tmp_path: Path,
    release: str,
    namespace: str,
    values: dict[str, Any] | None = None,
) -> Iterator[list[Doc]]:
    """Create the chart's ServiceAccount and RBAC objects for real; delete them afterwards."""
    objs = [
        o
        for o in docs(render(helm, tmp_path, values, release=release, namespace=namespace))
        if o["kind"] in RBAC_KINDS
    ]
    text = yaml.safe_dump_all(objs)
    kubectl_apply(kubectl, text, dry_run=False)
    try:
        yield objs
    finally:
        run([*kubectl, "delete", "--ignore-not-found", "--wait=false", "-f", "-"], stdin=text)


def token_client(api: client.ApiClient, namespace: str, sa: str) -> client.ApiClient:
    """An ApiClient authenticated as the ServiceAccount, with a TokenRequest token."""
    tr = client.CoreV1Api(api).create_namespaced_service_account_token(
        sa, namespace, {"spec": {"expirationSeconds": 600}}
    )
    admin = api.configuration
    cfg = client.Configuration()
    cfg.host = admin.host
    cfg.ssl_ca_cert = admin.ssl_ca_cert
    cfg.verify_ssl = True
    cfg.api_key = {"authorization": f"Bearer {tr.status.token}"}
    return client.ApiClient(cfg)


def can(
    as_sa: client.ApiClient,
    verb: str,
    resource: str,
    *,
    group: str = "",
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> bool:
    attrs = {"verb": verb, "group": group, "resource": resource}
    if namespace:
        attrs["namespace"] = namespace
    if name:
        attrs["name"] = name
    if subresource:
        attrs["subresource"] = subresource
    review = client.AuthorizationV1Api(as_sa).create_self_subject_access_review(
        {"spec": {"resourceAttributes": attrs}}
    )
    return bool(review.status.allowed)


Check = tuple[str, str, dict[str, Any]]  # verb, resource, keyword args for can()


def assert_access(as_sa: client.ApiClient, allowed: list[Check], denied: list[Check]) -> None:
    wrong = [f"cannot {v} {r} {kw}" for v, r, kw in allowed if not can(as_sa, v, r, **kw)]
    wrong += [f"CAN {v} {r} {kw}" for v, r, kw in denied if can(as_sa, v, r, **kw)]
    assert not wrong, "RBAC differs from what the operator needs:\n" + "\n".join(wrong)


def operator_needs(op_ns: str, task_ns: str | None, *, manage_webhooks: bool) -> list[Check]:
    """Every call the operator makes (kube.py, cli.py, publishing.py, kopf), as RBAC checks.

    task_ns None means cluster-wide: checked both across all namespaces and in op_ns' neighbours.
    manage_webhooks: the operator registers its webhook configurations (OPERATOR_CA)."""
    tw = {"group": GROUP}
    ns = {"namespace": task_ns} if task_ns else {}
    checks: list[Check] = []
    for res in ("agenttasks", "agentpolicies", "agentapprovals"):
        checks += [(v, res, {**tw, **ns}) for v in ("get", "list", "watch")]
    checks += [
        ("patch", "agenttasks", {**tw, **ns, "subresource": "status"}),
        ("patch", "agentapprovals", {**tw, **ns, "subresource": "status"}),
    ]
    checks += [(v, "pods", ns) for v in ("get", "list", "watch")]
    checks += [("list", "secrets", ns)]
    if task_ns:
        checks += [
            (v, "secrets", {"namespace": task_ns}) for v in ("get", "create", "update", "delete")
        ]
        checks += [
            ("create", "events", {"group": "events.k8s.io", "namespace": task_ns}),
            ("create", "events", {"namespace": task_ns}),
            ("patch", "events", {"namespace": task_ns}),
        ]
    # Own state in the operator namespace.
    checks += [
        ("create", "secrets", {"namespace": op_ns}),
        ("create", "configmaps", {"namespace": op_ns}),
    ]
    for name in OPERATOR_SECRETS:
        checks += [(v, "secrets", {"namespace": op_ns, "name": name}) for v in ("get", "update")]
    for name in OPERATOR_CONFIGMAPS:
        checks += [(v, "configmaps", {"namespace": op_ns, "name": name}) for v in ("get", "update")]
    for name in (*ledger.shard_names()[:1], *ledger.all_names()[-2:]):  # the ledger, by name
        checks += [(v, "configmaps", {"namespace": op_ns, "name": name}) for v in ("get", "update")]
    # Cluster-scoped.
    if manage_webhooks:
        checks += webhook_configuration_calls()
    crd = {"group": "apiextensions.k8s.io"}
    checks += [
        ("list", "customresourcedefinitions", crd),
        ("watch", "customresourcedefinitions", crd),
        ("list", "namespaces", {}),
        ("watch", "namespaces", {}),
        # The token exchange checks the pod's ServiceAccount token (server/exchange.py).
        ("create", "tokenreviews", {"group": "authentication.k8s.io"}),
    ]
    # Sharding: the group's Leases in the operator namespace (sharding/leases.py).
    lease = {"group": "coordination.k8s.io", "namespace": op_ns}
    checks += [(v, "leases", lease) for v in ("get", "list", "create", "update", "delete")]
    return checks


def webhook_configuration_calls() -> list[Check]:
    adm = {"group": "admissionregistration.k8s.io"}
    checks: list[Check] = []
    for res in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        checks += [("create", res, adm)]
        checks += [(v, res, {**adm, "name": WEBHOOK_CONFIG}) for v in ("get", "update", "patch")]
    return checks


def operator_must_not(op_ns: str, task_ns: str) -> list[Check]:
    tw = {"group": GROUP, "namespace": task_ns}
    adm = {"group": "admissionregistration.k8s.io"}
    rbac = {"group": "rbac.authorization.k8s.io"}
    crd = {"group": "apiextensions.k8s.io"}
    return [
        # Pods: read only.
        ("delete", "pods", {"namespace": task_ns}),
        ("create", "pods", {"namespace": task_ns}),
        ("update", "pods", {"namespace": task_ns}),
        ("create", "pods", {"namespace": task_ns, "subresource": "exec"}),
        # Its own API: status only; policies are the admins'.
        ("update", "agentpolicies", tw),
        ("patch", "agentpolicies", tw),
        ("create", "agentpolicies", tw),
        ("delete", "agentpolicies", tw),
        ("patch", "agentpolicies", {**tw, "subresource": "status"}),
        ("patch", "agenttasks", tw),
        ("update", "agenttasks", tw),
        ("create", "agenttasks", tw),
        ("delete", "agenttasks", tw),
        ("update", "agenttasks", {**tw, "subresource": "status"}),
        ("create", "agentapprovals", tw),
        ("patch", "agentapprovals", tw),
        # Secrets are never watched; other things in its namespace are not its business.
        ("watch", "secrets", {}),
        ("list", "configmaps", {"namespace": op_ns}),
        ("get", "configmaps", {"namespace": op_ns, "name": "kube-root-ca.crt"}),
        ("delete", "configmaps", {"namespace": op_ns, "name": OPERATOR_CONFIGMAPS[0]}),
        ("update", "configmaps", {"namespace": task_ns, "name": "anything"}),
        # Escalation paths.
        ("create", "clusterroles", rbac),
        ("bind", "clusterroles", rbac),
        ("escalate", "clusterroles", rbac),
        ("create", "clusterrolebindings", rbac),
        ("create", "rolebindings", {**rbac, "namespace": task_ns}),
        ("impersonate", "users", {}),
        ("impersonate", "serviceaccounts", {"namespace": task_ns}),
        ("create", "serviceaccounts", {"namespace": task_ns, "subresource": "token"}),
        ("create", "subjectaccessreviews", {"group": "authorization.k8s.io"}),
        # Only its own webhook configurations, and never deleting them.
        ("get", "mutatingwebhookconfigurations", {**adm, "name": "someone-else"}),
        ("patch", "validatingwebhookconfigurations", {**adm, "name": "someone-else"}),
        ("delete", "mutatingwebhookconfigurations", {**adm, "name": WEBHOOK_CONFIG}),
        ("list", "validatingwebhookconfigurations", adm),
        # CRDs: observed, never changed.
        ("create", "customresourcedefinitions", crd),
        ("update", "customresourcedefinitions", crd),
        ("delete", "customresourcedefinitions", crd),
        ("create", "namespaces", {}),
        ("delete", "namespaces", {"name": task_ns}),
        ("list", "nodes", {}),
        ("delete", "clusterkopfpeerings", {"group": "kopf.dev"}),
        # Sharding Leases live in the operator namespace only.
        ("create", "leases", {"group": "coordination.k8s.io", "namespace": task_ns}),
        ("update", "leases", {"group": "coordination.k8s.io", "namespace": task_ns}),
    ]


def test_operator_rbac_cluster_wide(
    helm: Path,
    api: client.ApiClient,
    kubectl: list[str],
    crds: list[str],
    make_namespace: Callable[..., str],
    tmp_path: Path,
) -> None:
    op_ns, task_ns = make_namespace("tw-op"), make_namespace("tw-agents")
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    with chart_rbac(helm, kubectl, tmp_path, release, op_ns) as objs:
        sa = one(objs, "ServiceAccount")["metadata"]["name"]
        as_sa = token_client(api, op_ns, sa)
        allowed = operator_needs(op_ns, None, manage_webhooks=False) + operator_needs(
            op_ns, task_ns, manage_webhooks=False
        )
        # Cluster-wide, namespaced kopfpeerings are not needed.
        allowed = [c for c in allowed if c[1] != "kopfpeerings"]
        denied = [
            *operator_must_not(op_ns, task_ns),
            # The chart renders the webhook configurations; the operator never writes them.
            *webhook_configuration_calls(),
            ("create", "kopfpeerings", {"group": "kopf.dev", "namespace": task_ns}),
        ]
        assert_access(as_sa, allowed, denied)

        # And a few real calls with the token, the way the operator makes them.
        core = client.CoreV1Api(as_sa)
        core.list_pod_for_all_namespaces(limit=1)
        core.list_secret_for_all_namespaces(label_selector="taskwarden.dev/task", limit=1)
        secret = {
            "metadata": {"name": "t1-credential", "labels": {"taskwarden.dev/task": "t1"}},
            "type": "taskwarden.dev/credential",
            "data": {"token": base64.b64encode(b"x").decode()},
        }
        core.create_namespaced_secret(task_ns, secret)
        core.replace_namespaced_secret("t1-credential", task_ns, secret)
        core.delete_namespaced_secret("t1-credential", task_ns)
        cm = {"metadata": {"name": "taskwarden-jwks"}, "data": {"jwks.json": "{}"}}
        core.create_namespaced_config_map(op_ns, cm)
        cur = core.read_namespaced_config_map("taskwarden-jwks", op_ns)
        core.replace_namespaced_config_map(
            "taskwarden-jwks",
            op_ns,
            {
                **cm,
                "metadata": {**cm["metadata"], "resourceVersion": cur.metadata.resource_version},
            },
        )
        client.CustomObjectsApi(as_sa).list_cluster_custom_object(GROUP, "v1alpha1", "agenttasks")
        for forbidden in (
            lambda: core.delete_collection_namespaced_pod(task_ns),
            lambda: core.list_namespaced_config_map(op_ns),
            lambda: client.RbacAuthorizationV1Api(as_sa).create_cluster_role(
                {"metadata": {"name": f"{release}-escalate"}, "rules": []}
            ),
        ):
            with pytest.raises(ApiException) as exc:
                forbidden()
            assert exc.value.status == 403


def test_operator_rbac_namespaced(
    helm: Path,
    api: client.ApiClient,
    kubectl: list[str],
    crds: list[str],
    make_namespace: Callable[..., str],
    tmp_path: Path,
) -> None:
    op_ns, watched, other = (
        make_namespace("tw-op"),
        make_namespace("tw-agents"),
        make_namespace("tw-other"),
    )
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    with chart_rbac(
        helm, kubectl, tmp_path, release, op_ns, {"watchNamespaces": [watched], **OPERATOR_CA}
    ) as objs:
        sa = one(objs, "ServiceAccount")["metadata"]["name"]
        as_sa = token_client(api, op_ns, sa)
        tw = {"group": GROUP}
        denied: list[Check] = [
            *operator_must_not(op_ns, watched),
            # Nothing outside the watched namespaces...
            *[(v, "pods", {"namespace": other}) for v in ("get", "list", "watch")],
            *[(v, "secrets", {"namespace": other}) for v in ("get", "list", "create", "delete")],
            ("list", "agenttasks", {**tw, "namespace": other}),
            ("patch", "agenttasks", {**tw, "namespace": other, "subresource": "status"}),
            # ...nor across all namespaces at once.
            ("list", "pods", {}),
            ("list", "secrets", {}),
            ("watch", "agenttasks", tw),
            ("create", "clusterkopfpeerings", {"group": "kopf.dev"}),
            ("create", "events", {"group": "events.k8s.io", "namespace": other}),
        ]
        assert_access(as_sa, operator_needs(op_ns, watched, manage_webhooks=True), denied)


def test_user_roles(
    helm: Path,
    api: client.ApiClient,
    kubectl: list[str],
    crds: list[str],
    make_namespace: Callable[..., str],
    tmp_path: Path,
) -> None:
    """taskwarden:agent and taskwarden:approver, bound in one namespace, as admins would."""
    op_ns, ns, other = (
        make_namespace("tw-op"),
        make_namespace("tw-agents"),
        make_namespace("tw-other"),
    )
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    with chart_rbac(helm, kubectl, tmp_path, release, op_ns) as objs:
        roles = {o["metadata"]["name"] for o in objs if o["kind"] == "ClusterRole"}
        agent_role, approver_role = f"{release}-taskwarden:agent", f"{release}-taskwarden:approver"
        assert {agent_role, approver_role} <= roles
        rbac = client.RbacAuthorizationV1Api(api)
        for role, subject in (
            (agent_role, {"kind": "ServiceAccount", "name": "agent", "namespace": ns}),
            (
                approver_role,
                {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"},
            ),
        ):
            rbac.create_namespaced_role_binding(
                ns,
                {
                    "metadata": {"name": role.replace(":", "-")},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role,
                    },
                    "subjects": [subject],
                },
            )

        authz = client.AuthorizationV1Api(api)

        def allowed(user: str, groups: list[str], verb: str, resource: str, namespace: str) -> bool:
            review = authz.create_subject_access_review(
                {
                    "spec": {
                        "user": user,
                        "groups": groups,
                        "resourceAttributes": {
                            "verb": verb,
                            "group": GROUP,
                            "resource": resource,
                            "namespace": namespace,
                        },
                    }
                }
            )
            return bool(review.status.allowed)

        agent = (
            f"system:serviceaccount:{ns}:agent",
            ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
        )
        alice = ("alice", ["system:authenticated"])
        expect = [
            (agent, "create", "agenttasks", ns, True),
            (agent, "get", "agenttasks", ns, True),
            (agent, "list", "agenttasks", ns, True),
            (agent, "watch", "agenttasks", ns, True),
            (agent, "update", "agenttasks", ns, True),
            (agent, "patch", "agenttasks", ns, True),
            (agent, "patch", "agenttasks", other, False),
            (agent, "delete", "agenttasks", ns, False),
            (agent, "create", "agenttasks", other, False),
            (agent, "create", "agentpolicies", ns, False),
            (agent, "create", "agentapprovals", ns, False),
            (alice, "create", "agentapprovals", ns, True),
            (alice, "get", "agentapprovals", ns, True),
            (alice, "list", "agentapprovals", ns, True),
            (alice, "update", "agentapprovals", ns, False),
            (alice, "delete", "agentapprovals", ns, False),
            (alice, "get", "agenttasks", ns, True),
            (alice, "watch", "agenttasks", ns, True),
            (alice, "create", "agenttasks", ns, False),
            (alice, "create", "agentpolicies", ns, False),
            (alice, "create", "agentapprovals", other, False),
        ]
        wrong = [
            f"{who[0]} {verb} {res} in {nsx}: expected {want}"
            for who, verb, res, nsx, want in expect
            if allowed(who[0], who[1], verb, res, nsx) != want
        ]
        assert not wrong, "\n".join(wrong)

        # Aggregation into the default roles: labels only (no aggregation controller runs here).
        agg = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ClusterRole"}
        view = agg[f"{release}-taskwarden:aggregate-to-view"]
        assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
        assert {v for r in view["rules"] for v in r["verbs"]} == {"get", "list", "watch"}
        admin_only = agg[f"{release}-taskwarden:aggregate-to-admin"]
        assert "rbac.authorization.k8s.io/aggregate-to-edit" not in admin_only["metadata"]["labels"]
        assert {r for rule in admin_only["rules"] for r in rule["resources"]} == {"agentpolicies"}


# --------------------------------------------------------------------------- alert rules, for real

PROMTOOL = (
    Path(os.environ.get("TASKWARDEN_CACHE", Path.home() / ".cache" / "taskwarden"))
    / "tools"
    / "promtool-v0.316.0"
    / "bin"
    / "promtool"
)

_SEL = 'job="taskwarden-metrics", namespace="taskwarden-system"'


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{_SEL}{extra}}}", "values": values}


def _histogram(name: str, counts: dict[str, int], **labels: str) -> list[dict[str, str]]:
    """Cumulative buckets growing by `counts[le]` per minute."""
    return [_series(f"{name}_bucket", f"0+{n}x30", le=le, **labels) for le, n in counts.items()]


FIRING = [
    _series("up", "0x30"),
    _series("taskwarden_reconcile_errors_total", "0+1x30", stage="issue"),
    *_histogram("taskwarden_revocation_lag_seconds", {"0.5": 1, "1.0": 1, "2.5": 10, "+Inf": 10}),
    _series("taskwarden_admission_requests_total", "0+5x30", webhook="agenttasks", allowed="error"),
    *_histogram(
        "taskwarden_admission_duration_seconds",
        {"0.01": 1, "0.02": 1, "0.05": 10, "+Inf": 10},
        webhook="pods",
    ),
    _series("taskwarden_signing_key_age_seconds", "200000x30"),
    _series("taskwarden_replica_active", "0x30", pod="a"),
    _series("taskwarden_replica_active", "0x30", pod="b"),
    _series("taskwarden_revocation_list_entries", "17000x30"),
    _series("taskwarden_revocation_list_capacity", "20000x30"),
    # Two replicas hold 12 of 16 shards: four have no owner.
    _series("taskwarden_shards_owned", "6x30", pod="a"),
    _series("taskwarden_shards_owned", "6x30", pod="b"),
    _series("taskwarden_shards_configured", "16x30", pod="a"),
    _series("taskwarden_shards_configured", "16x30", pod="b"),
    # A queued rotation that has used a third of its slack: fires long before it expires.
    _series("taskwarden_rotation_slack_used_ratio", "0x5 0.33x25", pod="a"),
    _series("taskwarden_rotation_slack_used_ratio", "0x30", pod="b"),
]
HEALTHY = [
    _series("up", "1x30"),
    _series("taskwarden_reconcile_errors_total", "0x30", stage="issue"),
    *_histogram(
        "taskwarden_revocation_lag_seconds", {"0.05": 10, "0.1": 10, "1.0": 10, "+Inf": 10}
    ),
    _series("taskwarden_admission_requests_total", "0+5x30", webhook="agenttasks", allowed="true"),
    _series("taskwarden_admission_requests_total", "0x30", webhook="agenttasks", allowed="error"),
    *_histogram(
        "taskwarden_admission_duration_seconds",
        {"0.002": 10, "0.005": 10, "0.02": 10, "+Inf": 10},
        webhook="pods",
    ),
    _series("taskwarden_signing_key_age_seconds", "3600x30"),
    _series("taskwarden_replica_active", "1x30", pod="a"),
    _series("taskwarden_replica_active", "0x30", pod="b"),
    _series("taskwarden_revocation_list_entries", "15000x30"),
    _series("taskwarden_revocation_list_capacity", "20000x30"),
    _series("taskwarden_shards_owned", "10x30", pod="a"),
    _series("taskwarden_shards_owned", "6x30", pod="b"),
    _series("taskwarden_shards_configured", "16x30", pod="a"),
    _series("taskwarden_shards_configured", "16x30", pod="b"),
    # Rotations that wait briefly now and then (one scrape) are not "behind".
    _series("taskwarden_rotation_slack_used_ratio", "0x10 0.4 0x19", pod="a"),
]
# Both replicas scraped and `up`, neither active: only TaskwardenNoActiveReplica notices.
STANDBYS_ONLY = [
    _series("up", "1x30", pod="a"),
    _series("up", "1x30", pod="b"),
    _series("taskwarden_replica_active", "0x30", pod="a"),
    _series("taskwarden_replica_active", "0x30", pod="b"),
]
EXPECTED_LABELS = {
    "TaskwardenIssuanceFailures": {"severity": "warning"},
    "TaskwardenRevocationLagHigh": {"severity": "critical"},
    "TaskwardenWebhookErrors": {"severity": "critical"},
    "TaskwardenWebhookLatencyHigh": {"severity": "warning", "webhook": "pods"},
    "TaskwardenSigningKeyOld": {"severity": "warning"},
    # absent() of a comparison carries no labels of the series.
    "TaskwardenOperatorDown": {"severity": "critical"},
    # max() over the replicas: no per-pod labels.
    "TaskwardenNoActiveReplica": {"severity": "critical"},
    "TaskwardenRevocationListNearCapacity": {"severity": "warning"},
    # sum() over the replicas: no per-pod labels.
    "TaskwardenShardWithoutOwner": {"severity": "critical"},
    # max() over the replicas: no per-pod labels.
    "TaskwardenRotationBehind": {"severity": "warning"},
}


def test_alert_rules_with_promtool(helm: Path, tmp_path: Path) -> None:
    """`promtool check rules` on the rendered PrometheusRule, then `promtool test rules`: every
    alert fires on bad series (with the labels routing relies on) and none fires on healthy ones.

    promtool is built from the Go module proxy (about 8 minutes, once):
    GOBIN=~/.cache/taskwarden/tools/promtool-v0.316.0/bin \\
        go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0
    """
    if not PROMTOOL.is_file():
        pytest.skip(f"promtool not built at {PROMTOOL} (see this test's docstring)")
    rule = one(
        docs(render(helm, tmp_path, {"prometheusRule": {"enabled": True}})), "PrometheusRule"
    )
    assert set(EXPECTED_LABELS) == ALERTS
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    proc = run([str(PROMTOOL), "check", "rules", str(rules)])
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # Annotations are checked above (templates) and in test_monitoring_objects; without them the
    # unit test states only what fires and with which labels.
    bare = json.loads(json.dumps(rule["spec"]))
    for group in bare["groups"]:
        for r in group["rules"]:
            r.pop("annotations", None)
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(bare))
    cases = {
        "rule_files": ["bare.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": FIRING,
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": name, "exp_alerts": [{"exp_labels": labels}]}
                    for name, labels in EXPECTED_LABELS.items()
                ],
            },
            {
                "interval": "1m",
                "input_series": HEALTHY,
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": name, "exp_alerts": []}
                    for name in EXPECTED_LABELS
                ],
            },
            {
                "interval": "1m",
                "input_series": STANDBYS_ONLY,
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "TaskwardenNoActiveReplica",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    },
                    {"eval_time": "20m", "alertname": "TaskwardenOperatorDown", "exp_alerts": []},
                ],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(cases, sort_keys=False))
    proc = run([str(PROMTOOL), "test", "rules", str(tmp_path / "tests.yaml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_operator_runs_the_whole_scenario_as_the_charts_service_account(
    helm: Path,
    api: client.ApiClient,
    cluster: controlplane.ControlPlane,
    kubectl: list[str],
    crds: list[str],
    make_namespace: Callable[..., str],
    namespace: str,
    operator: h.OperatorProcess,
    active_task: Callable[..., h.Task],
    tmp_path: Path,
) -> None:
    """RBAC is sufficient: the real operator, authenticated only by a TokenRequest token of the
    chart's ServiceAccount (with peering, webhooks, keys, revocations), issues and revokes."""
    op_ns = make_namespace("tw-op")
    release = f"sa-{uuid.uuid4().hex[:6]}"
    # The test's operator registers its own webhook configurations (TASKWARDEN_WEBHOOK_URL).
    # The chart's admission mode as `helm install` picks it on this 1.36 control plane (helm
    # template cannot tell), so its RBAC covers the admission policies the operator writes.
    mode = "cel" if h.CEL_MODE else "webhook"
    values = {**OPERATOR_CA, "admission": {"mode": mode}}
    with chart_rbac(helm, kubectl, tmp_path, release, op_ns, values) as objs:
        sa = one(objs, "ServiceAccount")["metadata"]["name"]
        token = h.sa_token(api, op_ns, sa)
        kubeconfig = tmp_path / "sa.kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "local",
                            "cluster": {
                                "server": cluster.server,
                                "certificate-authority": str(cluster.pki / "ca.crt"),
                            },
                        }
                    ],
                    "users": [{"name": sa, "user": {"token": token}}],
                    "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa}}],
                    "current-context": "sa",
                }
            )
        )
        operator.stop()
        as_chart = h.OperatorProcess(
            kubeconfig=kubeconfig,
            workdir=tmp_path,
            operator_namespace=op_ns,
            env=dict(
                os.environ,
                TASKWARDEN_PEERING=f"taskwarden-{release}",
                TASKWARDEN_ADMISSION_MODE=mode,
            ),
            name="operator-as-chart-sa",
            admission_client_ca=cluster.pki / controlplane.files.WEBHOOK_CLIENT_CA,
        )
        try:
            as_chart.start()
            jti = active_task("least", pod_name="agent-0").jti
            assert h.secret_or_none(api, namespace, "least-credential") is not None
            h.patch(
                h.as_user(api, f"system:serviceaccount:{namespace}:agent"),
                namespace,
                "agenttasks",
                "least",
                {"spec": {"completed": True}},
            )
            h.wait_phase(api, namespace, "least", "Completed")
            wait_for(lambda: h.secret_or_none(api, namespace, "least-credential") is None)
            wait_for(lambda: jti in h.revoked_jtis(api, op_ns), what="jti listed")
            log = as_chart.log.read_text()
            assert "Forbidden" not in log and " 403" not in log, log[-3000:]
        finally:
            as_chart.stop()
            operator.start()


# --------------------------------------------------------------------------- the admission objects

WEBHOOKS = {
    "MutatingWebhookConfiguration": [
        "agenttasks.mutate.taskwarden.dev",
        "agentapprovals.mutate.taskwarden.dev",
        "pods.mutate.taskwarden.dev",
    ],
    "ValidatingWebhookConfiguration": [
        "agenttasks.validate.taskwarden.dev",
        "agentapprovals.validate.taskwarden.dev",
        "pods.validate.taskwarden.dev",
    ],
}


def webhooks_of(objs: list[Doc], name: str = "taskwarden") -> dict[str, Doc]:
    """Every webhook of both configurations, by webhook name."""
    found: dict[str, Doc] = {}
    for kind, names in WEBHOOKS.items():
        conf = one(objs, kind, name)
        assert [w["name"] for w in conf["webhooks"]] == names
        found.update({w["name"]: w for w in conf["webhooks"]})
    return found


def operator_webhooks(
    namespace: str, service: str, watch: tuple[str, ...] = (), *, in_process: bool = False
) -> dict[str, Doc]:
    """What the operator registers itself (webhook_config.webhook_configurations), no caBundle."""
    from taskwarden import config
    from taskwarden.server import webhook_config

    settings = config.Settings(
        watch=config.WatchSettings(namespaces=watch, operator_namespace=namespace),
        server=config.ServerSettings(webhook_service=service),
    )
    found: dict[str, Doc] = {}
    for conf in webhook_config.webhook_configurations(settings, "", in_process=in_process):
        for w in conf["webhooks"]:
            w["clientConfig"].pop("caBundle", None)
            found[w["name"]] = w
    return found


@pytest.mark.parametrize("watch", [(), ("agents", "tools")])
def test_chart_webhooks_are_the_operators_plus_match_conditions(
    helm: Path, tmp_path: Path, watch: tuple[str, ...]
) -> None:
    values: dict[str, Any] = {"watchNamespaces": list(watch)}
    expected = operator_webhooks("taskwarden-system", "taskwarden", watch)
    # The operator generates the CA: the chart renders exactly what the operator writes over it.
    managed = webhooks_of(docs(render(helm, tmp_path, {**values, **OPERATOR_CA})))
    for w in managed.values():
        assert "caBundle" not in w["clientConfig"]
    assert managed == expected
    # The chart's CA: the same webhooks, with its caBundle, and the pod webhooks filtered by CEL.
    objs = docs(render(helm, tmp_path, values))
    ca = one(objs, "Secret", "taskwarden-webhook-ca")["data"]["tls.crt"]
    rendered = webhooks_of(objs)
    conditions = {}
    for name, w in rendered.items():
        assert w["clientConfig"].pop("caBundle") == ca
        if w.get("matchConditions"):
            conditions[name] = w.pop("matchConditions")
    assert rendered == expected
    assert set(conditions) == {"pods.mutate.taskwarden.dev", "pods.validate.taskwarden.dev"}
    guard = conditions["pods.validate.taskwarden.dev"][0]["expression"]
    for field in (
        "v.secret.secretName",
        "p.secret.name",
        "object.spec.initContainers",
        "object.spec.containers",
        "object.spec.ephemeralContainers",
        "e.valueFrom.secretKeyRef.name",
        "e.secretRef.name",
        "'taskwarden.dev/task' in object.metadata.annotations",
    ):
        assert field in guard
    env = {
        e["name"]: e.get("value")
        for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TASKWARDEN_MANAGE_WEBHOOKS"] == "false"
    operator_env = {
        e["name"]: e.get("value")
        for e in one(docs(render(helm, tmp_path, OPERATOR_CA)), "Deployment")["spec"]["template"][
            "spec"
        ]["containers"][0]["env"]
    }
    assert operator_env["TASKWARDEN_MANAGE_WEBHOOKS"] == "true"


def test_webhook_values_render(helm: Path, tmp_path: Path) -> None:
    """timeoutSeconds, the pod mutation's failurePolicy, hostNetwork and the port, the guard's
    namespaces, the pod objectSelector, and matchConditions off."""
    values = {
        "webhook": {
            "port": 10443,
            "hostNetwork": True,
            "timeoutSeconds": 12,
            "pods": {
                "mutation": {"failurePolicy": "Fail"},
                "guard": {
                    "namespaceSelector": {
                        # Replaces the default opt-out expression (Helm replaces lists).
                        "matchExpressions": [
                            {"key": "taskwarden.dev/guard", "operator": "NotIn", "values": ["off"]}
                        ],
                    }
                },
                "objectSelector": {"matchLabels": {"example.org/agent": "true"}},
                "matchConditions": False,
            },
        }
    }
    objs = docs(render(helm, tmp_path, values, namespace="tw"))
    hooks = webhooks_of(objs)
    assert {w["timeoutSeconds"] for w in hooks.values()} == {12}
    failure = {name: w["failurePolicy"] for name, w in hooks.items()}
    assert failure == {
        "agenttasks.mutate.taskwarden.dev": "Fail",
        "agentapprovals.mutate.taskwarden.dev": "Fail",
        "pods.mutate.taskwarden.dev": "Fail",
        "agenttasks.validate.taskwarden.dev": "Fail",
        "agentapprovals.validate.taskwarden.dev": "Fail",
        "pods.validate.taskwarden.dev": "Fail",
    }
    assert not [w for w in hooks.values() if "matchConditions" in w]
    guard = hooks["pods.validate.taskwarden.dev"]["namespaceSelector"]
    assert guard == {
        "matchExpressions": [
            {"key": "taskwarden.dev/guard", "operator": "NotIn", "values": ["off"]},
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "tw"],
            },
        ]
    }
    for name in ("pods.mutate.taskwarden.dev", "pods.validate.taskwarden.dev"):
        assert hooks[name]["objectSelector"] == {"matchLabels": {"example.org/agent": "true"}}
    assert hooks["agenttasks.validate.taskwarden.dev"]["objectSelector"] == {}
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (c,) = pod["containers"]
    assert {"name": "admission", "containerPort": 10443, "protocol": "TCP"} in c["ports"]
    assert {"name": "TASKWARDEN_WEBHOOK_PORT", "value": "10443"} in c["env"]
    # The Service still listens on 9443 (what clientConfig names) and targets the named port.
    svc = one(objs, "Service", "taskwarden")
    assert svc["spec"]["ports"][1]["port"] == 9443
    assert svc["spec"]["ports"][1]["targetPort"] == "admission"
    # Defaults: no hostNetwork, pod mutation Ignore, timeout 5.
    default = docs(render(helm, tmp_path))
    assert "hostNetwork" not in one(default, "Deployment")["spec"]["template"]["spec"]
    hooks = webhooks_of(default)
    assert hooks["pods.mutate.taskwarden.dev"]["failurePolicy"] == "Ignore"
    assert {w["timeoutSeconds"] for w in hooks.values()} == {5}


def test_cert_manager_renders_issuer_certificate_and_injection(helm: Path, tmp_path: Path) -> None:
    values = {"certManager": {"enabled": True}}
    proc = run([str(helm), "lint", "--strict", str(CHART), "--set", "certManager.enabled=true"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    objs = docs(render(helm, tmp_path, values, release="tw", namespace="sec"))
    issuers = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "Issuer"}
    assert issuers == {
        "tw-taskwarden-selfsigned": {"selfSigned": {}},
        "tw-taskwarden-ca": {"ca": {"secretName": "tw-taskwarden-webhook-ca"}},
    }
    ca = one(objs, "Certificate", "tw-taskwarden-webhook-ca")["spec"]
    assert ca["isCA"] is True and ca["secretName"] == "tw-taskwarden-webhook-ca"
    assert ca["issuerRef"]["name"] == "tw-taskwarden-selfsigned"
    cert = one(objs, "Certificate", "tw-taskwarden-webhook")["spec"]
    # The Secret the operator reads, with every name it checks (webhooks.tls_hosts).
    assert cert["secretName"] == "taskwarden-webhook-tls"
    assert cert["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "Issuer",
        "name": "tw-taskwarden-ca",
    }
    assert cert["dnsNames"][:3] == ["tw-taskwarden", "tw-taskwarden.sec", "tw-taskwarden.sec.svc"]
    assert cert["ipAddresses"] == ["127.0.0.1"]
    assert cert["renewBefore"] == "1440h"  # earlier than the operator's own 30-day renewal
    for kind in WEBHOOKS:
        conf = one(objs, kind, "tw-taskwarden")
        assert conf["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": "sec/tw-taskwarden-webhook"
        }
        assert not [w for w in conf["webhooks"] if "caBundle" in w["clientConfig"]]
    assert not [o for o in objs if o["kind"] == "Secret"], "cert-manager writes the Secrets"
    env = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TASKWARDEN_MANAGE_WEBHOOKS", "value": "false"} in env


def test_crds_values_render(helm: Path, tmp_path: Path) -> None:
    """crds.enabled / crds.keep / crds.kopfPeering, and the CRDs are those of crds/."""

    def crds(values: dict[str, Any]) -> dict[str, Doc]:
        objs = docs(render(helm, tmp_path, values))
        return {o["metadata"]["name"]: o for o in objs if o["kind"] == "CustomResourceDefinition"}

    source = {
        d["metadata"]["name"]: d
        for p in (ROOT / "crds").glob("*.yaml")
        for d in yaml.safe_load_all(p.read_text())
        if d
    }
    kept = crds({})
    assert set(kept) == set(source) == CRD_NAMES
    for name, crd in kept.items():
        assert crd["spec"] == source[name]["spec"]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert not [
        c for c in crds({"crds": {"keep": False}}).values() if "annotations" in c["metadata"]
    ]
    assert crds({"crds": {"enabled": False}}) == {}
    assert set(crds({"crds": {"kopfPeering": False}})) == {
        n for n in CRD_NAMES if n.endswith(".taskwarden.dev")
    }


# --------------------------------------------------------------------------- helm, for real


@pytest.fixture
def helm_cli(helm: Path, cluster: controlplane.ControlPlane, tmp_path: Path) -> Callable[..., str]:
    """Run helm against the test control plane, with its own cache/config directories."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
    }

    def helm_run(*args: str, check: bool = True) -> str:
        proc = subprocess.run(
            [str(helm), "--kubeconfig", str(cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=env,
        )
        if check:
            assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    return helm_run


@contextlib.contextmanager
def adopted_crds(api: client.ApiClient, release: str, namespace: str) -> Iterator[None]:
    """Let the release own the CRDs the session installed from crds/ (Helm adopts an object
    annotated with its release), and put crds/ back afterwards, whatever the test did to them."""
    ext = client.ApiextensionsV1Api(api)
    for name in CRD_NAMES:
        ext.patch_custom_resource_definition(
            name,
            {
                "metadata": {
                    "labels": {"app.kubernetes.io/managed-by": "Helm"},
                    "annotations": {
                        "meta.helm.sh/release-name": release,
                        "meta.helm.sh/release-namespace": namespace,
                    },
                }
            },
        )
    try:
        yield
    finally:
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            for body in yaml.safe_load_all(path.read_text()):
                if body:
                    current = ext.read_custom_resource_definition(body["metadata"]["name"])
                    body["metadata"]["resourceVersion"] = current.metadata.resource_version
                    ext.replace_custom_resource_definition(body["metadata"]["name"], body)


def _cert(pem: str) -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode())


def assert_operator_accepts(tls: dict[str, str], hosts: list[str]) -> None:
    """The checks of webhooks.tls_problem: the operator serves this Secret as it is."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca, cert = _cert(tls["ca.crt"]), _cert(tls["tls.crt"])
    key = serialization.load_pem_private_key(tls["tls.key"].encode(), password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)
    assert cert.issuer == ca.subject
    ca.public_key().verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(sans.get_values_for_type(x509.DNSName))
    ips = {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    assert set(hosts) <= names | ips, (hosts, names, ips)
    for c in (ca, cert):
        assert c.not_valid_after_utc.timestamp() - time.time() > 30 * 86400


def release_leftovers(api: client.ApiClient, release: str, namespace: str) -> list[str]:
    """Every object of the release still in the cluster, by its instance label."""
    sel = f"app.kubernetes.io/instance={release}"
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    adm = client.AdmissionregistrationV1Api(api)
    apps, policy = client.AppsV1Api(api), client.PolicyV1Api(api)
    found: list[str] = []
    for what, lister in (
        ("MutatingWebhookConfiguration", adm.list_mutating_webhook_configuration),
        ("ValidatingWebhookConfiguration", adm.list_validating_webhook_configuration),
        ("ClusterRole", rbac.list_cluster_role),
        ("ClusterRoleBinding", rbac.list_cluster_role_binding),
        ("Role", rbac.list_role_for_all_namespaces),
        ("RoleBinding", rbac.list_role_binding_for_all_namespaces),
        ("Service", core.list_service_for_all_namespaces),
        ("Secret", core.list_secret_for_all_namespaces),
        ("ConfigMap", core.list_config_map_for_all_namespaces),
        ("ServiceAccount", core.list_service_account_for_all_namespaces),
        ("Pod", core.list_pod_for_all_namespaces),
        ("Deployment", apps.list_deployment_for_all_namespaces),
        ("PodDisruptionBudget", policy.list_pod_disruption_budget_for_all_namespaces),
    ):
        found += [f"{what} {o.metadata.name}" for o in lister(label_selector=sel).items]
    # And the fixed names, whatever their labels.
    for name in ("taskwarden-webhook-tls", f"{release}-taskwarden-webhook-ca"):
        with contextlib.suppress(ApiException):
            core.read_namespaced_secret(name, namespace)
            found.append(f"Secret {name}")
    return found


def refused(create: Callable[[], Any]) -> str:
    with pytest.raises(ApiException) as exc:
        create()
    return str(exc.value.body)


def test_helm_install_upgrade_uninstall_leaves_nothing_that_blocks_writes(
    api: client.ApiClient,
    crds: list[str],
    helm_cli: Callable[..., str],
    make_namespace: Callable[..., str],
    namespace: str,
    tmp_path: Path,
) -> None:
    """(a) the installed webhook configurations carry the chart CA's caBundle, and an upgrade
    keeps CA and certificate; the pod webhooks are called only for pods that can matter.
    (b) after `helm uninstall` creating an AgentTask and pods is not blocked, and nothing of the
    release is left but the kept CRDs."""
    op_ns = make_namespace("tw-rel")
    core = client.CoreV1Api(api)
    release = f"h{uuid.uuid4().hex[:6]}"
    full = f"{release}-taskwarden"
    vf = tmp_path / "values.yaml"
    # Only this test's namespace is watched, so its webhooks touch nothing else in the session.
    vf.write_text(
        yaml.safe_dump(
            {
                "watchNamespaces": [namespace],
                "webhook": {"timeoutSeconds": 2},
                # Webhooks only: every task create reaches them (CEL mode: the next test).
                "admission": {"mode": "webhook"},
            }
        )
    )
    adm = client.AdmissionregistrationV1Api(api)

    def secret(name: str) -> dict[str, str]:
        data = core.read_namespaced_secret(name, op_ns).data
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def bundles() -> set[str]:
        confs = [
            adm.read_mutating_webhook_configuration(full),
            adm.read_validating_webhook_configuration(full),
        ]
        return {
            base64.b64decode(w.client_config.ca_bundle).decode() for c in confs for w in c.webhooks
        }

    def pod(name: str, annotations: dict[str, str] | None = None, secret_name: str = "") -> Doc:
        spec: Doc = {
            "serviceAccountName": "agent",
            "automountServiceAccountToken": False,
            "containers": [{"name": "agent", "image": "busybox"}],
        }
        if secret_name:
            spec["volumes"] = [{"name": "c", "secret": {"secretName": secret_name}}]
        return {"metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}

    h.service_account(api, namespace, "agent")
    installed = False
    with adopted_crds(api, release, op_ns):
        try:
            helm_cli("install", release, str(CHART), "-n", op_ns, "-f", str(vf))
            installed = True
            # (a) caBundle is the chart's CA, which signed the certificate the operator serves.
            ca = secret(f"{full}-webhook-ca")
            tls = secret("taskwarden-webhook-tls")
            assert bundles() == {ca["tls.crt"]} and tls["ca.crt"] == ca["tls.crt"]
            assert_operator_accepts(
                tls, ["127.0.0.1", full, f"{full}.{op_ns}", f"{full}.{op_ns}.svc"]
            )
            # An upgrade reuses CA and certificate (lookup), so caBundle never changes under
            # running replicas.
            helm_cli("upgrade", release, str(CHART), "-n", op_ns, "-f", str(vf))
            assert secret(f"{full}-webhook-ca") == ca and secret("taskwarden-webhook-tls") == tls
            assert bundles() == {ca["tls.crt"]}

            # No operator serves the Service: whatever reaches the webhooks is refused (Fail)...
            body = refused(lambda: h.create_task(api, namespace, h.task_body("blocked")))
            assert f"{full}.{op_ns}.svc" in body and "agenttasks.mutate.taskwarden.dev" in body
            body = refused(
                lambda: core.create_namespaced_pod(
                    namespace, pod("mounts", secret_name="x-credential")
                )
            )
            assert "pods.validate.taskwarden.dev" in body and "timeout=2s" in body
            body = refused(
                lambda: core.create_namespaced_pod(
                    namespace, pod("annotated", annotations={"taskwarden.dev/task": "t"})
                )
            )
            assert "pods.validate.taskwarden.dev" in body
            # Every other kind of reference the guard checks reaches it too (the CEL is real).
            ref = {"name": "x-credential"}
            for field, spec in (
                (
                    "projected",
                    {"volumes": [{"name": "p", "projected": {"sources": [{"secret": ref}]}}]},
                ),
                (
                    "env",
                    {
                        "containers": [
                            {
                                "name": "a",
                                "image": "busybox",
                                "env": [
                                    {
                                        "name": "T",
                                        "valueFrom": {"secretKeyRef": {**ref, "key": "token"}},
                                    }
                                ],
                            }
                        ]
                    },
                ),
                (
                    "envfrom",
                    {
                        "initContainers": [
                            {"name": "i", "image": "busybox", "envFrom": [{"secretRef": ref}]}
                        ]
                    },
                ),
            ):
                body_ = pod(f"ref-{field}")
                body_["spec"].update(spec)
                body = refused(lambda b_=body_: core.create_namespaced_pod(namespace, b_))
                assert "pods.validate.taskwarden.dev" in body, field
            # ...but a pod that references no credential never reaches them (matchConditions).
            core.create_namespaced_pod(namespace, pod("plain"))
            core.create_namespaced_pod(namespace, pod("other-secret", secret_name="db-password"))

            # (b) Uninstall: nothing blocks writes any more.
            helm_cli("uninstall", release, "-n", op_ns, "--wait", "--timeout", "60s")
            installed = False
            h.create_task(api, namespace, h.task_body("after"))
            core.create_namespaced_pod(namespace, pod("mounts", secret_name="after-credential"))
            core.create_namespaced_pod(
                namespace, pod("annotated", annotations={"taskwarden.dev/task": "after"})
            )
            wait_for(
                lambda: not release_leftovers(api, release, op_ns),
                timeout=60,
                what=f"nothing of release {release} left",
            )
            # The CRDs are kept (crds.keep), and with them the tasks.
            ext = client.ApiextensionsV1Api(api)
            for name in CRD_NAMES:
                crd = ext.read_custom_resource_definition(name)
                assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
            assert h.get(api, namespace, "agenttasks", "after")
        finally:
            if installed:
                helm_cli("uninstall", release, "-n", op_ns, check=False)


def test_helm_upgrade_from_the_previous_chart_version_upgrades_the_crds(
    api: client.ApiClient,
    crds: list[str],
    helm_cli: Callable[..., str],
    make_namespace: Callable[..., str],
    tmp_path: Path,
) -> None:
    """(c) 0.0.9 (its AgentTask CRD lacks status.delegationDepth) -> this chart adds the field."""
    import shutil

    previous = tmp_path / "previous" / "taskwarden"
    shutil.copytree(CHART, previous)
    meta = yaml.safe_load((previous / "Chart.yaml").read_text())
    meta["version"] = "0.0.9"
    (previous / "Chart.yaml").write_text(yaml.safe_dump(meta))
    crd_file = previous / "files" / "crds" / "agenttask.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    del status["properties"]["delegationDepth"]
    crd_file.write_text(yaml.safe_dump(crd))

    ext = client.ApiextensionsV1Api(api)

    def status_fields() -> set[str]:
        live = api.sanitize_for_serialization(
            ext.read_custom_resource_definition("agenttasks.taskwarden.dev")
        )
        schema = live["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return set(schema["properties"]["status"]["properties"])

    op_ns, watched = make_namespace("tw-up"), make_namespace("tw-upw")
    release = f"u{uuid.uuid4().hex[:6]}"
    args = ("-n", op_ns, "--set", f"watchNamespaces={{{watched}}}")
    installed = False
    with adopted_crds(api, release, op_ns):
        try:
            helm_cli("install", release, str(previous), *args)
            installed = True
            assert "delegationDepth" not in status_fields()
            helm_cli("upgrade", release, str(CHART), *args)
            assert "delegationDepth" in status_fields()
            history = json.loads(helm_cli("history", release, "-n", op_ns, "-o", "json"))
            current = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
            assert [r["chart"] for r in history] == ["taskwarden-0.0.9", f"taskwarden-{current}"]
        finally:
            if installed:
                helm_cli("uninstall", release, "-n", op_ns, check=False)


# --------------------------------------------------------------------------- CEL admission mode

CEL_API = (
    "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
)
POLICY_KINDS = {
    "MutatingAdmissionPolicy": "mutatingadmissionpolicies",
    "MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}


def cel_capable(*more: str) -> tuple[str, ...]:
    """helm template as against an API server that serves the admission policies (1.36+)."""
    return tuple(a for api in CEL_API for a in ("--api-versions", api)) + more


@pytest.mark.parametrize("watch", [(), ("agents", "tools")])
def test_chart_cel_mode_renders_the_operators_policies_and_conditions(
    helm: Path, tmp_path: Path, kubectl: list[str], watch: tuple[str, ...]
) -> None:
    """Where the API server serves the policies (auto), the chart renders admission/cel.py's
    policies and gates the task webhooks exactly as the operator does; elsewhere, neither."""
    from taskwarden import config
    from taskwarden.server import webhook_config

    values: dict[str, Any] = {"watchNamespaces": list(watch), **OPERATOR_CA}
    objs = docs(render(helm, tmp_path, values, extra=cel_capable()))
    assert webhooks_of(objs) == operator_webhooks(
        "taskwarden-system", "taskwarden", watch, in_process=True
    )
    settings = config.Settings(
        watch=config.WatchSettings(namespaces=watch, operator_namespace="taskwarden-system"),
        server=config.ServerSettings(webhook_service="taskwarden"),
    )
    expected = webhook_config.admission_policies(settings)
    rendered = [o for o in objs if o["kind"] in POLICY_KINDS]
    assert sorted(o["kind"] for o in rendered) == sorted(o["kind"] for o in expected)
    for want in expected:
        got = one(rendered, want["kind"])
        assert got["metadata"]["name"] == want["metadata"]["name"] == "taskwarden-agenttasks"
        assert got["spec"] == want["spec"]
    env = {
        e["name"]: e.get("value")
        for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TASKWARDEN_ADMISSION_MODE"] == "cel"
    rules = [r for o in objs if o["kind"] == "ClusterRole" for r in o.get("rules", [])]
    assert any("validatingadmissionpolicies" in r["resources"] for r in rules)
    # The API server accepts every one of them.
    kubectl_apply(kubectl, yaml.safe_dump_all(rendered))
    # Not served, or admission.mode=webhook: no policy, no condition on the task webhooks.
    for text in (
        render(helm, tmp_path, values),
        render(helm, tmp_path, {**values, "admission": {"mode": "webhook"}}, extra=cel_capable()),
    ):
        plain = docs(text)
        assert not [o for o in plain if o["kind"] in POLICY_KINDS]
        assert webhooks_of(plain) == operator_webhooks("taskwarden-system", "taskwarden", watch)


def test_helm_install_in_cel_mode_admits_the_usual_case_with_no_operator_and_uninstalls_clean(
    api: client.ApiClient,
    crds: list[str],
    helm_cli: Callable[..., str],
    make_namespace: Callable[..., str],
    namespace: str,
    tmp_path: Path,
) -> None:
    """On this 1.36 control plane `helm install` picks CEL mode by itself. With no operator
    behind the chart's webhooks (failurePolicy Fail), an agent creating its own task is still
    admitted and stamped (the chart's task webhooks are not called); a delegated one is refused;
    uninstall removes the policies."""
    op_ns = make_namespace("tw-cel")
    release = f"c{uuid.uuid4().hex[:6]}"
    full = f"{release}-taskwarden"
    vf = tmp_path / "values.yaml"
    vf.write_text(
        yaml.safe_dump({"watchNamespaces": [namespace], "webhook": {"timeoutSeconds": 2}})
    )
    co = client.CustomObjectsApi(api)

    def policies() -> list[str]:
        found = []
        for kind, plural in POLICY_KINDS.items():
            with contextlib.suppress(ApiException):
                co.get_cluster_custom_object(
                    "admissionregistration.k8s.io", "v1", plural, f"{full}-agenttasks"
                )
                found.append(kind)
        return found

    h.service_account(api, namespace, "agent")
    installed = False
    with adopted_crds(api, release, op_ns):
        try:
            helm_cli("install", release, str(CHART), "-n", op_ns, "-f", str(vf))
            installed = True
            assert sorted(policies()) == sorted(POLICY_KINDS)
            me = h.as_user(api, f"system:serviceaccount:{namespace}:agent")

            def own() -> Doc | None:
                try:
                    return h.create(me, namespace, "agenttasks", h.task_body("own"))
                except ApiException:
                    return None  # the policies load asynchronously

            made = wait_for(own, timeout=30, interval=0.3, what="the usual case admitted")
            stamp = json.loads(made["metadata"]["annotations"]["taskwarden.dev/requester"])
            assert stamp["username"] == f"system:serviceaccount:{namespace}:agent"
            kid = h.task_body("kid", extra={"delegatedFrom": "own"})
            body = refused(lambda: h.create(me, namespace, "agenttasks", kid))
            assert "agenttasks.validate.taskwarden.dev" in body
            helm_cli("uninstall", release, "-n", op_ns, "--wait", "--timeout", "60s")
            installed = False
            wait_for(lambda: not policies(), timeout=30, what="policies removed")
        finally:
            if installed:
                helm_cli("uninstall", release, "-n", op_ns, check=False)
