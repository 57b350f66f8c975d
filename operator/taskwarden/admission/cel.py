"""In-process admission: the AgentTask checks the API server decides in CEL, without a webhook.

Where the API server serves admissionregistration.k8s.io/v1 MutatingAdmissionPolicy and
ValidatingAdmissionPolicy (GA in Kubernetes 1.36), the usual case, an agent creating or updating
its own task, is decided in the API server and makes no webhook call:

- the MutatingAdmissionPolicy stamps `taskwarden.dev/requester` on CREATE with exactly the JSON
  `stamping.stamp_text` writes (username, groups and the pod extras of a pod-bound token), and
  restores it when an UPDATE drops it (as the mutating webhook does);
- the ValidatingAdmissionPolicy refuses, with the webhook's own messages, a client-set (forged)
  requester on CREATE, an UPDATE that changes or removes it, and a spec that expands to more
  than `policy.spec.MAX_TRIPLES` triples. Spec immutability is already the CRD's own CEL.

The task webhooks stay, gated by `matchConditions` (`task_match_conditions`): each is called
only when CEL cannot decide, that is, the requester is not the agent's own ServiceAccount
(policy `requesters`), the task is delegated (`spec.delegatedFrom`), a user string is outside
the plain character set CEL can JSON-encode byte for byte, or the stored requester is not what
CEL would stamp. The conditions are safe on their own: they skip a webhook only for an object
the webhook would accept, so a policy not loaded yet (they load asynchronously) never opens a
gap. Approvals and pods always go to their webhooks. What CEL cannot read is not checked here:
the credential Secret name clash (the operator never overwrites a Secret it does not own; the
task fails with reason SecretConflict). Pure: plain dicts, the single source for the operator
(server/webhook_config.py) and, rendered the same, the chart.
"""

from __future__ import annotations

from typing import Any, Final

from taskwarden import names
from taskwarden.admission import envelope, task_review
from taskwarden.policy import spec as taskspec

API_VERSION: Final = "admissionregistration.k8s.io/v1"
POLICY: Final = "taskwarden-agenttasks"
"""Name of the MutatingAdmissionPolicy, the ValidatingAdmissionPolicy and their bindings."""
RESOURCES: Final = ("mutatingadmissionpolicies", "validatingadmissionpolicies")
"""What discovery must list under admissionregistration.k8s.io/v1 for CEL mode."""

KEY: Final = names.REQUESTER_ANNOTATION
SAFE: Final = r"^[-a-zA-Z0-9:._@/+=]+$"
"""User strings CEL stamps itself: JSON needs no escaping for these, so CEL's string and
`stamping.stamp_text`'s are the same bytes. Anything else goes to the webhook."""

FORGED: Final = (
    f"metadata.annotations[{KEY}]: set by admission from the authenticated "
    f"{task_review.WHO}; clients cannot set it"
)
MISSING: Final = (
    f"metadata.annotations[{KEY}]: missing; it is set by the mutating webhook from the "
    f"authenticated {task_review.WHO}, and the object cannot be admitted without it"
)
CHANGED: Final = (
    f"metadata.annotations[{KEY}]: set by admission from the authenticated {task_review.WHO} "
    "at creation; clients cannot change or remove it"
)
TRIPLES: Final = (
    f"spec.scopes expands to more than {taskspec.MAX_TRIPLES} tool:action:resource triples; "
    f"at most {taskspec.MAX_TRIPLES} are allowed"
)


def _q(text: str) -> str:
    """A CEL single-quoted string literal (our constants only: no quote or backslash)."""
    assert "'" not in text and "\\" not in text, text
    return f"'{text}'"


def has_requester(obj: str) -> str:
    return f"(has({obj}.metadata.annotations) && {_q(KEY)} in {obj}.metadata.annotations)"


def requester_of(obj: str) -> str:
    return f"{obj}.metadata.annotations[{_q(KEY)}]"


def _extra(key: str) -> str:
    return (
        f"(has(request.userInfo.extra) && {_q(key)} in request.userInfo.extra "
        f"&& size(request.userInfo.extra[{_q(key)}]) > 0)"
    )


def _first(key: str) -> str:
    return f"request.userInfo.extra[{_q(key)}][0]"


GROUPS: Final = "(has(request.userInfo.groups) ? request.userInfo.groups : [])"

STAMP: Final = (
    "'{\"groups\":[' + "
    f"{GROUPS}.map(g, '\"' + g + '\"').join(',') + ']' + "
    f'({_extra(envelope.POD_NAME_EXTRA)} ? \',"podName":"\' + '
    f"{_first(envelope.POD_NAME_EXTRA)} + '\"' : '') + "
    f'({_extra(envelope.POD_UID_EXTRA)} ? \',"podUID":"\' + '
    f"{_first(envelope.POD_UID_EXTRA)} + '\"' : '') + "
    "',\"username\":\"' + request.userInfo.username + '\"}'"
)
"""`stamping.stamp_text(stamping.principal(req, with_pod=True))`, in CEL (for SAFE strings)."""

PLAIN: Final = (
    f"(request.userInfo.username.matches({_q(SAFE)}) "
    f"&& {GROUPS}.all(g, g.matches({_q(SAFE)})) "
    f"&& (!{_extra(envelope.POD_NAME_EXTRA)} || {_first(envelope.POD_NAME_EXTRA)}"
    f".matches({_q(SAFE)})) "
    f"&& (!{_extra(envelope.POD_UID_EXTRA)} || {_first(envelope.POD_UID_EXTRA)}"
    f".matches({_q(SAFE)})))"
)
"""Every user string CEL puts into the stamp is in the SAFE character set."""

OWN: Final = (
    "(has(object.spec) && has(object.spec.agent) && has(object.spec.agent.serviceAccountName) "
    "&& request.userInfo.username == 'system:serviceaccount:' + request.namespace + ':' "
    "+ object.spec.agent.serviceAccountName)"
)
"""The requester is the agent's own ServiceAccount."""

DELEGATED: Final = "(has(object.spec) && has(object.spec.delegatedFrom))"

UNCHANGED: Final = (
    f"({has_requester('object')} == {has_requester('oldObject')} && "
    f"(!{has_requester('object')} || {requester_of('object')} == {requester_of('oldObject')}))"
)

USUAL_CREATE: Final = (
    f"({OWN} && !{DELEGATED} && {PLAIN} && {has_requester('object')} "
    f"&& {requester_of('object')} == {STAMP})"
)
"""A CREATE CEL decides whole: the agent's own, undelegated task, stamped as CEL stamps."""

TRIPLE_COUNT: Final = (
    "(has(object.spec) && has(object.spec.scopes) ? object.spec.scopes.map(s, "
    "(has(s.actions) ? size(s.actions) : 0) * (has(s.resources) ? size(s.resources) : 0))"
    ".sum() : 0)"
)


def task_match_conditions(webhook: str) -> list[dict[str, str]]:
    """The matchConditions of an AgentTask webhook in CEL mode: call it only when CEL cannot
    decide. mutate: a CREATE still without the stamp (the policy did not stamp it: a user
    string outside SAFE, or the policy not loaded yet), an UPDATE that dropped it. validate:
    a CREATE that is not USUAL_CREATE, an UPDATE that changes the stamp."""
    if webhook == envelope.MUTATE_TASKS:
        expression = (
            f"request.operation == 'CREATE' ? !{has_requester('object')} : "
            f"({has_requester('oldObject')} && !{has_requester('object')})"
        )
        return [{"name": "not-stamped-in-process", "expression": expression}]
    if webhook == envelope.VALIDATE_TASKS:
        expression = f"request.operation == 'CREATE' ? !{USUAL_CREATE} : !{UNCHANGED}"
        return [{"name": "not-decided-in-process", "expression": expression}]
    raise ValueError(f"no in-process conditions for webhook {webhook}")


def _constraints() -> dict[str, Any]:
    return {
        "resourceRules": [
            {
                "apiGroups": [names.GROUP],
                "apiVersions": [names.VERSION],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["agenttasks"],
                "scope": "Namespaced",
            }
        ],
        "matchPolicy": "Equivalent",
    }


def policies(
    namespace_selector: dict[str, Any], labels: dict[str, str], name: str = POLICY
) -> list[dict[str, Any]]:
    """The MutatingAdmissionPolicy, the ValidatingAdmissionPolicy and their bindings, all named
    `name`, in the order to write them (each policy before its binding). `namespace_selector`
    is the task webhooks' own, so both modes cover the same namespaces."""

    def _metadata(labels: dict[str, str]) -> dict[str, Any]:
        return {"name": name, "labels": dict(labels)}

    mutating = {
        "apiVersion": API_VERSION,
        "kind": "MutatingAdmissionPolicy",
        "metadata": _metadata(labels),
        "spec": {
            "matchConstraints": _constraints(),
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "matchConditions": [
                {
                    "name": "stamp-or-restore",
                    "expression": (
                        f"request.operation == 'CREATE' ? "
                        f"(!{has_requester('object')} && {PLAIN}) : "
                        f"({has_requester('oldObject')} && !{has_requester('object')})"
                    ),
                }
            ],
            "mutations": [
                {
                    "patchType": "ApplyConfiguration",
                    "applyConfiguration": {
                        "expression": (
                            "Object{metadata: Object.metadata{annotations: "
                            f"{{{_q(KEY)}: request.operation == 'CREATE' ? {STAMP} : "
                            f"{requester_of('oldObject')}}}}}}}"
                        )
                    },
                }
            ],
        },
    }
    create = "request.operation != 'CREATE'"
    validating = {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": _metadata(labels),
        "spec": {
            "matchConstraints": _constraints(),
            "failurePolicy": "Fail",
            "validations": [
                {
                    "expression": f"{create} || !{PLAIN} || {has_requester('object')}",
                    "message": MISSING,
                    "reason": "Forbidden",
                },
                {
                    "expression": (
                        f"{create} || !{PLAIN} || !{has_requester('object')} "
                        f"|| {requester_of('object')} == {STAMP}"
                    ),
                    "message": FORGED,
                    "reason": "Forbidden",
                },
                {
                    "expression": f"request.operation != 'UPDATE' || {UNCHANGED}",
                    "message": CHANGED,
                    "reason": "Forbidden",
                },
                {
                    "expression": f"{create} || {TRIPLE_COUNT} <= {taskspec.MAX_TRIPLES}",
                    "message": TRIPLES,
                    "reason": "Invalid",
                },
            ],
        },
    }
    selector = {"namespaceSelector": namespace_selector}
    return [
        mutating,
        {
            "apiVersion": API_VERSION,
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": _metadata(labels),
            "spec": {"policyName": name, "matchResources": selector},
        },
        validating,
        {
            "apiVersion": API_VERSION,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": _metadata(labels),
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": selector,
            },
        },
    ]


PLURALS: Final = {
    "MutatingAdmissionPolicy": "mutatingadmissionpolicies",
    "MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}


def use_cel(mode: str, served: set[str]) -> bool:
    """CEL mode? Not in mode `webhook`; otherwise (`auto`, `cel`) when discovery lists both
    policy kinds under admissionregistration.k8s.io/v1. Without them: webhooks only."""
    return mode != "webhook" and all(r in served for r in RESOURCES)


def chart_data() -> dict[str, Any]:
    """charts/taskwarden/files/admission-cel.json (`make render` writes it; a unit test checks
    it): the webhooks' conditions and the policies, which templates/admission.yaml names and
    selects like its webhooks. So the chart and the operator share one source."""
    return {
        "conditions": {
            hook: task_match_conditions(hook)
            for hook in (envelope.MUTATE_TASKS, envelope.VALIDATE_TASKS)
        },
        "policies": policies({}, {}, name=""),
    }


if __name__ == "__main__":  # python -m taskwarden.admission.cel > charts/.../admission-cel.json
    import json

    print(json.dumps(chart_data(), indent=2, sort_keys=True))
