"""The pure rules of the token exchange (server/exchange.py) and the exchange-mode pod mutation.

The attacks themselves are tried on the real control plane in
tests/integration/test_token_exchange.py; these pin the rule each refusal comes from.
"""

from __future__ import annotations

from typing import Any

import pytest

from taskwarden import admission, policy
from taskwarden.server import exchange
from tests.unit import test_admission_reviews as ar

FORM = {
    "grant_type": exchange.GRANT_TYPE,
    "subject_token": "eyJ.subject.token",
    "subject_token_type": exchange.JWT_TYPE,
    "resource": "taskwarden://agents/triage",
}
POD = {exchange.POD_NAME_EXTRA: ["agent-0"], exchange.POD_UID_EXTRA: ["uid-1"]}
NOW = 1_800_000_000.0


def review(username: str = "system:serviceaccount:agents:agent", **extra: Any) -> dict[str, Any]:
    return {"authenticated": True, "user": {"username": username, "extra": {**POD, **extra}}}


def task(phase: str = "Active", delivery: str = "exchange", **identity: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "agents", "name": "triage", "uid": "t-1"},
        "spec": {"agent": {"serviceAccountName": "agent"}, "delivery": delivery},
        "status": {
            "phase": phase,
            "identity": {"podName": "agent-0", "podUID": "uid-1", **identity},
            "credential": {"jti": "j-1", "expiresAt": "2027-02-01T00:00:00Z"},
        },
    }


CALLER = exchange.caller_of(review())


def error_of(fn: Any, *args: Any) -> str:
    with pytest.raises(exchange.Refused) as e:
        fn(*args)
    return e.value.error


def test_the_form_must_be_an_rfc8693_exchange() -> None:
    assert exchange.check_form(FORM) == "eyJ.subject.token"
    assert error_of(exchange.check_form, {**FORM, "grant_type": "password"}) == (
        "unsupported_grant_type"
    )
    assert error_of(exchange.check_form, {**FORM, "subject_token_type": "x"}) == "invalid_request"
    assert error_of(exchange.check_form, {**FORM, "subject_token": ""}) == "invalid_request"


@pytest.mark.parametrize(
    "raw", ["https://agents/triage", "taskwarden://agents", "taskwarden://a/b/c", "taskwarden:///t"]
)
def test_the_task_is_named_as_taskwarden_ns_task(raw: str) -> None:
    assert exchange.target({"resource": FORM["resource"]}) == ("agents", "triage")
    assert exchange.target({"audience": FORM["resource"]}) == ("agents", "triage")
    assert error_of(exchange.target, {"resource": raw}) == "invalid_target"
    assert error_of(exchange.target, {}) == "invalid_request"


def test_only_an_authenticated_pod_bound_service_account_is_a_caller() -> None:
    assert CALLER == exchange.Caller("agents", "agent", "agent-0", "uid-1")
    assert error_of(exchange.caller_of, {"authenticated": False}) == "invalid_grant"
    assert error_of(exchange.caller_of, review("alice")) == "invalid_grant"
    unbound = {"authenticated": True, "user": {"username": "system:serviceaccount:agents:agent"}}
    assert error_of(exchange.caller_of, unbound) == "invalid_grant"
    two = review(**{exchange.POD_NAME_EXTRA: ["agent-0", "agent-1"]})
    assert error_of(exchange.caller_of, two) == "invalid_grant"


def test_the_task_must_be_the_callers_active_exchange_task_on_its_attested_pod() -> None:
    assert exchange.check_task(task(), CALLER, NOW)["jti"] == "j-1"
    assert error_of(exchange.check_task, None, CALLER, NOW) == "invalid_target"
    other = exchange.Caller("agents", "other", "agent-0", "uid-1")
    assert error_of(exchange.check_task, task(), other, NOW) == "invalid_target"
    assert error_of(exchange.check_task, task(delivery="secret"), CALLER, NOW) == "invalid_target"
    assert error_of(exchange.check_task, task(podUID="uid-2"), CALLER, NOW) == "invalid_grant"
    assert error_of(exchange.check_task, task(podName="agent-1"), CALLER, NOW) == "invalid_grant"
    for phase in ("Revoked", "Completed", "Pending", "AwaitingApproval"):
        assert error_of(exchange.check_task, task(phase), CALLER, NOW) == "invalid_grant"
    late = 1_900_000_000.0  # past the credential's expiry: renewing, never an expired token
    assert error_of(exchange.check_task, task(), CALLER, late) == "temporarily_unavailable"


def test_an_exchange_task_pod_gets_a_projected_token_for_the_issuer() -> None:
    pod = {
        "metadata": {"name": "p", "annotations": {"taskwarden.dev/task": "triage"}},
        "spec": {"serviceAccountName": "agent", "containers": [{"name": "c", "image": "i"}]},
    }
    body = ar.review_body("Pod", pod)
    need = admission.needs(admission.MUTATE_PODS, body)
    assert need is not None and need.tasks == ("triage",)
    facts = admission.Facts(tasks={"triage": task()}, issuer="https://op.example")
    out = ar.apply_patch(pod, ar.patch_of(ar.allowed(admission.MUTATE_PODS, body, facts)))
    (volume,) = out["spec"]["volumes"]
    source = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "https://op.example"
    names = {e["name"]: e["value"] for e in out["spec"]["containers"][0]["env"]}
    assert names["TASKWARDEN_TASK"] == "taskwarden://agents/triage"
    assert names["TASKWARDEN_EXCHANGE_URL"] == "https://op.example/token"
    # A secret-mode task, or one not read yet: the Secret volume as before.
    for facts in (admission.Facts(tasks={"triage": task(delivery="secret")}), admission.Facts()):
        out = ar.apply_patch(pod, ar.patch_of(ar.allowed(admission.MUTATE_PODS, body, facts)))
        assert out["spec"]["volumes"][0]["secret"]["secretName"] == "triage-credential"


# --------------------------------------------------------------------------- policy: delivery


def test_a_rule_may_require_exchange_delivery() -> None:
    from tests.unit import test_policy_decisions as pd

    strict = [pd.make_policy("strict", [pd.rule(delivery="exchange")])]
    refused = policy.evaluate(pd.make_task(), strict)
    assert not refused.allowed and refused.reason == "ExchangeRequired"
    assert "requires spec.delivery: exchange" in refused.message
    assert policy.evaluate(pd.make_task(delivery="exchange"), strict).allowed
    assert policy.evaluate(pd.make_task(delivery="exchange"), [pd.make_policy()]).allowed
    with pytest.raises(ValueError, match=r"spec\.delivery 'carrier' must be secret or exchange"):
        pd.make_task(delivery="carrier")
    bad = policy.evaluate(pd.make_task(), [pd.make_policy("bad", [pd.rule(delivery="secret")])])
    assert not bad.allowed and "rules[0].delivery 'secret' must be exchange or unset" in bad.message
