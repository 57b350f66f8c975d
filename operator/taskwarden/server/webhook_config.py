"""The Mutating/ValidatingWebhookConfiguration `taskwarden`: built here, written by `register`.

In CEL mode (`cel_mode`: TASKWARDEN_ADMISSION_MODE and discovery) it also writes the
MutatingAdmissionPolicy and ValidatingAdmissionPolicy of admission/cel.py with their bindings,
and the two AgentTask webhooks get that module's matchConditions: the usual case, an agent
creating its own task, is then decided in the API server and calls no webhook.

The credential pod guard (validate-pods) is on in every namespace the operator serves except
kube-system, the operator's own, and those labelled `taskwarden.dev/guard: disabled`; it reviews
pod CREATE and UPDATE of pods/ephemeralcontainers (`kubectl debug`). The chart renders the same
objects (charts/taskwarden/templates/admission.yaml; tests/integration/test_chart.py compares).

Called by taskwarden.server.https at start and hourly (when the operator manages its webhook
configurations). `webhook_configurations` is pure: settings and the CA bundle in, the two
objects out. They are created or updated, never deleted: other replicas may serve them.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Final

from taskwarden import admission, config, names
from taskwarden.admission import cel
from taskwarden.kube import Kube

log = logging.getLogger(__name__)
CONFIGURATION: Final = "taskwarden"
LABELS: Final = {"app.kubernetes.io/managed-by": "taskwarden"}
SERVICE_PORT: Final = 9443
"""The Service port of admission; its port 443 serves the public endpoints (the issuer)."""


def namespace_expressions(settings: config.Settings) -> list[dict[str, Any]]:
    """Where admission applies: never kube-system or the operator's namespace; only the watched
    namespaces when the operator watches a list."""
    op_ns = settings.watch.operator_namespace
    exprs: list[dict[str, Any]] = [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": sorted({"kube-system", op_ns}),
        }
    ]
    if settings.watch.namespaces:
        exprs.append(
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": sorted(settings.watch.namespaces),
            }
        )
    return exprs


def webhook_configurations(
    settings: config.Settings, ca_bundle: str, *, in_process: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(MutatingWebhookConfiguration, ValidatingWebhookConfiguration) named `taskwarden`; with
    `in_process` (CEL mode) the AgentTask webhooks carry admission/cel.py's matchConditions."""
    op_ns = settings.watch.operator_namespace
    exprs = namespace_expressions(settings)
    bundle = base64.b64encode(ca_bundle.encode()).decode()

    def client_config(path: str) -> dict[str, Any]:
        if settings.server.webhook_url:
            return {"url": f"{settings.server.webhook_url.rstrip('/')}/{path}", "caBundle": bundle}
        return {
            "service": {
                "name": settings.server.webhook_service,
                "namespace": op_ns,
                "port": SERVICE_PORT,
                "path": f"/{path}",
            },
            "caBundle": bundle,
        }

    def rule(resource: str, operations: list[str]) -> dict[str, Any]:
        pods = resource.split("/")[0] == "pods"
        group, version = ("", "v1") if pods else (names.GROUP, names.VERSION)
        return {
            "apiGroups": [group],
            "apiVersions": [version],
            "operations": operations,
            "resources": [resource],
            "scope": "Namespaced",
        }

    def hook(
        path: str, resource: str, operations: list[str], failure: str, *, guard: bool = False
    ) -> dict[str, Any]:
        selector: dict[str, Any] = {"matchExpressions": exprs}
        rules = [rule(resource, operations)]
        if guard:
            opt_out = {
                "key": names.GUARD_LABEL,
                "operator": "NotIn",
                "values": [names.GUARD_DISABLED],
            }
            selector = {"matchExpressions": [opt_out, *exprs]}
            rules.append(rule("pods/ephemeralcontainers", ["UPDATE"]))
        verb, _, _ = path.partition("-")
        return {
            "name": f"{resource}.{verb}.taskwarden.dev",
            "clientConfig": client_config(path),
            "rules": rules,
            "failurePolicy": failure,
            "matchPolicy": "Equivalent",
            "namespaceSelector": selector,
            "objectSelector": {},
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
        }

    mutating = [
        hook(admission.MUTATE_TASKS, "agenttasks", ["CREATE", "UPDATE"], "Fail"),
        hook(admission.MUTATE_APPROVALS, "agentapprovals", ["CREATE", "UPDATE"], "Fail"),
        hook(admission.MUTATE_PODS, "pods", ["CREATE"], "Ignore"),
    ]
    if in_process:
        mutating[0]["matchConditions"] = cel.task_match_conditions(admission.MUTATE_TASKS)
        validating_tasks = cel.task_match_conditions(admission.VALIDATE_TASKS)
    mutating[0]["reinvocationPolicy"] = "Never"
    mutating[1]["reinvocationPolicy"] = "Never"
    mutating[2]["reinvocationPolicy"] = "IfNeeded"  # idempotent: mounts later containers too
    validating = [
        hook(admission.VALIDATE_TASKS, "agenttasks", ["CREATE", "UPDATE"], "Fail"),
        hook(admission.VALIDATE_APPROVALS, "agentapprovals", ["CREATE", "UPDATE"], "Fail"),
        hook(admission.VALIDATE_PODS, "pods", ["CREATE"], "Fail", guard=True),
    ]
    if in_process:
        validating[0]["matchConditions"] = validating_tasks
    metadata = {"name": CONFIGURATION, "labels": dict(LABELS)}
    return (
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": metadata,
            "webhooks": mutating,
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": metadata,
            "webhooks": validating,
        },
    )


def admission_policies(settings: config.Settings) -> list[dict[str, Any]]:
    """CEL mode's policies and bindings, over the namespaces the webhooks cover."""
    return cel.policies({"matchExpressions": namespace_expressions(settings)}, LABELS)


async def cel_mode(kube: Kube, settings: config.Settings) -> bool:
    """Decide in CEL what CEL can decide? By TASKWARDEN_ADMISSION_MODE and discovery."""
    mode = settings.server.admission_mode
    if mode == "webhook":
        return False
    group, _, version = cel.API_VERSION.partition("/")
    try:
        served = await kube.served_resources(group, version)
    except Exception:
        log.exception("discovery of %s failed; admission stays webhooks only", cel.API_VERSION)
        return False
    if cel.use_cel(mode, served):
        return True
    (log.error if mode == "cel" else log.info)(
        "the API server does not serve %s MutatingAdmissionPolicy and "
        "ValidatingAdmissionPolicy: admission is webhooks only",
        cel.API_VERSION,
    )
    return False


async def register(kube: Kube, settings: config.Settings, ca_bundle: str) -> None:
    """Create or update both configurations (and in CEL mode the admission policies first);
    without a URL or Service, refuse loudly."""
    if not (settings.server.webhook_url or settings.server.webhook_service):
        # Crash-looping would also stop revocation; refuse loudly instead.
        log.error(
            "webhook configurations not registered: set TASKWARDEN_WEBHOOK_URL or "
            "TASKWARDEN_WEBHOOK_SERVICE (requester binding and approvals are NOT enforced)"
        )
        return
    in_process = await cel_mode(kube, settings)
    group, _, version = cel.API_VERSION.partition("/")
    if in_process:  # policies first: the webhooks' conditions then skip what they decide
        try:
            for obj in admission_policies(settings):
                await kube.put_cluster_object(group, version, cel.PLURALS[obj["kind"]], obj)
        except Exception:  # e.g. RBAC: webhooks without conditions are safe on their own
            log.exception("admission policies not written; admission is webhooks only")
            in_process = False
    mutating, validating = webhook_configurations(settings, ca_bundle, in_process=in_process)
    await kube.put_webhook_configuration("mutating", mutating)
    await kube.put_webhook_configuration("validating", validating)
    if settings.server.admission_mode == "webhook":
        # Switched back: webhooks without conditions review everything; the policies go.
        for obj in reversed(admission_policies(settings)):
            try:
                await kube.delete_cluster_object(
                    group, version, cel.PLURALS[obj["kind"]], obj["metadata"]["name"]
                )
            except Exception as e:  # not served, or no RBAC for them: nothing of ours there
                log.debug("admission policy %s not deleted: %s", obj["kind"], e)
    log.info(
        "admission: %s",
        "CEL policies in the API server, webhooks only where CEL cannot decide"
        if in_process
        else "webhooks only",
    )
