"""The pod guard, as a property: any pod spec that references the credential Secret of a task
whose ServiceAccount differs from the pod's is refused, wherever the reference hides (secret
and projected volumes, env valueFrom.secretKeyRef, envFrom.secretRef; in containers,
initContainers or ephemeralContainers), on pod CREATE and on the ephemeralcontainers UPDATE."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from taskwarden import admission, names

NS = "agents"
dns = st.from_regex(r"\A[a-z]([a-z0-9-]{0,10}[a-z0-9])?\Z")
KINDS = ("containers", "initContainers", "ephemeralContainers")


def task(sa: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "t", "namespace": NS},
        "spec": {"agent": {"serviceAccountName": sa}},
    }


@st.composite
def references(draw: st.DrawFn, secret: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(spec fragment, volumes): one way of reading `secret`, next to harmless ones."""
    where = draw(st.sampled_from(["volume", "projected", "env", "envFrom"]))
    kind = draw(st.sampled_from(KINDS))
    volumes: list[dict[str, Any]] = [{"name": "data", "emptyDir": {}}]
    container: dict[str, Any] = {"name": draw(dns), "image": "x"}
    benign_env = [{"name": "A", "value": "1"}]
    if where == "volume":
        volumes.append({"name": "v", "secret": {"secretName": secret}})
    elif where == "projected":
        other = {"configMap": {"name": "cm"}}
        sources = draw(st.permutations([other, {"secret": {"name": secret}}]))
        volumes.append({"name": "p", "projected": {"sources": list(sources)}})
    elif where == "env":
        ref = {"secretKeyRef": {"name": secret, "key": draw(st.sampled_from(["token", "x"]))}}
        container["env"] = [*benign_env, {"name": "T", "valueFrom": ref}]
    else:
        container["envFrom"] = [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": secret}}]
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "x"}]}
    spec[kind] = [*spec.get(kind, []), container]
    return spec, volumes


@settings(max_examples=400, deadline=None)
@given(
    pod_sa=st.one_of(st.none(), dns),
    task_sa=dns,
    task_name=dns,
    data=st.data(),
    debug=st.booleans(),
)
def test_a_pod_of_another_account_never_passes_with_a_task_credential(
    pod_sa: str | None, task_sa: str, task_name: str, data: st.DataObject, debug: bool
) -> None:
    runs_as = pod_sa or "default"
    if runs_as == task_sa:
        task_sa += "-other"
    secret = f"{task_name}-credential"
    spec, volumes = data.draw(references(secret))
    spec["volumes"] = volumes
    if pod_sa is not None:
        spec["serviceAccountName"] = pod_sa
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": NS}}
    request: dict[str, Any] = {
        "uid": "u",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "UPDATE" if debug else "CREATE",
        "namespace": NS,
        "userInfo": {"username": "someone", "groups": ["system:authenticated"]},
        "object": {**pod, "spec": spec},
    }
    if debug:
        request["subResource"] = "ephemeralcontainers"
        request["oldObject"] = {**pod, "spec": {"containers": spec["containers"]}}
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    need = admission.needs(admission.VALIDATE_PODS, body)
    assert need is not None and task_name in need.tasks and secret in need.secrets
    ours = {"type": names.SECRET_TYPE, "metadata": {"name": secret}}
    facts = admission.Facts(tasks={task_name: task(task_sa)}, secrets={secret: ours})
    out = admission.decide(admission.VALIDATE_PODS, body, facts)
    assert out.allowed is False
    assert f"Secret {secret} holds the credential of AgentTask {task_name}" in out.message
    assert f"runs as {runs_as}" in out.message
