"""The Pod reviews: mount a task's credential, and guard who may mount it.

Dispatched by `admission.dispatch` for the mutate-pods and validate-pods webhooks.
- mutate: a pod annotated `taskwarden.dev/task: <task>` gets the Secret `<task>-credential` as
  an optional read-only volume in every container, plus env TASKWARDEN_TOKEN_FILE. Idempotent.
  When the task exists and has `spec.delivery: exchange`, the volume is instead a projected,
  pod-bound ServiceAccount token with audience = the operator's issuer (file SUBJECT_FILE), with
  env TASKWARDEN_SUBJECT_TOKEN_FILE, TASKWARDEN_EXCHANGE_URL and TASKWARDEN_TASK for
  taskwarden.agent; no Secret is mounted. A pod made before its task gets the Secret volume
  (create an exchange-mode task before its pod).
- validate (pod CREATE, and UPDATE of the `ephemeralcontainers` subresource that `kubectl debug`
  uses): only a pod running as a task's service account may reference its credential Secret,
  wherever a container can read a Secret (secret and projected volumes, env
  valueFrom.secretKeyRef, envFrom.secretRef; in containers, initContainers and
  ephemeralContainers). A `<name>-credential` Secret whose task does not exist is refused too,
  unless that Secret exists and is another application's (not of the credential type): a pod
  made before its task would otherwise receive the token once it is issued.
Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from taskwarden import names
from taskwarden.admission import envelope

CREDENTIAL_SUFFIX: Final = "-credential"
CREDENTIAL_VOLUME: Final = "taskwarden-credential"
CREDENTIAL_MOUNT_PATH: Final = "/var/run/secrets/taskwarden.dev/"
TOKEN_FILE_ENV: Final = "TASKWARDEN_TOKEN_FILE"
TOKEN_FILE: Final = CREDENTIAL_MOUNT_PATH + "token"
SUBJECT_PATH: Final = "subject-token"
SUBJECT_FILE: Final = CREDENTIAL_MOUNT_PATH + SUBJECT_PATH
SUBJECT_SECONDS: Final = 600
"""The shortest lifetime a projected token may ask for; the kubelet renews it at 80%."""
SUBJECT_FILE_ENV: Final = "TASKWARDEN_SUBJECT_TOKEN_FILE"
EXCHANGE_URL_ENV: Final = "TASKWARDEN_EXCHANGE_URL"
TASK_ENV: Final = "TASKWARDEN_TASK"

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


EPHEMERAL: Final = "ephemeralcontainers"


def reviewed(req: envelope.Request) -> bool:
    """The writes the guard reviews: pod CREATE, and UPDATE of pods/ephemeralcontainers."""
    if req.operation == "CREATE":
        return not req.sub_resource
    return req.operation == "UPDATE" and req.sub_resource == EPHEMERAL


def needs(req: envelope.Request) -> envelope.Needs | None:
    """validate-pods: the tasks whose credential Secrets the pod references, and those Secrets
    (their type and metadata: a task that does not exist may still name another app's Secret)."""
    if not reviewed(req):
        return None
    refs = credential_refs(req.obj)
    tasks = tuple(dict.fromkeys(task for _, _, task in refs))
    secrets = tuple(dict.fromkeys(secret for _, secret, _ in refs))
    return envelope.Needs(req.namespace, tasks=tasks, secrets=secrets) if tasks else None


def mutate_needs(req: envelope.Request) -> envelope.Needs | None:
    """mutate-pods: the annotated task (its spec.delivery picks the volume)."""
    task = envelope.annotations_of(req.obj).get(names.TASK_ANNOTATION)
    if req.operation != "CREATE" or not isinstance(task, str) or not _NAME.match(task):
        return None
    return envelope.Needs(req.namespace, tasks=(task,))


def exchanged(facts: envelope.Facts, task: str) -> bool:
    """Is `task` known to deliver by exchange? (Not read, or absent: the Secret volume.)"""
    spec = envelope.as_map(envelope.as_map(facts.tasks.get(task)).get("spec"))
    return spec.get("delivery") == names.DELIVERY_EXCHANGE and bool(facts.issuer)


def mutate(req: envelope.Request, facts: envelope.Facts) -> envelope.Outcome:
    envelope.expect_kind(req, "Pod", envelope.MUTATE_PODS)
    if req.operation != "CREATE":
        return envelope.ALLOW
    task = envelope.annotations_of(req.obj).get(names.TASK_ANNOTATION)
    if task is None:
        return envelope.ALLOW
    if not isinstance(task, str) or not _NAME.match(task) or len(task) > 63:
        raise envelope.Denied(
            f"metadata.annotations[{names.TASK_ANNOTATION}]: {task!r} is not an AgentTask name "
            "(a DNS subdomain of at most 63 characters)",
            400,
        )
    spec = req.obj.get("spec")
    if not isinstance(spec, Mapping):
        raise envelope.Denied("request.object.spec is required and must be an object", 400)
    if exchanged(facts, task):
        env = _exchange_env(facts.issuer, req.namespace, task)
        return envelope.Outcome(True, patch=tuple(_pod_patch(spec, _subject_volume(facts), env)))
    volume = {
        "name": CREDENTIAL_VOLUME,
        "secret": {"secretName": task + CREDENTIAL_SUFFIX, "optional": True},
    }
    env = [{"name": TOKEN_FILE_ENV, "value": TOKEN_FILE}]
    return envelope.Outcome(True, patch=tuple(_pod_patch(spec, volume, env)))


def _subject_volume(facts: envelope.Facts) -> dict[str, Any]:
    """A projected ServiceAccount token, bound to the pod by the kubelet, for the issuer."""
    source = {
        "audience": facts.issuer,
        "expirationSeconds": SUBJECT_SECONDS,
        "path": SUBJECT_PATH,
    }
    return {"name": CREDENTIAL_VOLUME, "projected": {"sources": [{"serviceAccountToken": source}]}}


def _exchange_env(issuer: str, namespace: str, task: str) -> list[dict[str, str]]:
    return [
        {"name": SUBJECT_FILE_ENV, "value": SUBJECT_FILE},
        {"name": EXCHANGE_URL_ENV, "value": issuer.rstrip("/") + names.EXCHANGE_PATH},
        {"name": TASK_ENV, "value": f"{names.EXCHANGE_RESOURCE_PREFIX}{namespace}/{task}"},
    ]


def _pod_patch(
    spec: Mapping[str, Any], volume: Mapping[str, Any], envs_to_add: list[dict[str, str]]
) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    volumes = spec.get("volumes")
    if not isinstance(volumes, list):
        ops.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
    elif not any(envelope.as_map(v).get("name") == CREDENTIAL_VOLUME for v in volumes):
        ops.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
    mount = {"name": CREDENTIAL_VOLUME, "mountPath": CREDENTIAL_MOUNT_PATH, "readOnly": True}
    for kind in ("initContainers", "containers"):
        containers = spec.get(kind)
        if not isinstance(containers, list):
            continue
        for i, raw in enumerate(containers):
            container = envelope.as_map(raw)
            base = f"/spec/{kind}/{i}"
            mounts = container.get("volumeMounts")
            if not isinstance(mounts, list):
                ops.append({"op": "add", "path": f"{base}/volumeMounts", "value": [mount]})
            elif not any(
                envelope.as_map(m).get("name") == CREDENTIAL_VOLUME
                or envelope.as_str(envelope.as_map(m).get("mountPath")).rstrip("/")
                == CREDENTIAL_MOUNT_PATH.rstrip("/")
                for m in mounts
            ):
                ops.append({"op": "add", "path": f"{base}/volumeMounts/-", "value": mount})
            envs = container.get("env")
            if not isinstance(envs, list):
                ops.append({"op": "add", "path": f"{base}/env", "value": list(envs_to_add)})
                continue
            have = {envelope.as_map(e).get("name") for e in envs}
            for env in envs_to_add:
                if env["name"] not in have:
                    ops.append({"op": "add", "path": f"{base}/env/-", "value": env})
    return ops


def credential_refs(pod: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(field path, Secret name, task name) for every reference to a `<task>-credential` Secret:
    secret and projected volumes, env valueFrom.secretKeyRef and envFrom.secretRef."""
    spec = envelope.as_map(pod.get("spec"))
    refs: list[tuple[str, str]] = []
    volumes = spec.get("volumes")
    for i, raw in enumerate(volumes if isinstance(volumes, list) else []):
        vol = envelope.as_map(raw)
        refs.append(
            (
                f"spec.volumes[{i}].secret.secretName",
                envelope.as_str(envelope.as_map(vol.get("secret")).get("secretName")),
            )
        )
        sources = envelope.as_map(vol.get("projected")).get("sources")
        for j, src in enumerate(sources if isinstance(sources, list) else []):
            name = envelope.as_str(envelope.as_map(envelope.as_map(src).get("secret")).get("name"))
            refs.append((f"spec.volumes[{i}].projected.sources[{j}].secret.name", name))
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        containers = spec.get(kind)
        for i, raw in enumerate(containers if isinstance(containers, list) else []):
            container = envelope.as_map(raw)
            envs = container.get("env")
            for j, env in enumerate(envs if isinstance(envs, list) else []):
                ref = envelope.as_map(
                    envelope.as_map(envelope.as_map(env).get("valueFrom")).get("secretKeyRef")
                )
                refs.append(
                    (
                        f"spec.{kind}[{i}].env[{j}].valueFrom.secretKeyRef.name",
                        envelope.as_str(ref.get("name")),
                    )
                )
            env_from = container.get("envFrom")
            for j, src in enumerate(env_from if isinstance(env_from, list) else []):
                ref = envelope.as_map(envelope.as_map(src).get("secretRef"))
                refs.append(
                    (
                        f"spec.{kind}[{i}].envFrom[{j}].secretRef.name",
                        envelope.as_str(ref.get("name")),
                    )
                )
    return [
        (path, name, name[: -len(CREDENTIAL_SUFFIX)])
        for path, name in refs
        if name.endswith(CREDENTIAL_SUFFIX) and len(name) > len(CREDENTIAL_SUFFIX)
    ]


def validate(req: envelope.Request, facts: envelope.Facts) -> envelope.Outcome:
    envelope.expect_kind(req, "Pod", envelope.VALIDATE_PODS)
    if not reviewed(req):
        return envelope.ALLOW
    refs = credential_refs(req.obj)
    if refs and facts.error:
        raise envelope.Denied(f"request.namespace: {facts.error}")
    spec = envelope.as_map(req.obj.get("spec"))
    runs_as = (
        envelope.as_str(spec.get("serviceAccountName"))
        or envelope.as_str(spec.get("serviceAccount"))
        or "default"
    )
    for path, secret, task_name in refs:
        if task_name not in facts.tasks or secret not in facts.secrets:
            raise envelope.Denied(
                f"{path}: Secret {secret} could not be checked (AgentTask {task_name} and the "
                "Secret were not read); a task's credential is refused unless checked"
            )
        task = facts.tasks[task_name]
        if task is None:
            found = facts.secrets[secret]
            if found is not None and found.get("type") != names.SECRET_TYPE:
                continue  # another application's Secret; no task can take this name now
            raise envelope.Denied(
                f"{path}: Secret {secret} is the credential of AgentTask {task_name}, which does "
                f"not exist in namespace {req.namespace}; a pod may reference a task's "
                "credential only once the task exists and only when it runs as the task's "
                "service account"
            )
        sa = envelope.as_str(
            envelope.as_map(envelope.as_map(task.get("spec")).get("agent")).get(
                "serviceAccountName"
            )
        )
        if sa != runs_as:
            raise envelope.Denied(
                f"{path}: Secret {secret} holds the credential of AgentTask {task_name}, which "
                f"only a pod running as its service account {sa or '<none>'} may mount; this pod "
                f"runs as {runs_as} (spec.serviceAccountName)"
            )
    return envelope.ALLOW
