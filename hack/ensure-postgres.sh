#!/usr/bin/env bash
# The PostgreSQL server binaries the credential-backend tests run (tests/integration/
# postgres_server.py starts a throwaway server on loopback as the `postgres` user). Installed
# from the distribution's packages when missing; the tests fail, never skip, without them.
set -euo pipefail
if [ -n "${TASKWARDEN_PG_BIN:-}" ] || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
else
  echo "PostgreSQL server binaries missing: install postgresql (or set TASKWARDEN_PG_BIN)" >&2
  exit 1
fi
