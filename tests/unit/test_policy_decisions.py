"""Policy decisions are default deny, name the first thing not covered, prefer policies and rules
that need no approval, skip malformed policies, and match resources by glob."""

from __future__ import annotations

import hashlib
import json
from types import MappingProxyType
from typing import Any

import pytest

from taskwarden import policy

NS = "agents"
SA = "research-agent"
AUD = "https://api.github.com"


def rule(
    tool: str = "github",
    actions: tuple[str, ...] = ("read", "comment"),
    resources: tuple[str, ...] = ("repo:acme/*",),
    audiences: tuple[str, ...] = (AUD,),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "tool": tool,
        "actions": list(actions),
        "resources": list(resources),
        "audiences": list(audiences),
        **extra,
    }


def make_policy(
    name: str = "research-agents",
    rules: list[dict[str, Any]] | None = None,
    *,
    namespace: str = NS,
    accounts: tuple[str, ...] = (SA,),
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "taskwarden.dev/v1alpha1",
        "kind": "AgentPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "subjects": {"serviceAccounts": list(accounts)},
            "rules": [rule()] if rules is None else rules,
            **spec,
        },
    }


def task_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "agent": {"serviceAccountName": SA},
        "intent": "triage issue 4711",
        "scopes": [{"tool": "github", "actions": ["read"], "resources": ["repo:acme/widgets"]}],
        "audiences": [AUD],
        "dataClass": "internal",
        "ttl": "30m",
    }
    spec.update(overrides)
    return spec


def make_task(**overrides: Any) -> policy.TaskRequest:
    return policy.task_request(NS, "triage-4711", task_spec(**overrides))


def scopes(*items: tuple[str, list[str], list[str]]) -> list[dict[str, Any]]:
    return [{"tool": t, "actions": a, "resources": r} for t, a, r in items]


# --- task_request and spec_hash -------------------------------------------------------------------


def test_task_request_reads_the_spec() -> None:
    task = make_task(credentialTTL="5m", delegatedFrom="parent-1", dataClass="confidential")
    assert task == policy.TaskRequest(
        namespace=NS,
        name="triage-4711",
        service_account=SA,
        scopes=(policy.Scope("github", ("read",), ("repo:acme/widgets",)),),
        audiences=(AUD,),
        data_class="confidential",
        ttl=1800.0,
        credential_ttl=300.0,
        delegated_from="parent-1",
    )


@pytest.mark.parametrize(
    ("overrides", "ttl", "credential_ttl", "data_class"),
    [
        ({"ttl": None}, 1800.0, 600.0, "internal"),
        ({"ttl": "5m"}, 300.0, 300.0, "internal"),
        ({"ttl": "2h"}, 7200.0, 600.0, "internal"),
        ({"ttl": "10s", "dataClass": None}, 10.0, 10.0, "internal"),
        ({"credentialTTL": "1h"}, 1800.0, 3600.0, "internal"),
    ],
)
def test_task_request_defaults(
    overrides: dict[str, Any], ttl: float, credential_ttl: float, data_class: str
) -> None:
    spec = task_spec(**overrides)
    for key in [k for k, v in overrides.items() if v is None]:
        del spec[key]
    task = policy.task_request(NS, "t", spec)
    assert (task.ttl, task.credential_ttl, task.data_class) == (ttl, credential_ttl, data_class)
    assert task.delegated_from is None


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"agent": None}, "spec.agent"),
        ({"agent": {}}, "spec.agent.serviceAccountName"),
        ({"agent": {"serviceAccountName": ""}}, "spec.agent.serviceAccountName"),
        ({"scopes": []}, "spec.scopes"),
        ({"scopes": "github"}, "spec.scopes"),
        ({"scopes": [{"actions": ["read"], "resources": ["x"]}]}, r"spec.scopes\[0\].tool"),
        ({"scopes": scopes(("github", [], ["x"]))}, r"spec.scopes\[0\]"),
        ({"scopes": scopes(("github", ["read"], []))}, r"spec.scopes\[0\]"),
        (
            {"scopes": scopes(("github", ["read"], ["x"]), ("s3", [""], ["x"]))},
            r"spec.scopes\[1\].actions\[0\]",
        ),
        ({"scopes": scopes(("github", ["read"], "x"))}, r"spec.scopes\[0\].resources"),
        ({"audiences": []}, "spec.audiences"),
        ({"audiences": [AUD, 3]}, r"spec.audiences\[1\]"),
        ({"dataClass": "secret"}, "spec.dataClass"),
        ({"ttl": "forever"}, "spec.ttl"),
        ({"ttl": "0s"}, "spec.ttl"),
        ({"ttl": 30}, "spec.ttl"),
        ({"credentialTTL": "-5m"}, "spec.credentialTTL"),
        ({"delegatedFrom": ""}, "spec.delegatedFrom"),
        (
            {
                "scopes": scopes(
                    ("github", [f"a{i}" for i in range(100)], [f"r{i}" for i in range(41)])
                )
            },
            "at most 4096",
        ),
    ],
)
def test_task_request_names_the_bad_field(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        make_task(**overrides)


def test_spec_hash_is_sha256_of_canonical_json_without_completed() -> None:
    spec = task_spec(completed=True)
    body = {k: v for k, v in spec.items() if k != "completed"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert policy.spec_hash(spec) == expected


def test_spec_hash_survives_completed_and_key_order_but_nothing_else() -> None:
    base = policy.spec_hash(task_spec())
    assert policy.spec_hash(task_spec(completed=False)) == base
    assert policy.spec_hash(task_spec(completed=True)) == base
    assert policy.spec_hash(dict(reversed(list(task_spec().items())))) == base
    assert policy.spec_hash(MappingProxyType(task_spec())) == base  # kopf passes Mapping views
    assert policy.spec_hash(task_spec(ttl="31m")) != base
    assert policy.spec_hash(task_spec(audiences=[AUD, "x"])) != base
    assert policy.spec_hash(task_spec(intent="something else")) != base
    nested = task_spec(scopes=scopes(("github", ["read", "write"], ["repo:acme/widgets"])))
    assert policy.spec_hash(nested) != base


# --- Allowed ------------------------------------------------------------------------------------


def test_a_covered_task_is_allowed_by_the_rule_covering_its_first_scope() -> None:
    p = make_policy(rules=[rule(tool="slack"), rule()])
    decision = policy.evaluate(make_task(), [p])
    assert decision == policy.Decision(
        allowed=True,
        needs_approval=False,
        policy="research-agents",
        rule=1,
        reason="Allowed",
        message="allowed by rule 1 of policy research-agents",
        candidates=("research-agents",),
    )
    assert decision.issuable


def test_scopes_may_be_covered_by_different_rules() -> None:
    p = make_policy(rules=[rule(actions=("read",)), rule(actions=("comment",)), rule(tool="s3")])
    task = make_task(scopes=scopes(("github", ["comment", "read"], ["repo:acme/widgets"])))
    decision = policy.evaluate(task, [p])
    assert decision.allowed
    assert decision.rule == 1
    assert decision.message == "allowed by rules 0, 1 of policy research-agents"


def test_limits_within_bounds_are_allowed() -> None:
    p = make_policy(maxTTL="30m", maxCredentialTTL="10m")
    assert policy.evaluate(make_task(ttl="30m", credentialTTL="10m"), [p]).issuable


# --- Denied -------------------------------------------------------------------------------------


def test_no_policy_at_all_is_no_matching_policy() -> None:
    decision = policy.evaluate(make_task(), [])
    assert (decision.allowed, decision.reason, decision.policy, decision.rule) == (
        False,
        "NoMatchingPolicy",
        None,
        None,
    )
    assert "spec.subjects.serviceAccounts" in decision.message
    assert SA in decision.message


@pytest.mark.parametrize(
    "p",
    [
        make_policy(accounts=("other-agent",)),
        make_policy(accounts=()),
        make_policy(namespace="other"),
        {"metadata": {"name": "no-spec", "namespace": NS}},
        {"metadata": {"namespace": NS}, "spec": make_policy()["spec"]},  # nameless
    ],
)
def test_policies_not_naming_the_account_in_the_namespace_do_not_match(p: dict[str, Any]) -> None:
    assert policy.evaluate(make_task(), [p]).reason == "NoMatchingPolicy"


@pytest.mark.parametrize(
    ("task_scopes", "expected"),
    [
        (scopes(("github", ["delete"], ["repo:acme/widgets"])), "github:delete:repo:acme/widgets"),
        (scopes(("gitlab", ["read"], ["repo:acme/widgets"])), "gitlab:read:repo:acme/widgets"),
        (scopes(("github", ["read"], ["repo:other/widgets"])), "github:read:repo:other/widgets"),
        (
            scopes(("github", ["read"], ["repo:acme/widgets/issues"])),
            "github:read:repo:acme/widgets/issues",
        ),
        # The first uncovered triple in spec order is named, not just any.
        (
            scopes(("github", ["read", "delete", "admin"], ["repo:acme/a", "repo:acme/b"])),
            "github:delete:repo:acme/a",
        ),
        (
            scopes(
                ("github", ["read"], ["repo:acme/a"]),
                ("s3", ["get"], ["bucket"]),
                ("github", ["write"], ["repo:acme/a"]),
            ),
            "s3:get:bucket",
        ),
        # A task's resource pattern broader than the rule's is not covered.
        (scopes(("github", ["read"], ["repo:acme/**"])), "github:read:repo:acme/**"),
        (scopes(("github", ["read"], ["repo:*"])), "github:read:repo:*"),
    ],
)
def test_an_uncovered_scope_is_named(task_scopes: list[dict[str, Any]], expected: str) -> None:
    decision = policy.evaluate(make_task(scopes=task_scopes), [make_policy()])
    assert not decision.allowed
    assert decision.reason == "ScopeNotCovered"
    assert decision.message == (
        f"scope {expected} is not covered by any rule of policy research-agents"
    )
    assert decision.policy == "research-agents"
    assert decision.rule is None


def test_an_audience_outside_the_matching_rule_is_named() -> None:
    task = make_task(audiences=[AUD, "https://x"])
    decision = policy.evaluate(task, [make_policy("p", rules=[rule(tool="s3"), rule()])])
    assert (decision.allowed, decision.reason) == (False, "AudienceNotAllowed")
    assert decision.message == "audience https://x is not allowed by rule 1 of policy p"


def test_a_rule_without_audiences_allows_none() -> None:
    p = make_policy("p", rules=[{"tool": "github", "actions": ["read"], "resources": ["**"]}])
    assert policy.evaluate(make_task(), [p]).reason == "AudienceNotAllowed"


@pytest.mark.parametrize(
    ("data_class", "max_data_class", "allowed"),
    [
        ("public", None, True),
        ("internal", None, True),  # maxDataClass defaults to internal
        ("confidential", None, False),
        ("confidential", "confidential", True),
        ("restricted", "confidential", False),
        ("restricted", "restricted", True),
        ("internal", "public", False),
    ],
)
def test_data_class_is_capped_by_the_rule(
    data_class: str, max_data_class: str | None, allowed: bool
) -> None:
    extra = {} if max_data_class is None else {"maxDataClass": max_data_class}
    decision = policy.evaluate(make_task(dataClass=data_class), [make_policy("p", [rule(**extra)])])
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason == "DataClassTooHigh"
        assert decision.message == (
            f"data class {data_class} exceeds maxDataClass {max_data_class or 'internal'} "
            "of rule 0 of policy p"
        )


def test_scope_is_checked_before_audience_and_data_class() -> None:
    task = make_task(
        scopes=scopes(("github", ["read", "delete"], ["repo:acme/x"])),
        audiences=["https://x"],
        dataClass="restricted",
    )
    decision = policy.evaluate(task, [make_policy()])
    assert decision.reason == "AudienceNotAllowed"  # first triple's rule fails on audience
    task = make_task(scopes=scopes(("github", ["delete"], ["repo:acme/x"])), dataClass="restricted")
    assert policy.evaluate(task, [make_policy()]).reason == "ScopeNotCovered"


@pytest.mark.parametrize(
    ("spec", "reason", "message"),
    [
        ({"ttl": "2h"}, "TTLTooLong", "ttl 2h exceeds maxTTL 1h of policy p"),
        ({"ttl": "1h0m1s"}, "TTLTooLong", "ttl 1h1s exceeds maxTTL 1h of policy p"),
        (
            {"credentialTTL": "15m"},
            "CredentialTTLTooLong",
            "credentialTTL 15m exceeds maxCredentialTTL 10m of policy p",
        ),
        # With no credentialTTL the default min(ttl, 10m) applies and fits.
        ({"ttl": "1h"}, "Allowed", "allowed by rule 0 of policy p"),
        # The TTL limit is reported before the credential TTL limit.
        (
            {"ttl": "3h", "credentialTTL": "20m"},
            "TTLTooLong",
            "ttl 3h exceeds maxTTL 1h of policy p",
        ),
    ],
)
def test_ttl_limits_of_the_policy(spec: dict[str, Any], reason: str, message: str) -> None:
    p = make_policy("p", maxTTL="1h", maxCredentialTTL="10m")
    decision = policy.evaluate(make_task(**spec), [p])
    assert (decision.reason, decision.message) == (reason, message)


def test_limits_are_checked_after_scopes() -> None:
    p = make_policy("p", maxTTL="1m")
    task = make_task(ttl="2h", scopes=scopes(("github", ["delete"], ["repo:acme/x"])))
    assert policy.evaluate(task, [p]).reason == "ScopeNotCovered"


# --- Approval -----------------------------------------------------------------------------------


def test_a_rule_requiring_approval_makes_the_decision_need_approval() -> None:
    p = make_policy("p", [rule(actions=("read",)), rule(actions=("comment",), approval="required")])
    task = make_task(scopes=scopes(("github", ["read", "comment"], ["repo:acme/widgets"])))
    decision = policy.evaluate(task, [p])
    assert (decision.allowed, decision.needs_approval, decision.reason) == (
        True,
        True,
        "ApprovalRequired",
    )
    assert not decision.issuable
    assert decision.rule == 0
    assert decision.message == (
        "policy p allows the task only with approval: rule 1 requires approval for scope "
        "github:comment:repo:acme/widgets"
    )


def test_a_covering_rule_without_approval_is_preferred_per_triple() -> None:
    p = make_policy("p", [rule(approval="required"), rule(actions=("read",), approval="none")])
    decision = policy.evaluate(make_task(), [p])
    assert decision.issuable
    assert decision.rule == 1


def test_approval_rules_only_matter_when_they_are_needed() -> None:
    p = make_policy("p", [rule(approval="none"), rule(tool="s3", approval="required")])
    assert policy.evaluate(make_task(), [p]).issuable


# --- Several policies ---------------------------------------------------------------------------


def test_the_first_policy_by_name_that_allows_wins() -> None:
    policies = [make_policy("zeta"), make_policy("beta"), make_policy("alpha", [rule(tool="s3")])]
    decision = policy.evaluate(make_task(), policies)
    assert (decision.policy, decision.reason) == ("beta", "Allowed")


def test_a_policy_without_approval_beats_an_earlier_one_needing_it() -> None:
    policies = [make_policy("b-plain"), make_policy("a-gated", [rule(approval="required")])]
    assert policy.evaluate(make_task(), policies).policy == "b-plain"
    gated_only = [make_policy("b-denies", [rule(tool="s3")]), policies[1]]
    decision = policy.evaluate(make_task(), gated_only)
    assert (decision.policy, decision.reason) == ("a-gated", "ApprovalRequired")


def test_a_denial_explains_the_closest_candidate_and_names_every_candidate() -> None:
    """Three policies, each failing on a different axis: the one leaving the fewest scope
    triples and limits uncovered explains the denial, not the first by name."""
    task = make_task(
        scopes=scopes(("github", ["read", "comment"], ["repo:acme/widgets"])),
        ttl="30m",
        credentialTTL="5m",
    )
    policies = [
        # scope: neither triple is covered (gap 2)
        make_policy("a-scope", [rule(tool="s3")]),
        # limits: both triples covered, but ttl and credentialTTL too long (gap 2)
        make_policy("b-limits", maxTTL="10m", maxCredentialTTL="1m"),
        # audience: read covered, comment only under another audience (gap 1): the closest
        make_policy(
            "c-audience",
            [rule(actions=("read",)), rule(actions=("comment",), audiences=("https://x",))],
        ),
        make_policy("0-other-agent", accounts=("someone-else",)),
        make_policy("0-other-ns", namespace="elsewhere"),
    ]
    decision = policy.evaluate(task, policies)
    assert (decision.policy, decision.reason) == ("c-audience", "AudienceNotAllowed")
    assert "rule 1 of policy c-audience" in decision.message
    assert decision.candidates == ("a-scope", "b-limits", "c-audience")
    # Take the closest away: of the two left with a gap of 2, the first by name explains.
    rest = policy.evaluate(task, [p for p in policies if p["metadata"]["name"] != "c-audience"])
    assert (rest.policy, rest.reason) == ("a-scope", "ScopeNotCovered")
    assert rest.candidates == ("a-scope", "b-limits")


def test_a_limit_failure_counts_against_a_policy_as_much_as_a_scope() -> None:
    task = make_task(ttl="30m")
    policies = [
        make_policy("a-scope-and-ttl", [rule(tool="s3")], maxTTL="10m"),  # gap 2
        make_policy("b-ttl", maxTTL="10m"),  # gap 1
    ]
    decision = policy.evaluate(task, policies)
    assert (decision.policy, decision.reason) == ("b-ttl", "TTLTooLong")


def test_an_invalid_policy_never_explains_when_another_candidate_can() -> None:
    policies = [
        make_policy("a-broken", maxTTL="forever"),
        make_policy("b-scope", [rule(tool="s3")]),
    ]
    decision = policy.evaluate(make_task(), policies)
    assert (decision.policy, decision.reason) == ("b-scope", "ScopeNotCovered")
    assert decision.candidates == ("a-broken", "b-scope")
    alone = policy.evaluate(make_task(), policies[:1])
    assert (alone.policy, alone.reason) == ("a-broken", "InvalidPolicy")


def test_an_allowing_decision_also_names_every_candidate() -> None:
    policies = [make_policy("b"), make_policy("a", [rule(tool="s3")])]
    decision = policy.evaluate(make_task(), policies)
    assert (decision.policy, decision.candidates) == ("b", ("a", "b"))


def test_covering_policies_lists_allowing_policies_by_name() -> None:
    policies = [
        make_policy("c"),
        make_policy("b", [rule(approval="required")]),
        make_policy("a", [rule(tool="s3")]),
        make_policy("d", namespace="elsewhere"),
    ]
    names = [p["metadata"]["name"] for p in policy.covering_policies(make_task(), policies)]
    assert names == ["b", "c"]


# --- Malformed policies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"maxTTL": "forever"}, "spec.maxTTL"),
        ({"maxTTL": 3600}, "spec.maxTTL"),
        ({"maxCredentialTTL": "-1m"}, "spec.maxCredentialTTL"),
        ({"rules": "all"}, "spec.rules"),
        ({"rules": ["github"]}, r"spec.rules[0]"),
        ({"rules": [rule(maxDataClass="secret")]}, r"spec.rules[0].maxDataClass"),
        ({"rules": [rule(approval="maybe")]}, r"spec.rules[0].approval"),
        ({"rules": [rule(), {**rule(), "tool": None}]}, r"spec.rules[1].tool"),
        ({"rules": [{**rule(), "actions": "read"}]}, r"spec.rules[0].actions"),
        ({"rules": [{**rule(), "resources": [None]}]}, r"spec.rules[0].resources[0]"),
        ({"rules": [{**rule(), "audiences": [{"a": 1}]}]}, r"spec.rules[0].audiences[0]"),
    ],
)
def test_a_malformed_policy_is_skipped_as_invalid(spec: dict[str, Any], fragment: str) -> None:
    bad = make_policy("a-bad", **spec)
    decision = policy.evaluate(make_task(), [bad])
    assert (decision.allowed, decision.reason, decision.policy) == (False, "InvalidPolicy", "a-bad")
    assert decision.message.startswith("policy a-bad is invalid and was skipped: ")
    assert fragment in decision.message
    assert policy.evaluate(make_task(), [bad, make_policy("b-good")]).policy == "b-good"


@pytest.mark.parametrize(
    "junk",
    [
        {},
        {"metadata": None, "spec": None},
        {"metadata": {"name": "x", "namespace": NS}, "spec": []},
        {"metadata": {"name": "x", "namespace": NS}, "spec": {"subjects": [SA]}},
        {"metadata": {"name": "x", "namespace": NS}, "spec": {"subjects": {"serviceAccounts": SA}}},
        {"metadata": {"name": ["x"], "namespace": NS}, "spec": make_policy()["spec"]},
        {
            "metadata": {"name": "x", "namespace": NS},
            "spec": {"subjects": {"serviceAccounts": [SA, {"x": 1}]}, "rules": [None, 3]},
        },
    ],
)
def test_junk_never_raises_and_never_allows(junk: dict[str, Any]) -> None:
    decision = policy.evaluate(make_task(), [junk])
    assert not decision.allowed
    assert decision.reason in {"NoMatchingPolicy", "InvalidPolicy"}


def test_a_hand_built_task_without_triples_or_audiences_is_denied() -> None:
    empty = policy.TaskRequest(NS, "t", SA, (), (AUD,), "internal", 60.0, 60.0)
    assert policy.evaluate(empty, [make_policy()]).reason == "ScopeNotCovered"
    hollow = policy.TaskRequest(
        NS, "t", SA, (policy.Scope("github", (), ("repo:acme/x",)),), (AUD,), "internal", 60, 60
    )
    assert not policy.evaluate(hollow, [make_policy()]).allowed
    deaf = policy.TaskRequest(
        NS, "t", SA, (policy.Scope("github", ("read",), ("repo:acme/x",)),), (), "internal", 60, 60
    )
    assert policy.evaluate(deaf, [make_policy()]).reason == "AudienceNotAllowed"
    odd = policy.TaskRequest(
        NS, "t", SA, (policy.Scope("github", ("read",), ("repo:acme/x",)),), (AUD,), "top", 60, 60
    )
    assert policy.evaluate(odd, [make_policy()]).reason == "DataClassTooHigh"


# --- Globs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("repo:acme/*", "repo:acme/widgets", True),
        ("repo:acme/*", "repo:acme/widgets/issues", False),
        ("repo:acme/*", "repo:acme/", True),
        ("repo:*", "repo:acme/widgets", False),
        ("repo:**", "repo:acme/widgets", True),
        ("repo:acme/**", "repo:acme/widgets/issues/7", True),
        ("repo:acme/**", "repo:acme", False),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/b", False),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("a?c", "ac", False),
        ("*", "", True),
        ("", "", True),
        ("", "a", False),
        ("a.c", "abc", False),
        ("a.c", "a.c", True),
        ("a+", "aa", False),
        ("(a|b)", "a", False),
        ("(a|b)", "(a|b)", True),
        ("[ab]", "a", False),
        ("[ab]", "[ab]", True),
        ("a\\*", "a\\xyz", True),  # backslash is a literal, not an escape
        ("a\\*", "a*", False),
        ("^a$", "^a$", True),
        ("***", "x/y", True),
        ("*.txt", "notes.txt", True),
        ("*.txt", "dir/notes.txt", False),
    ],
)
def test_glob_match(pattern: str, value: str, matches: bool) -> None:
    assert policy.glob_match(pattern, value) is matches


@pytest.mark.parametrize(
    ("outer", "inner", "covers"),
    [
        ("repo:acme/*", "repo:acme/widgets", True),
        ("repo:acme/*", "repo:acme/*", True),
        ("repo:acme/*", "repo:acme/w*", True),
        ("repo:acme/*", "repo:acme/w?dgets", True),
        ("repo:acme/*", "repo:acme/**", False),
        ("repo:acme/*", "repo:*", False),
        ("repo:acme/**", "repo:acme/*/issues/*", True),
        ("repo:acme/w*", "repo:acme/*", False),
        ("*", "**", False),
        ("**", "*", True),
        ("?*", "*", False),
        ("*?", "?*", True),
        ("a*b", "ab", True),
        ("a*", "a?*", True),
        ("*a*", "?*a*?", True),
        ("a?", "a*", False),
    ],
)
def test_glob_covers_is_inclusion_of_patterns(outer: str, inner: str, covers: bool) -> None:
    assert policy.glob_covers(outer, inner) is covers


def test_hostile_patterns_finish_quickly() -> None:
    assert not policy.glob_match("*a" * 50 + "b", "a" * 10_000)
    policy.glob_covers("*a*?" * 40, "*" + "?a*" * 60)  # bounded work, whatever the answer


# --- Requesters and approvers --------------------------------------------------------------------


def test_the_agents_own_service_account_may_request() -> None:
    ok, message = policy.requester_allowed(make_task(), f"system:serviceaccount:{NS}:{SA}", [], [])
    assert ok
    assert "own service account" in message


@pytest.mark.parametrize(
    ("requesters", "username", "groups", "allowed"),
    [
        (
            ["system:serviceaccount:agents:orchestrator"],
            "system:serviceaccount:agents:orchestrator",
            [],
            True,
        ),
        (["user:alice"], "alice", [], True),
        (["alice"], "alice", [], True),
        (["group:sre"], "bob", ["dev", "sre"], True),
        (
            ["group:system:serviceaccounts:agents"],
            "system:serviceaccount:agents:x",
            ["system:serviceaccounts:agents"],
            True,
        ),
        (["user:alice"], "user:alice", [], False),  # the prefix is syntax, not part of the name
        (["group:sre"], "group:sre", [], False),
        (["group:sre"], "sre", [], False),
        (["user:alice"], "alicex", [], False),
        (["user:"], "", [], False),
        (["group:"], "bob", [""], False),
        ([], "alice", ["sre"], False),
        ("alice", "alice", [], False),  # malformed requesters list counts as empty
        ([None, 3, "alice"], "alice", [], True),
        (
            ["system:serviceaccount:agents:research-agent2"],
            "system:serviceaccount:agents:x",
            [],
            False,
        ),
    ],
)
def test_requesters_listed_in_a_covering_policy_may_request(
    requesters: Any, username: str, groups: list[str], allowed: bool
) -> None:
    p = make_policy("p", requesters=requesters)
    ok, message = policy.requester_allowed(make_task(), username, groups, [p])
    assert ok is allowed
    if not ok:
        assert "metadata.annotations[taskwarden.dev/requester]" in message
        assert "spec.requesters" in message
        assert "(p)" in message


def test_requesters_of_a_policy_that_does_not_cover_the_task_do_not_count() -> None:
    not_covering = make_policy("p", [rule(tool="s3")], requesters=["user:alice"])
    ok, message = policy.requester_allowed(make_task(), "alice", [], [not_covering])
    assert not ok
    assert "no AgentPolicy covers the task" in message
    other_account = make_policy("q", accounts=("other",), requesters=["user:alice"])
    assert not policy.requester_allowed(make_task(), "alice", [], [other_account])[0]


def test_another_service_account_is_not_the_agents_own() -> None:
    for username in (f"system:serviceaccount:other:{SA}", f"system:serviceaccount:{NS}:other", ""):
        assert not policy.requester_allowed(make_task(), username, [], [make_policy()])[0]


@pytest.mark.parametrize(
    ("approvers", "username", "groups", "allowed"),
    [
        (["user:alice", "group:sre"], "alice", [], True),
        (["user:alice", "group:sre"], "bob", ["sre"], True),
        (["user:alice", "group:sre"], "bob", ["dev"], False),
        (["user:alice"], "user:alice", [], False),
        (["carol"], "carol", [], True),
        (None, "alice", ["sre"], False),
        ({"user": "alice"}, "alice", [], False),
        (["user:alice"], "", [], False),
    ],
)
def test_approvers(approvers: Any, username: str, groups: list[str], allowed: bool) -> None:
    p = make_policy("p", approvers=approvers)
    assert policy.approver_allowed(p, username, groups) is allowed


def test_a_group_string_is_not_split_into_characters() -> None:
    p = make_policy("p", approvers=["group:s"])
    assert not policy.approver_allowed(p, "bob", "sre")  # type: ignore[arg-type]
    assert policy.approver_allowed(make_policy(approvers=["group:sre"]), "bob", "sre")  # type: ignore[arg-type]


# --- Wildcard tool and action in rules ------------------------------------------------------------


def _wild_policy(tool: str, actions: list[str]) -> dict:
    return {
        "metadata": {"name": "wild", "namespace": "agents"},
        "spec": {
            "subjects": {"serviceAccounts": ["research-agent"]},
            "rules": [
                {
                    "tool": tool,
                    "actions": actions,
                    "resources": ["repo:acme/*"],
                    "audiences": ["https://api.github.com"],
                }
            ],
        },
    }


def _wild_task(tool: str, action: str) -> policy.TaskRequest:
    return policy.task_request(
        "agents",
        "t",
        {
            "agent": {"serviceAccountName": "research-agent"},
            "intent": "x",
            "scopes": [{"tool": tool, "actions": [action], "resources": ["repo:acme/widgets"]}],
            "audiences": ["https://api.github.com"],
        },
    )


def test_rule_tool_star_covers_any_tool_but_still_checks_resources() -> None:
    pol = _wild_policy("*", ["read"])
    assert policy.evaluate(_wild_task("gitlab", "read"), [pol]).allowed
    assert not policy.evaluate(_wild_task("gitlab", "write"), [pol]).allowed


def test_rule_action_star_covers_any_action_of_that_tool_only() -> None:
    pol = _wild_policy("github", ["*"])
    assert policy.evaluate(_wild_task("github", "delete"), [pol]).allowed
    assert not policy.evaluate(_wild_task("gitlab", "read"), [pol]).allowed
