"""What the PostgreSQL credential backend can express: scopes mapped to table grants.

A PostgreSQL scope names tables: `db:<database>/schema:<schema>/table:<table>`. The database is
a literal (a grant lives in one database, and the backend connects to it by name); schema and
table may be globs with `*` and `?` (policy/globs.py rules: never across `/`), expanded at issue
time against the tables that exist then (`grants`). `**` is refused: it would cross segments.
Actions are table privileges (`PRIVILEGES`); `*` is refused, name each privilege.

`grants` only ever grants a privilege on a table whose resource string a task scope matches
with that very action, so the grants never exceed the scopes (the property in
tests/unit/test_backend_grants.py). Called by policy/rules.py (a rule naming the postgres
backend must be expressible), policy/evaluation.py and admission (a task's scopes under such a
rule) and backends/postgres.py (the grants of an issue). Pure and stdlib only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from taskwarden.policy.globs import glob_match

NAME: Final = "postgres"
PRIVILEGES: Final = {
    "select": "SELECT",
    "insert": "INSERT",
    "update": "UPDATE",
    "delete": "DELETE",
    "truncate": "TRUNCATE",
    "references": "REFERENCES",
    "trigger": "TRIGGER",
}
ROLE_PREFIX: Final = "tw_"
COMMENT_PREFIX: Final = "taskwarden task "
_RESOURCE = re.compile(r"^db:([^/*?]+)/schema:([^/]+)/table:([^/]+)$")
_UID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
SHAPE: Final = "db:<database>/schema:<schema>/table:<table> (schema and table may use * and ?)"


@dataclass(frozen=True, order=True)
class Grant:
    """One privilege on one table, in one database."""

    database: str
    schema: str
    table: str
    privilege: str  # SQL keyword, e.g. SELECT

    def show(self) -> str:
        return f"{self.privilege} ON {self.database}.{self.schema}.{self.table}"


def resource_error(resource: str) -> str | None:
    """Why `resource` cannot be expressed as table grants; None when it can."""
    if "**" in resource:
        return f"resource {resource!r} uses **, which PostgreSQL grants cannot follow; use {SHAPE}"
    match = _RESOURCE.match(resource)
    if match is None:
        return f"resource {resource!r} is not of the form {SHAPE}"
    if "\x00" in resource:
        return f"resource {resource!r} contains a NUL character"
    return None


def action_error(action: str) -> str | None:
    """Why `action` is not a table privilege; None when it is."""
    if action in PRIVILEGES:
        return None
    return f"action {action!r} is not a PostgreSQL table privilege ({', '.join(PRIVILEGES)})"


def database_of(resource: str) -> str:
    """The literal database of an expressible resource."""
    match = _RESOURCE.match(resource)
    if match is None:
        raise ValueError(resource_error(resource) or resource)
    return match.group(1)


def table_resource(database: str, schema: str, table: str) -> str:
    return f"db:{database}/schema:{schema}/table:{table}"


def databases(triples: Iterable[tuple[str, str, str]]) -> list[str]:
    """The databases a set of (tool, action, resource) triples touch, sorted."""
    return sorted({database_of(resource) for _, _, resource in triples})


Catalog = Mapping[str, Sequence[tuple[str, str, frozenset[str]]]]
"""Per database, its tables now: (schema, table, the privileges the admin may grant on it)."""


def grants(triples: Iterable[tuple[str, str, str]], catalog: Catalog) -> list[Grant]:
    """The grants for expressible triples, given each database's tables now. A table is
    granted a privilege only when the resource string of that table matches a triple's
    resource pattern with that action, and the admin may grant it; nothing else is granted."""
    out: set[Grant] = set()
    for _, action, resource in triples:
        error = action_error(action) or resource_error(resource)
        if error:
            raise ValueError(error)
        db, privilege = database_of(resource), PRIVILEGES[action]
        for schema, table, grantable in catalog.get(db, ()):
            if privilege in grantable and glob_match(resource, table_resource(db, schema, table)):
                out.add(Grant(db, schema, table, privilege))
    return sorted(out)


def role_name(task_uid: str) -> str:
    """The login role of a task: `tw_` and its UID's 32 hex digits (within the 63-byte limit,
    and nothing but [a-z0-9_], so it never needs quoting but is quoted anyway)."""
    uid = task_uid.lower()
    if not _UID.match(uid):
        raise ValueError(f"task UID {task_uid!r} is not a UUID")
    return ROLE_PREFIX + uid.replace("-", "")


def comment(task_uid: str, namespace: str, name: str, dbs: Sequence[str]) -> str:
    """COMMENT ON ROLE: the task UID (what the sweep matches) and the databases granted in, as
    JSON (database names may hold any character but `/`)."""
    doc = {"task": task_uid, "namespace": namespace, "name": name, "databases": list(dbs)}
    return COMMENT_PREFIX + json.dumps(doc, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Held:
    """A role the backend finds on the server, read back from its comment."""

    role: str
    task_uid: str
    namespace: str
    databases: tuple[str, ...]


def parse_comment(role: str, text: str | None) -> Held | None:
    """The role's task and databases, or None when the role is not one of ours."""
    if not role.startswith(ROLE_PREFIX) or not text or not text.startswith(COMMENT_PREFIX):
        return None
    try:
        doc = json.loads(text[len(COMMENT_PREFIX) :])
        uid, ns, dbs = doc["task"], doc["namespace"], doc["databases"]
        if role_name(uid) != role or not isinstance(ns, str):
            return None
        if not isinstance(dbs, list) or not all(isinstance(d, str) for d in dbs):
            return None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return Held(role, uid, ns, tuple(dbs))
