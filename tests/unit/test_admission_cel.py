"""The CEL admission builder (admission/cel.py): what it decides in the API server equals the
webhook's decision, and the task webhooks' matchConditions keep the cases CEL cannot decide.

Pure: the expressions are checked here for shape, for the exact JSON the stamp must produce,
and for the webhook messages they repeat; the real API server evaluates them in
tests/integration/test_admission_cel.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskwarden import admission, config
from taskwarden.admission import cel, stamping
from taskwarden.server import webhook_config

ROOT = Path(__file__).resolve().parents[2]
NS = "agents"
AGENT = f"system:serviceaccount:{NS}:agent"
SA_GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated"]
KEY = "taskwarden.dev/requester"


def expressions() -> list[str]:
    """Every CEL expression the operator and the chart write."""
    found: list[str] = []
    for hook in (admission.MUTATE_TASKS, admission.VALIDATE_TASKS):
        found += [c["expression"] for c in cel.task_match_conditions(hook)]
    for obj in cel.policies({}, {}):
        spec = obj["spec"]
        found += [c["expression"] for c in spec.get("matchConditions", [])]
        found += [v["expression"] for v in spec.get("validations", [])]
        found += [m["applyConfiguration"]["expression"] for m in spec.get("mutations", [])]
    return found


def balanced(expr: str) -> bool:
    """Brackets balance and string literals close, outside of those literals."""
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    quote = ""
    for ch in expr:
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and not quote


def test_every_expression_is_well_formed() -> None:
    exprs = expressions()
    assert len(exprs) == 8
    for expr in exprs:
        assert balanced(expr), expr
        assert "\n" not in expr


@given(st.text(alphabet="-aZ09:._@/+=" + '"\\ \t\x01\u00e9\u2028<>&', min_size=1, max_size=40))
def test_a_safe_string_is_its_own_json(text: str) -> None:
    """What CEL concatenates between quotes is what json.dumps writes, byte for byte; a string
    JSON would escape is not SAFE, so it goes to the webhook."""
    safe = re.fullmatch(cel.SAFE[1:-1], text) is not None
    assert safe == (json.dumps(text) == f'"{text}"' and not set(text) & set(" <>&"))


def test_the_stamp_has_the_keys_of_stamp_text_in_its_order() -> None:
    stamp = {"username": AGENT, "groups": SA_GROUPS, "podName": "agent-0", "podUID": "u-1"}
    text = stamping.stamp_text(stamp)
    order = [m.group(1) for m in re.finditer(r'"(\w+)":', text)]
    assert order == ["groups", "podName", "podUID", "username"]
    positions = [cel.STAMP.index(f'"{k}":') for k in order]
    assert positions == sorted(positions)
    assert text.startswith('{"groups":[') and text.endswith(f',"username":"{AGENT}"}}')
    assert ',"podName"' in text  # compact separators, as CEL writes them
    assert cel.STAMP.startswith("'{\"groups\":['")


def test_the_policy_messages_are_the_webhooks() -> None:
    """A client sees the same sentence whichever side refuses."""
    req = admission.parse(
        {
            "request": {
                "uid": "1",
                "kind": {"group": "taskwarden.dev", "version": "v1alpha1", "kind": "AgentTask"},
                "operation": "CREATE",
                "namespace": NS,
                "name": "t",
                "userInfo": {"username": AGENT, "groups": SA_GROUPS},
                "object": {"metadata": {"name": "t", "annotations": {KEY: '{"username":"x"}'}}},
            }
        }
    )
    who = "user who created the task"
    with pytest.raises(admission.Denied) as forged:
        stamping.stamp(req, KEY, {"username": AGENT, "groups": SA_GROUPS}, who)
    assert forged.value.message == cel.FORGED
    without = {"metadata": {"name": "t"}}
    with pytest.raises(admission.Denied) as missing:
        stamping.check_stamped(
            _replace(req, obj=without), KEY, {"username": AGENT, "groups": SA_GROUPS}, who
        )
    assert missing.value.message == cel.MISSING
    update = _replace(req, operation="UPDATE", old={"metadata": {"annotations": {KEY: "a"}}})
    with pytest.raises(admission.Denied) as changed:
        stamping.check_stamped(update, KEY, {}, who)
    assert changed.value.message == cel.CHANGED


def _replace(req: admission.Request, **changes: Any) -> admission.Request:
    import dataclasses

    return dataclasses.replace(req, **changes)


def test_the_validate_webhook_is_called_for_what_cel_cannot_decide() -> None:
    [cond] = cel.task_match_conditions(admission.VALIDATE_TASKS)
    expr = cond["expression"]
    # CREATE: skipped only for the agent's own, undelegated, plainly stamped task.
    assert expr.startswith("request.operation == 'CREATE' ? !")
    for needed in (
        "object.spec.delegatedFrom",  # delegation
        "'system:serviceaccount:' + request.namespace + ':' + object.spec.agent.serviceAccountName",
        cel.SAFE,  # user strings CEL can stamp
        f"object.metadata.annotations['{KEY}'] == " + cel.STAMP,  # stamped exactly as CEL does
        f"oldObject.metadata.annotations['{KEY}']",  # UPDATE: any change of the stamp
    ):
        assert needed in expr, needed
    [mutate] = cel.task_match_conditions(admission.MUTATE_TASKS)
    # CREATE still unstamped (policy not loaded, or a string CEL does not stamp); UPDATE that
    # dropped the stamp.
    assert "!(has(object.metadata.annotations)" in mutate["expression"]
    for other in (
        admission.MUTATE_APPROVALS,
        admission.VALIDATE_APPROVALS,
        admission.VALIDATE_PODS,
    ):
        with pytest.raises(ValueError):
            cel.task_match_conditions(other)


def test_policies_and_bindings_name_each_other_and_select_like_the_webhooks() -> None:
    settings = config.Settings(
        watch=config.WatchSettings(namespaces=("a", "b"), operator_namespace="tw"),
        server=config.ServerSettings(webhook_url="https://127.0.0.1:9443"),
    )
    objs = webhook_config.admission_policies(settings)
    assert [o["kind"] for o in objs] == [
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert {o["metadata"]["name"] for o in objs} == {cel.POLICY}
    mutating, validating = webhook_config.webhook_configurations(settings, "PEM", in_process=True)
    selector = mutating["webhooks"][0]["namespaceSelector"]
    for binding in objs[1::2]:
        assert binding["spec"]["policyName"] == cel.POLICY
        assert binding["spec"]["matchResources"]["namespaceSelector"] == selector
    assert objs[3]["spec"]["validationActions"] == ["Deny"]
    for policy in objs[0::2]:
        assert policy["spec"]["failurePolicy"] == "Fail"
        [rule] = policy["spec"]["matchConstraints"]["resourceRules"]
        assert rule["resources"] == ["agenttasks"] and rule["operations"] == ["CREATE", "UPDATE"]
    # Only the task webhooks are gated; approvals and pods are as in webhook mode.
    gated = {
        w["name"] for w in mutating["webhooks"] + validating["webhooks"] if "matchConditions" in w
    }
    assert gated == {"agenttasks.mutate.taskwarden.dev", "agenttasks.validate.taskwarden.dev"}
    plain_m, plain_v = webhook_config.webhook_configurations(settings, "PEM")
    assert not [w for w in plain_m["webhooks"] + plain_v["webhooks"] if "matchConditions" in w]


def test_the_mode_follows_the_setting_and_discovery() -> None:
    both = set(cel.RESOURCES) | {"validatingadmissionpolicybindings"}
    assert cel.use_cel("auto", both) and cel.use_cel("cel", both)
    assert not cel.use_cel("webhook", both)
    assert not cel.use_cel("auto", {"validatingadmissionpolicies"})
    assert not cel.use_cel("cel", set())
    assert config.from_env({"TASKWARDEN_ADMISSION_MODE": "CEL"}).server.admission_mode == "cel"
    assert config.from_env({}).server.admission_mode == "auto"
    with pytest.raises(ValueError, match="TASKWARDEN_ADMISSION_MODE 'both' must be one of"):
        config.from_env({"TASKWARDEN_ADMISSION_MODE": "both"})


def test_the_chart_carries_this_module_s_output() -> None:
    """charts/taskwarden/files/admission-cel.json is `make render`'s copy of chart_data()."""
    path = ROOT / "charts" / "taskwarden" / "files" / "admission-cel.json"
    assert json.loads(path.read_text()) == cel.chart_data(), "run make render"
