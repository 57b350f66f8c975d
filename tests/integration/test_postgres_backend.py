"""The PostgreSQL credential backend against a real PostgreSQL server and the real control plane.

A policy rule for tool `postgres` names the backend; a task gets a login role granted exactly its
scopes, its DSN and password in the credential Secret; every trigger that revokes the JWT also
terminates the role's sessions and drops it; a crash between the role and the Secret leaves no
role behind its task.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from taskwarden import timeutil
from taskwarden.policy import pgscopes
from tests.integration import helpers as h
from tests.integration.postgres_server import ADMIN, PostgresServer, seed

SECRET = "pg-sales"
ORDERS = "db:sales/schema:public/table:orders"
AUD = "postgres://sales"


@pytest.fixture(scope="session")
def postgres() -> Iterator[tuple[PostgresServer, str]]:
    """A real PostgreSQL 15 on loopback (as the postgres user when root), seeded."""
    pg = PostgresServer()
    pg.start()  # fails, never skips, when the server binaries are missing
    try:
        yield pg, seed(pg)
    finally:
        pg.stop()


@pytest.fixture
def backend_secret(
    api: client.ApiClient, operator_namespace: str, postgres: tuple[PostgresServer, str]
) -> str:
    """The admin's connection settings, labelled for the postgres backend by the cluster admin."""
    pg, admin_pw = postgres
    body = {
        "metadata": {"name": SECRET, "labels": {"taskwarden.dev/backend": "postgres"}},
        "stringData": {
            "host": "127.0.0.1",
            "port": str(pg.port),
            "user": ADMIN,
            "password": admin_pw,
            "sslmode": "disable",
        },
    }
    core = client.CoreV1Api(api)
    try:
        core.create_namespaced_secret(operator_namespace, body)
    except ApiException as e:
        if e.status != 409:
            raise
    return SECRET


def pg_policy(
    actions: tuple[str, ...] = ("select",), resources: tuple[str, ...] = (ORDERS,)
) -> Any:
    body = h.policy_body(tool="postgres", actions=actions, resources=resources, audiences=(AUD,))
    body["spec"]["rules"][0]["backend"] = {"name": "postgres", "secretRef": SECRET}
    return body


def pg_task(env: h.AgentEnv, name: str, **task: Any) -> h.Task:
    task.setdefault("tool", "postgres")
    task.setdefault("actions", ("select",))
    task.setdefault("resources", (ORDERS,))
    task.setdefault("audiences", (AUD,))
    return env.task(name, **task)


def creds(t: h.Task) -> dict[str, str]:
    data = t.secret().data
    return {k: base64.b64decode(v).decode() for k, v in data.items() if k.startswith("postgres_")}


def role_of(t: h.Task) -> str:
    return pgscopes.role_name(t.uid)


def assert_cut(pg: PostgresServer, session: psycopg.Connection[Any], dsn: str, role: str) -> None:
    """The open session is terminated, a new login refused, the role gone."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            session.execute("SELECT 1")
        except psycopg.OperationalError:
            break
        assert time.monotonic() < deadline, "the open session survived revocation by 1 s"
        time.sleep(0.05)
    with pytest.raises(psycopg.OperationalError):
        pg.dsn_connect(dsn)
    h.wait_for(lambda: role not in pg.roles(), timeout=5, what=f"role {role} dropped")


@pytest.fixture
def pg_env(
    agent_env: Callable[..., h.AgentEnv],
    backend_secret: str,
    operator: h.OperatorProcess,
) -> h.AgentEnv:
    return agent_env(policy=pg_policy())


def test_granted_select_works_and_nothing_else_then_completion_cuts_the_session(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    postgres: tuple[PostgresServer, str],
    pg_env: h.AgentEnv,
) -> None:
    pg, _ = postgres
    t = pg_task(pg_env, "reader")
    got = creds(t)
    role = role_of(t)
    assert got["postgres_user"] == role
    assert t.status["credential"]["backends"] == [{"name": "postgres", "credential": role}]
    assert got["postgres_password"] not in str(t.get()), "the password never reaches status"
    session = pg.dsn_connect(got["postgres_dsn"])
    assert session.execute("SELECT item FROM public.orders ORDER BY id").fetchall() == [
        ("tea",),
        ("cake",),
    ]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        session.execute("INSERT INTO public.orders VALUES (3, 'pie')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        session.execute("SELECT * FROM public.customers")
    with pg.connect() as c:  # VALID UNTIL is the credential's expiry
        until = c.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (role,))
        valid = until.fetchone()[0]
    assert abs(valid.timestamp() - timeutil.parse(t.status["credential"]["expiresAt"])) < 1
    assert got["postgres_password"] not in operator.log.read_text(errors="replace")
    assert operator.metric("taskwarden_backend_credentials_issued_total", backend="postgres") >= 1

    h.patch(api, namespace, "agenttasks", "reader", {"spec": {"completed": True}})
    h.wait_phase(api, namespace, "reader", "Completed")
    assert_cut(pg, session, got["postgres_dsn"], role)
    assert (
        operator.metric(
            "taskwarden_backend_credentials_revoked_total", backend="postgres", reason="Completed"
        )
        >= 1
    )


def test_expiry_revokes_the_role(
    api: client.ApiClient,
    namespace: str,
    postgres: tuple[PostgresServer, str],
    pg_env: h.AgentEnv,
) -> None:
    pg, _ = postgres
    t = pg_task(pg_env, "short", ttl="6s", credential_ttl="6s")
    got = creds(t)
    session = pg.dsn_connect(got["postgres_dsn"])
    session.execute("SELECT count(*) FROM public.orders")
    h.wait_phase(api, namespace, "short", "Expired", timeout=20)
    assert_cut(pg, session, got["postgres_dsn"], role_of(t))


def test_pod_replacement_revokes_the_role(
    api: client.ApiClient,
    namespace: str,
    postgres: tuple[PostgresServer, str],
    pg_env: h.AgentEnv,
) -> None:
    pg, _ = postgres
    t = pg_task(pg_env, "bound", pod_name="agent-0")
    got = creds(t)
    session = pg.dsn_connect(got["postgres_dsn"])
    h.delete_pod(api, namespace, "agent-0")
    h.pod(api, namespace, "agent-0", "agent")  # same name, new UID
    assert h.wait_phase(api, namespace, "bound", "Revoked")["status"]["reason"] == "PodGone"
    assert_cut(pg, session, got["postgres_dsn"], role_of(t))


def test_policy_change_revokes_the_role(
    api: client.ApiClient,
    namespace: str,
    postgres: tuple[PostgresServer, str],
    pg_env: h.AgentEnv,
) -> None:
    pg, _ = postgres
    t = pg_task(pg_env, "narrowed")
    got = creds(t)
    session = pg.dsn_connect(got["postgres_dsn"])
    narrowed = pg_policy(resources=("db:sales/schema:public/table:customers",))
    h.patch(
        api, namespace, "agentpolicies", "agents", {"spec": {"rules": narrowed["spec"]["rules"]}}
    )
    st = h.wait_phase(api, namespace, "narrowed", "Revoked")["status"]
    assert st["reason"] == "PolicyChanged"
    assert_cut(pg, session, got["postgres_dsn"], role_of(t))


def test_inexpressible_scopes_are_refused_naming_the_field(
    api: client.ApiClient,
    namespace: str,
    postgres: tuple[PostgresServer, str],
    pg_env: h.AgentEnv,
    webhooks: None,
) -> None:
    # The policy: the CRD refuses a postgres rule whose resources cannot become grants.
    bad = pg_policy(resources=("db:sales/**",))
    bad["metadata"]["name"] = "bad"
    with pytest.raises(ApiException) as e:
        h.create(api, namespace, "agentpolicies", bad)
    assert e.value.status == 422 and "resources" in e.value.body
    # The task: refused at admission (webhook mode), naming the scope's field. In CEL mode an
    # agent's own task makes no webhook call and CEL cannot see which tools a policy backs, so
    # the same rule refuses it at the decision: Denied, BackendCannotExpress, no role created.
    kwargs: dict[str, Any] = dict(
        tool="postgres", actions=("select",), resources=("db:sales/**",), audiences=(AUD,)
    )
    if h.CEL_MODE:
        pg, _ = postgres
        before = set(pg.roles())
        pg_env.create_task("glob", **kwargs)
        st = h.wait_phase(api, namespace, "glob", "Denied")["status"]
        assert st["reason"] == "BackendCannotExpress", st
        assert "db:sales/**" in st["message"] and "postgres" in st["message"], st
        assert set(pg.roles()) == before
        return
    with pytest.raises(ApiException) as e:
        pg_env.create_task("glob", **kwargs)
    assert e.value.status in (400, 403, 422)
    assert "spec.scopes[0].resources[0]" in e.value.body
    assert "postgres" in e.value.body


def test_a_glob_grants_only_the_tables_it_matches(
    namespace: str,
    api: client.ApiClient,
    postgres: tuple[PostgresServer, str],
    agent_env: Callable[..., h.AgentEnv],
    backend_secret: str,
    operator: h.OperatorProcess,
) -> None:
    pg, _ = postgres
    env = agent_env(policy=pg_policy(resources=("db:sales/schema:public/table:*",)))
    t = pg_task(env, "globbed", resources=("db:sales/schema:public/table:cust*",))
    session = pg.dsn_connect(creds(t)["postgres_dsn"])
    assert session.execute("SELECT name FROM public.customers").fetchall() == [("ada",)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        session.execute("SELECT * FROM public.orders")
    h.custom(api).delete_namespaced_custom_object(
        h.GROUP, h.VERSION, namespace, "agenttasks", "globbed"
    )
    h.wait_for(lambda: role_of(t) not in pg.roles(), timeout=10, what="role dropped on deletion")


def _crash_after_the_role(operator: h.OperatorProcess, env: h.AgentEnv, name: str) -> str:
    """Restart the operator so that it exits right after creating the role of task `name`,
    before its Secret; returns the task's UID."""
    operator.env["TASKWARDEN_TEST_CRASH_AFTER"] = "backend"
    try:
        operator.stop()
        operator.start()
        body = env.create_task(
            name, tool="postgres", actions=("select",), resources=(ORDERS,), audiences=(AUD,)
        )
        assert operator.proc is not None
        operator.proc.wait(30)  # exits right after the role exists, before the Secret
        assert operator.proc.returncode == 70, operator.log_tails()
    finally:
        del operator.env["TASKWARDEN_TEST_CRASH_AFTER"]
    return str(body["metadata"]["uid"])


def test_sigkill_after_the_role_before_its_secret_leaves_no_role_behind(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    postgres: tuple[PostgresServer, str],
    pg_env: h.AgentEnv,
) -> None:
    pg, _ = postgres
    role = pgscopes.role_name(_crash_after_the_role(operator, pg_env, "crashing"))
    assert role in pg.roles(), "the crash came after the role was created"
    assert h.secret_or_none(api, namespace, "crashing-credential") is None, "and before the Secret"
    status = h.get(api, namespace, "agenttasks", "crashing")["status"]
    assert status["credential"]["backends"] == [{"name": "postgres", "credential": role}]
    # The task is deleted while no operator runs: nothing but the sweep can drop its role.
    h.custom(api).delete_namespaced_custom_object(
        h.GROUP, h.VERSION, namespace, "agenttasks", "crashing"
    )
    operator.start()
    h.wait_for(lambda: role not in pg.roles(), timeout=20, what="orphaned role dropped at start")


def test_sigkill_after_the_role_of_a_live_task_reissues_a_working_password(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    postgres: tuple[PostgresServer, str],
    pg_env: h.AgentEnv,
) -> None:
    pg, _ = postgres
    role = pgscopes.role_name(_crash_after_the_role(operator, pg_env, "survivor"))
    assert role in pg.roles()
    operator.start()
    secret = h.wait_for(
        lambda: h.secret_or_none(api, namespace, "survivor-credential"),
        timeout=30,
        what="the Secret reissued after the crash",
    )
    dsn = base64.b64decode(secret.data["postgres_dsn"]).decode()
    session = pg.dsn_connect(dsn)
    session.execute("SELECT 1 FROM public.orders")
    h.patch(api, namespace, "agenttasks", "survivor", {"spec": {"completed": True}})
    h.wait_phase(api, namespace, "survivor", "Completed")
    assert_cut(pg, session, dsn, role)


def test_rotation_gives_a_new_password_and_the_old_one_no_longer_logs_in(
    api: client.ApiClient,
    namespace: str,
    postgres: tuple[PostgresServer, str],
    pg_env: h.AgentEnv,
) -> None:
    pg, _ = postgres
    t = pg_task(pg_env, "rotating", ttl="2m", credential_ttl="8s")
    before = creds(t)
    pg.dsn_connect(before["postgres_dsn"]).close()

    def rotated() -> dict[str, str] | None:
        secret = h.secret_or_none(api, namespace, "rotating-credential")
        if secret is None:
            return None
        now = {k: base64.b64decode(v).decode() for k, v in secret.data.items()}
        return now if now["postgres_password"] != before["postgres_password"] else None

    after = h.wait_for(rotated, timeout=20, what="the password rotated with the token")
    assert after["postgres_user"] == before["postgres_user"]
    assert h.get(api, namespace, "agenttasks", "rotating")["status"]["credential"]["rotations"] >= 1
    with pytest.raises(psycopg.OperationalError):
        pg.dsn_connect(before["postgres_dsn"])
    pg.dsn_connect(after["postgres_dsn"]).execute("SELECT 1 FROM public.orders").close()


def test_a_rule_naming_an_unlabelled_secret_fails_closed(
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    postgres: tuple[PostgresServer, str],
    agent_env: Callable[..., h.AgentEnv],
    backend_secret: str,
) -> None:
    """A policy author points the operator at another Secret of its namespace (here its signing
    keys) as if it held a backend's settings: refused, the task fails, nothing is read from it."""
    pg, _ = postgres
    pol = pg_policy()
    pol["spec"]["rules"][0]["backend"]["secretRef"] = "taskwarden-signing-keys"
    env = agent_env(policy=pol)
    roles_before = pg.roles()
    env.create_task(
        "deputy", tool="postgres", actions=("select",), resources=(ORDERS,), audiences=(AUD,)
    )
    st = h.wait_phase(api, namespace, "deputy", "Failed")["status"]
    assert st["reason"] == "BackendUnavailable"
    assert "is not labelled taskwarden.dev/backend=postgres" in st["message"]
    assert h.secret_or_none(api, namespace, "deputy-credential") is None
    assert pg.roles() == roles_before
