#!/bin/sh
# Starts a local PostgreSQL (Debian's packages) for the review tests and prints its URL on stdout.
#
# `make test` installs Debian's `postgresql` (make system-deps), runs this and hands the URL to pytest
# as FLEXGUARD_TEST_POSTGRES_URL. As root it starts the newest cluster with pg_ctlcluster (the server
# itself runs as the `postgres` user: it refuses root) and makes a `flexguard` role owning a
# `flexguard_test` database. Where that cannot be done (not root, not installed), it says why on
# stderr and prints nothing, and the PostgreSQL cases skip with that reason.
set -eu

ROLE=flexguard
PASSWORD=flexguard-test   # a throwaway server on loopback for tests only
DATABASE=flexguard_test

say() { echo "test-postgres: $*" >&2; }

if [ -n "${FLEXGUARD_TEST_POSTGRES_URL:-}" ]; then
    echo "$FLEXGUARD_TEST_POSTGRES_URL"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "skipped, not root: set FLEXGUARD_TEST_POSTGRES_URL to a database the tests may empty"; exit 0
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    say "skipped, PostgreSQL is not installed: 'make system-deps' installs Debian's postgresql"; exit 0
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version main"; then
    pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -qx online; then
    pg_ctlcluster "$version" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
as_postgres() { su postgres -s /bin/sh -c "psql -p $port -v ON_ERROR_STOP=1 -qtA $*"; }
if [ "$(as_postgres "-c \"SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'\"")" != 1 ]; then
    as_postgres "-c \"CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'\"" >&2
fi
if [ "$(as_postgres "-c \"SELECT 1 FROM pg_database WHERE datname = '$DATABASE'\"")" != 1 ]; then
    as_postgres "-c \"CREATE DATABASE $DATABASE OWNER $ROLE\"" >&2
fi
say "PostgreSQL $version on port $port, database $DATABASE"
echo "postgresql://$ROLE:$PASSWORD@127.0.0.1:$port/$DATABASE"
