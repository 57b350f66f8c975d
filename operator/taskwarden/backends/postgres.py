"""The PostgreSQL backend: one login role per task, granted exactly its scopes' tables.

- issue: in one transaction, CREATE ROLE tw_<task uid> LOGIN with a random password (sent as a
  SCRAM-SHA-256 verifier, so the server's statement log never holds it) VALID UNTIL the
  credential's expiry, and COMMENT ON ROLE naming the task UID and the databases it is granted
  in (what `list` and the sweep read back: the role is its own ledger entry); then in each
  database GRANT USAGE on the schemas and the privileges on the tables the scopes match now
  (policy/pgscopes.py). A role that exists (a rotation, a reissue after a crash) gets a new
  password and expiry instead. A failed grant revokes the role (fail closed).
- revoke: ALTER ROLE NOLOGIN, terminate its sessions (pg_terminate_backend, waiting up to 1 s
  each), REVOKE what it holds in each database, DROP ROLE. Idempotent.
- list: every role named tw_* whose comment is a task's.

Identifiers always go through psycopg.sql.Identifier, values through parameters or
sql.Literal: nothing read from a task is ever formatted into SQL text. The admin connection
needs CREATEROLE, membership in pg_signal_backend, and the privileges it grants WITH GRANT
OPTION (docs/backends.md). Connection settings: `Settings.from_secret`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from taskwarden import timeutil
from taskwarden.backends import Held, Issued, TaskRef
from taskwarden.policy import pgscopes

SCRAM_ITERATIONS = 4096
TERMINATE_WAIT_MS = 1000
_TABLES = sql.SQL(
    "SELECT n.nspname, c.relname, {} FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_%'"
).format(
    sql.SQL(", ").join(
        sql.SQL("has_table_privilege(c.oid, {})").format(sql.Literal(f"{p} WITH GRANT OPTION"))
        for p in pgscopes.PRIVILEGES.values()
    )
)
"""Every table, and which privileges the admin may grant on it (the catalog of pgscopes)."""
_HELD_TABLES = """
SELECT DISTINCT n.nspname, c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
WHERE a.grantee = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s)
"""
_HELD_SCHEMAS = """
SELECT DISTINCT n.nspname FROM pg_catalog.pg_namespace n, aclexplode(n.nspacl) a
WHERE a.grantee = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s)
"""


class ConfigError(ValueError):
    """The backend's Secret is missing a setting or holds a bad one; names the key."""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str = "postgres"
    """The maintenance database the admin connects to for roles."""
    sslmode: str = "prefer"
    agent_host: str = ""
    """The host agents connect to (default: host), for the DSN in the credential Secret."""

    @classmethod
    def from_secret(cls, data: Mapping[str, str], where: str) -> Settings:
        """From a Secret's data (base64 values); ConfigError names the missing or bad key."""
        plain: dict[str, str] = {}
        for key, value in data.items():
            try:
                plain[key] = base64.b64decode(value).decode()
            except ValueError:
                raise ConfigError(f"{where}: data.{key} is not base64 text") from None
        for key in ("host", "user", "password"):
            if not plain.get(key):
                raise ConfigError(f"{where}: data.{key} is required")
        try:
            port = int(plain.get("port", "5432"))
        except ValueError:
            raise ConfigError(f"{where}: data.port must be a number") from None
        return cls(
            host=plain["host"],
            port=port,
            user=plain["user"],
            password=plain["password"],
            database=plain.get("database") or "postgres",
            sslmode=plain.get("sslmode") or "prefer",
            agent_host=plain.get("agentHost") or plain["host"],
        )


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5802/7677): what CREATE ROLE is sent
    instead of the password."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored)}:{b64(server)}"


def dsn(settings: Settings, role: str, password: str, database: str) -> str:
    q = urllib.parse.quote
    host = settings.agent_host or settings.host
    return (
        f"postgresql://{q(role, safe='')}:{q(password, safe='')}@{host}:{settings.port}/"
        f"{q(database, safe='')}?sslmode={q(settings.sslmode, safe='')}"
    )


class PostgresBackend:
    name = pgscopes.NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conns: dict[str, psycopg.AsyncConnection[tuple[object, ...]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def _conn(
        self, database: str
    ) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
        """One autocommit admin connection per database, used by one caller at a time; dropped
        (and reopened by the next caller) after any error."""
        lock = self._locks.setdefault(database, asyncio.Lock())
        async with lock:
            conn = self._conns.get(database)
            if conn is None or conn.closed:
                s = self.settings
                conn = await psycopg.AsyncConnection.connect(
                    host=s.host,
                    port=s.port,
                    user=s.user,
                    password=s.password,
                    dbname=database,
                    sslmode=s.sslmode,
                    autocommit=True,
                    connect_timeout=10,
                    application_name="taskwarden",
                )
                self._conns[database] = conn
            try:
                yield conn
            except BaseException:
                self._conns.pop(database, None)
                with contextlib.suppress(Exception):
                    await conn.close()
                raise

    async def close(self) -> None:
        for conn in list(self._conns.values()):
            with contextlib.suppress(Exception):
                await conn.close()
        self._conns.clear()

    # ------------------------------------------------------------------ the four verbs

    async def issue(self, task: TaskRef) -> Issued:
        role = pgscopes.role_name(task.uid)
        dbs = pgscopes.databases(task.triples)
        password = secrets.token_urlsafe(32)
        until = sql.Literal(timeutil.rfc3339(task.expires_at))
        note = pgscopes.comment(task.uid, task.namespace, task.name, dbs)
        async with self._conn(self.settings.database) as c, c.transaction():
            cur = await c.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,))
            verb = "ALTER" if await cur.fetchone() else "CREATE"
            await c.execute(
                sql.SQL(verb + " ROLE {} LOGIN NOINHERIT PASSWORD {} VALID UNTIL {}").format(
                    sql.Identifier(role), sql.Literal(scram_verifier(password)), until
                )
            )
            await c.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(note))
            )
        granted: list[pgscopes.Grant] = []
        try:
            for db in dbs:
                granted += await self._grant(db, role, task.triples)
        except BaseException:
            await self.revoke(task.uid)  # fail closed: no role with half its grants
            raise
        return Issued(
            credential=role,
            expires_at=task.expires_at,
            grants=tuple(g.show() for g in granted),
            secret_data={
                "postgres_user": role,
                "postgres_password": password,
                "postgres_dsn": dsn(self.settings, role, password, dbs[0]),
            },
        )

    async def _grant(
        self, db: str, role: str, triples: Sequence[tuple[str, str, str]]
    ) -> list[pgscopes.Grant]:
        async with self._conn(db) as c:
            cur = await c.execute(_TABLES)
            keywords = list(pgscopes.PRIVILEGES.values())
            catalog = {
                db: [
                    (
                        str(row[0]),
                        str(row[1]),
                        frozenset(k for k, ok in zip(keywords, row[2:], strict=True) if ok),
                    )
                    for row in await cur.fetchall()
                ]
            }
            grants = pgscopes.grants(triples, catalog)
            by_table: dict[tuple[str, str], list[str]] = {}
            for g in grants:
                by_table.setdefault((g.schema, g.table), []).append(g.privilege)
            ident = sql.Identifier(role)
            async with c.transaction():
                for schema in sorted({schema for schema, _ in by_table}):
                    await c.execute(
                        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                            sql.Identifier(schema), ident
                        )
                    )
                for (schema, table), privs in sorted(by_table.items()):
                    # privs are keywords from pgscopes.PRIVILEGES, never task input
                    await c.execute(
                        sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                            sql.SQL(", ").join(sql.SQL(p) for p in sorted(privs)),
                            sql.Identifier(schema, table),
                            ident,
                        )
                    )
        return grants

    async def rotate(self, task: TaskRef) -> Issued:
        """A new password and expiry (and the grants brought in line with the scopes)."""
        return await self.issue(task)

    async def revoke(self, task_uid: str) -> bool:
        role = pgscopes.role_name(task_uid)
        ident = sql.Identifier(role)
        async with self._conn(self.settings.database) as c:
            cur = await c.execute(
                "SELECT shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles "
                "WHERE rolname = %s",
                (role,),
            )
            row = await cur.fetchone()
            if row is None:
                return False
            await c.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
            await c.execute(
                "SELECT pg_terminate_backend(pid, %s) FROM pg_catalog.pg_stat_activity "
                "WHERE usename = %s",
                (TERMINATE_WAIT_MS, role),
            )
            held = pgscopes.parse_comment(role, row[0] if isinstance(row[0], str) else None)
            dbs = list(held.databases) if held else await self._databases(c)
        for db in dbs:
            await self._revoke_in(db, role)
        async with self._conn(self.settings.database) as c:
            await c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
        return True

    async def _databases(self, c: psycopg.AsyncConnection[tuple[object, ...]]) -> list[str]:
        cur = await c.execute(
            "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate"
        )
        return [str(r[0]) for r in await cur.fetchall()]

    async def _revoke_in(self, db: str, role: str) -> None:
        try:
            async with self._conn(db) as c, c.transaction():
                ident = sql.Identifier(role)
                cur = await c.execute(_HELD_TABLES, (role,))
                for schema, table in await cur.fetchall():
                    await c.execute(
                        sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(
                            sql.Identifier(str(schema), str(table)), ident
                        )
                    )
                cur = await c.execute(_HELD_SCHEMAS, (role,))
                for (schema,) in await cur.fetchall():
                    await c.execute(
                        sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(
                            sql.Identifier(str(schema)), ident
                        )
                    )
        except psycopg.errors.InvalidCatalogName:
            return  # the database is gone, and its grants with it

    async def list(self) -> Sequence[Held]:
        async with self._conn(self.settings.database) as c:
            cur = await c.execute(
                "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles "
                "WHERE starts_with(rolname, %s)",
                (pgscopes.ROLE_PREFIX,),
            )
            rows = await cur.fetchall()
        out = []
        for name, note in rows:
            held = pgscopes.parse_comment(str(name), note if isinstance(note, str) else None)
            if held is not None:
                out.append(held)
        return out
