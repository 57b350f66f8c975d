"""A real PostgreSQL server on loopback for the credential-backend tests (never a fake).

initdb and postgres refuse to run as root: as root (CI, the dev machines) they run as the
`postgres` user through runuser, in a temporary data directory it owns, on a free port. The
binaries come from $TASKWARDEN_PG_BIN or the newest /usr/lib/postgresql/*/bin; if none is
found, `start` fails with a message saying what to install (the tests are never skipped).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from taskwarden import controlplane


def pg_bin() -> Path:
    env = os.environ.get("TASKWARDEN_PG_BIN")
    if env:
        return Path(env)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb): "
            "install them (apt-get install postgresql) or set TASKWARDEN_PG_BIN; the "
            "credential-backend tests need a real server"
        )
    return found[-1].parent


@dataclass
class PostgresServer:
    port: int = field(default_factory=controlplane.free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    datadir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def _as_postgres(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        pwd.getpwnam("postgres")  # KeyError: no postgres user to run the server as
        return ["runuser", "-u", "postgres", "--"]

    def start(self) -> None:
        bindir = pg_bin()
        root = Path(tempfile.mkdtemp(prefix="taskwarden-pg-"))
        self.datadir = root / "data"
        pwfile = root / "pw"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        as_pg = self._as_postgres()
        subprocess.run(
            [
                *as_pg,
                str(bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        self.log = root / "server.log"
        self.proc = subprocess.Popen(
            [
                *as_pg,
                str(bindir / "postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={root}",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.connect().close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start") from None
                time.sleep(0.05)

    def connect(
        self, dbname: str = "postgres", user: str = "postgres", password: str | None = None
    ) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=self.password if password is None else password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def dsn_connect(self, dsn: str) -> psycopg.Connection[Any]:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)

    def roles(self, prefix: str = "tw_") -> set[str]:
        with self.connect() as c:
            rows = c.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)
            ).fetchall()
        return {r[0] for r in rows}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                os.killpg(self.proc.pid, 15)  # SIGTERM: smart shutdown, then wait
                self.proc.wait(10)
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
        if self.datadir is not None:
            shutil.rmtree(self.datadir.parent, ignore_errors=True)


ADMIN = "taskwarden_admin"


def seed(pg: PostgresServer) -> str:
    """The test data, and the minimal admin of docs/backends.md; returns its password."""
    admin_pw = secrets.token_urlsafe(16)
    with pg.connect() as c:
        c.execute("CREATE DATABASE sales")
        c.execute(
            psycopg.sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                psycopg.sql.Identifier(ADMIN), psycopg.sql.Literal(admin_pw)
            )
        )
        c.execute(f"GRANT pg_signal_backend TO {ADMIN}")
    with pg.connect("sales") as c:
        c.execute("CREATE TABLE public.orders (id int PRIMARY KEY, item text)")
        c.execute("INSERT INTO public.orders VALUES (1, 'tea'), (2, 'cake')")
        c.execute("CREATE TABLE public.customers (id int PRIMARY KEY, name text)")
        c.execute("INSERT INTO public.customers VALUES (1, 'ada')")
        c.execute(f"GRANT USAGE ON SCHEMA public TO {ADMIN} WITH GRANT OPTION")
        c.execute(f"GRANT SELECT, INSERT ON public.orders TO {ADMIN} WITH GRANT OPTION")
        c.execute(f"GRANT SELECT ON public.customers TO {ADMIN} WITH GRANT OPTION")
    return admin_pw
