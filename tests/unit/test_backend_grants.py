"""The PostgreSQL backend's pure side: scopes to grants, what is refused, role names, comments.

The property: for any policy naming the postgres backend and any task it allows, the grants
computed for any catalog never exceed what the policy's rules allow. It is checked against an
oracle of its own (globs translated to regular expressions here, not taskwarden's matcher).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskwarden import policy
from taskwarden.policy import evaluation, pgscopes, rules

NS = "ns"
AUD = "postgres://sales"


def rule(actions: list[str], resources: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "tool": "postgres",
        "actions": actions,
        "resources": resources,
        "audiences": [AUD],
        "backend": {"name": "postgres", "secretRef": "pg-sales"},
        **extra,
    }


def policy_body(*rule_bodies: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": NS},
        "spec": {"subjects": {"serviceAccounts": ["agent"]}, "rules": list(rule_bodies)},
    }


def task(scopes: list[tuple[list[str], list[str]]], **spec: Any) -> policy.TaskRequest:
    return policy.task_request(
        NS,
        "t",
        {
            "agent": {"serviceAccountName": "agent"},
            "scopes": [{"tool": "postgres", "actions": a, "resources": r} for a, r in scopes],
            "audiences": [AUD],
            **spec,
        },
    )


# --- Oracle --------------------------------------------------------------------------------------


def oracle_match(pattern: str, value: str) -> bool:
    regex = "".join(
        "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern
    )  # patterns generated here have no **
    return re.fullmatch(regex, value, re.DOTALL) is not None


# --- Examples ------------------------------------------------------------------------------------

CATALOG = {
    "sales": [
        ("public", "orders", frozenset({"SELECT", "INSERT"})),
        ("public", "customers", frozenset({"SELECT"})),
        ("audit", "orders", frozenset({"SELECT"})),
    ]
}


def test_one_table_one_privilege() -> None:
    grants = pgscopes.grants(
        [("postgres", "select", "db:sales/schema:public/table:orders")], CATALOG
    )
    assert [g.show() for g in grants] == ["SELECT ON sales.public.orders"]


def test_a_table_glob_stays_within_its_schema_and_what_the_admin_may_grant() -> None:
    grants = pgscopes.grants([("postgres", "insert", "db:sales/schema:public/table:*")], CATALOG)
    assert [g.show() for g in grants] == ["INSERT ON sales.public.orders"]
    grants = pgscopes.grants([("postgres", "select", "db:sales/schema:*/table:orders")], CATALOG)
    assert [g.show() for g in grants] == [
        "SELECT ON sales.audit.orders",
        "SELECT ON sales.public.orders",
    ]


def test_a_table_whose_name_holds_a_slash_is_never_matched_by_a_star() -> None:
    catalog = {"sales": [("public", "a/b", frozenset({"SELECT"}))]}
    assert (
        pgscopes.grants([("postgres", "select", "db:sales/schema:public/table:*")], catalog) == []
    )


@pytest.mark.parametrize(
    "resource",
    [
        "db:sales/**",
        "db:*/schema:public/table:orders",
        "db:sales/schema:public",
        "db:sales/schema:public/table:orders/column:id",
        "repo:acme/widgets",
        "db:sales/schema:public/table:**",
    ],
)
def test_inexpressible_resources_are_named(resource: str) -> None:
    error = pgscopes.resource_error(resource)
    assert error is not None and repr(resource) in error


def test_actions_must_be_table_privileges() -> None:
    assert pgscopes.action_error("select") is None
    assert "table privilege" in (pgscopes.action_error("*") or "")
    assert "table privilege" in (pgscopes.action_error("drop") or "")


def test_a_postgres_rule_refuses_what_it_cannot_express_naming_the_field() -> None:
    with pytest.raises(rules.Invalid, match=r"spec\.rules\[0\]\.resources\[1\]"):
        rules.parse_policy(policy_body(rule(["select"], ["db:a/schema:b/table:c", "db:a/**"])))
    with pytest.raises(rules.Invalid, match=r"spec\.rules\[0\]\.actions\[0\]"):
        rules.parse_policy(policy_body(rule(["*"], ["db:a/schema:b/table:c"])))
    with pytest.raises(rules.Invalid, match=r"spec\.rules\[0\]\.tool"):
        rules.parse_policy(policy_body(rule(["select"], ["db:a/schema:b/table:c"], tool="*")))
    with pytest.raises(rules.Invalid, match=r"spec\.rules\[0\]\.backend\.secretRef"):
        rules.parse_policy(
            policy_body(rule(["select"], ["db:a/schema:b/table:c"], backend={"name": "postgres"}))
        )
    with pytest.raises(rules.Invalid, match=r"spec\.rules\[0\]\.backend\.name"):
        rules.parse_policy(
            policy_body(rule(["select"], ["db:a/schema:b/table:c"], backend={"name": "vault"}))
        )


def test_rules_of_one_tool_name_one_backend() -> None:
    plain = rule(["select"], ["db:a/schema:b/table:c"])
    del plain["backend"]
    with pytest.raises(rules.Invalid, match=r"spec\.rules\[1\]\.backend differs"):
        rules.parse_policy(policy_body(rule(["select"], ["db:a/schema:b/table:c"]), plain))


def test_a_task_scope_the_backend_cannot_express_is_denied_with_the_reason() -> None:
    pol = policy_body(rule(["select"], ["db:sales/schema:public/table:orders"]))
    # Covered by no rule anyway, but the backend's refusal is what explains it.
    decision = policy.evaluate_policy(task([(["select"], ["db:sales/**"])]), pol)
    assert not decision.allowed
    assert decision.reason == evaluation.BACKEND_CANNOT_EXPRESS
    assert "postgres:select:db:sales/**" in decision.message
    exchanged = task([(["select"], ["db:sales/schema:public/table:orders"])], delivery="exchange")
    assert policy.evaluate_policy(exchanged, pol).reason == evaluation.BACKEND_CANNOT_EXPRESS


def test_role_names_and_comments_round_trip() -> None:
    uid = str(uuid.uuid4())
    role = pgscopes.role_name(uid)
    assert re.fullmatch(r"tw_[0-9a-f]{32}", role) and len(role) <= 63
    held = pgscopes.parse_comment(role, pgscopes.comment(uid, "ns", "t", ["sales", "a b,c"]))
    assert held == pgscopes.Held(role, uid, "ns", ("sales", "a b,c"))
    # Another task's comment, or none, or an unparsable one: not ours to drop.
    other = pgscopes.comment(str(uuid.uuid4()), "ns", "t", ["sales"])
    assert pgscopes.parse_comment(role, other) is None
    assert pgscopes.parse_comment(role, None) is None
    assert pgscopes.parse_comment(role, pgscopes.COMMENT_PREFIX + "{") is None
    assert pgscopes.parse_comment("alice", pgscopes.comment(uid, "ns", "t", [])) is None
    with pytest.raises(ValueError):
        pgscopes.role_name("x'; DROP ROLE postgres; --")


def test_scram_verifier_matches_rfc7677() -> None:
    from taskwarden.backends.postgres import scram_verifier

    salt = b"0123456789abcdef"
    got = scram_verifier("pencil", salt)
    method, rest = got.split("$", 1)
    iters_salt, keys = rest.split("$")
    iters, b64salt = iters_salt.split(":")
    stored, server = keys.split(":")
    assert (method, int(iters), base64.b64decode(b64salt)) == ("SCRAM-SHA-256", 4096, salt)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server) == hmac.new(salted, b"Server Key", hashlib.sha256).digest()


# --- The property --------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "ab"])
PATTERNS = st.sampled_from(["a", "b", "ab", "*", "a*", "?", "*b"])
ACTIONS = st.lists(
    st.sampled_from(sorted(pgscopes.PRIVILEGES)), min_size=1, max_size=3, unique=True
)


@st.composite
def resources(draw: st.DrawFn, db: st.SearchStrategy[str]) -> str:
    return f"db:{draw(db)}/schema:{draw(PATTERNS)}/table:{draw(PATTERNS)}"


CATALOGS = st.dictionaries(
    NAMES,
    st.lists(
        st.tuples(
            NAMES,
            st.sampled_from(["a", "b", "ab", "a/b", "*"]),
            st.frozensets(st.sampled_from(sorted(pgscopes.PRIVILEGES.values()))),
        ),
        max_size=8,
    ),
)


ALLOWED = {"count": 0}


@settings(max_examples=400, deadline=None)
@given(
    rule_specs=st.lists(
        st.tuples(ACTIONS, st.lists(resources(NAMES), min_size=1, max_size=3, unique=True)),
        min_size=1,
        max_size=3,
    ),
    catalog=CATALOGS,
    data=st.data(),
)
def test_grants_never_exceed_the_scopes_the_policy_allows(
    rule_specs: list[tuple[list[str], list[str]]],
    catalog: dict[str, list[tuple[str, str, frozenset[str]]]],
    data: st.DataObject,
) -> None:
    # Scopes drawn half from the rules' own actions and resources (so that many are allowed),
    # half at random.
    known_actions = sorted({a for acts, _ in rule_specs for a in acts})
    known_resources = sorted({r for _, rs in rule_specs for r in rs})
    scope = st.tuples(
        st.lists(
            st.one_of(st.sampled_from(known_actions), st.sampled_from(sorted(pgscopes.PRIVILEGES))),
            min_size=1,
            max_size=3,
            unique=True,
        ),
        st.lists(
            st.one_of(st.sampled_from(known_resources), resources(NAMES)),
            min_size=1,
            max_size=3,
            unique=True,
        ),
    )
    scopes = data.draw(st.lists(scope, min_size=1, max_size=3))
    pol = policy_body(*(rule(a, r) for a, r in rule_specs))
    req = task(scopes)
    if not policy.evaluate_policy(req, pol).allowed:
        return
    ALLOWED["count"] += 1
    for g in pgscopes.grants(policy.triples(req), catalog):
        target = pgscopes.table_resource(g.database, g.schema, g.table)
        action = g.privilege.lower()
        assert any(
            g.privilege in privs
            for s, t, privs in catalog[g.database]
            if (s, t) == (g.schema, g.table)
        ), "granted only what the admin may grant"
        assert any(
            action in a and any(oracle_match(r, target) for r in rs) for a, rs in rule_specs
        ), f"{g.show()} is allowed by no rule"
        assert any(action in a and any(oracle_match(r, target) for r in rs) for a, rs in scopes), (
            f"{g.show()} was asked by no scope"
        )


def test_the_property_saw_allowed_tasks() -> None:
    """Not vacuous: run after the property (same module, file order), many tasks were allowed."""
    if ALLOWED["count"] == 0:
        test_grants_never_exceed_the_scopes_the_policy_allows()
    assert ALLOWED["count"] >= 50


def test_backend_settings_name_the_missing_or_bad_key() -> None:
    from taskwarden.backends.postgres import ConfigError, Settings, dsn

    def b64(**kv: str) -> dict[str, str]:
        return {k: base64.b64encode(v.encode()).decode() for k, v in kv.items()}

    where = "Secret taskwarden-system/pg-sales of backend postgres"
    with pytest.raises(ConfigError, match=r"pg-sales of backend postgres: data\.password"):
        Settings.from_secret(b64(host="db", user="admin"), where)
    with pytest.raises(ConfigError, match=r"data\.port must be a number"):
        Settings.from_secret(b64(host="db", user="a", password="p", port="x"), where)
    s = Settings.from_secret(
        b64(host="db", user="a", password="hunter2", agentHost="db.agents"), where
    )
    assert (s.port, s.database, s.sslmode, s.agent_host) == (
        5432,
        "postgres",
        "prefer",
        "db.agents",
    )
    assert "hunter2" not in repr(s)
    # user, password and database are percent-encoded into the DSN
    assert dsn(s, "tw_x", "a/b@c:d", "sal es") == (
        "postgresql://tw_x:a%2Fb%40c%3Ad@db.agents:5432/sal%20es?sslmode=prefer"
    )
