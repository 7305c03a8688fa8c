#!/bin/sh
# A throwaway PostgreSQL (Debian's packages) for the review tests.
#
#   sh .ci/test-postgres.sh start DIR   creates a cluster in the empty folder DIR, starts it on a free
#                                       loopback port and prints its URL on stdout
#   sh .ci/test-postgres.sh stop DIR    stops that cluster and deletes DIR
#   sh .ci/test-postgres.sh pause DIR   stops the server (fast: open connections are cut), keeping DIR
#   sh .ci/test-postgres.sh resume DIR  starts it again on the same port (the database-restart test)
#
# `make test` runs start before pytest (handing the URL over as FLEXGUARD_TEST_POSTGRES_URL) and stop
# after it, also when the tests fail or are interrupted, so no server is left running. The cluster is
# new every time: its own folder, a free port, listening on 127.0.0.1 only, and a random password that
# exists only in DIR and in the URL. PostgreSQL refuses to run as root, so as root the server runs as
# the `postgres` user. Where no cluster can be made (PostgreSQL not installed), start says why on
# stderr and prints nothing, and the PostgreSQL cases skip with that reason.
set -eu

ROLE=flexguard
DATABASE=flexguard_test
# Bytes of randomness in the password (hex: twice as many characters).
PASSWORD_BYTES=24

say() { echo "test-postgres: $*" >&2; }

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# Runs a command as the server's user: `postgres` when we are root, else ourselves.
as_server() {
    if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi
}

start() {
    dir=$1
    if [ -n "${FLEXGUARD_TEST_POSTGRES_URL:-}" ]; then
        echo "$FLEXGUARD_TEST_POSTGRES_URL"; return 0
    fi
    bin=$(bin_dir)
    if [ -z "$bin" ]; then
        say "skipped, PostgreSQL is not installed: 'make system-deps' installs Debian's postgresql"; return 0
    fi
    password=$(od -An -tx1 -N "$PASSWORD_BYTES" /dev/urandom | tr -d ' \n')
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$dir/data"
    printf '%s\n' "$password" > "$dir/password"
    chmod 700 "$dir" && chmod 600 "$dir/password"
    [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
    as_server "'$bin/initdb' -D '$dir/data' -U $ROLE --pwfile='$dir/password' --auth-local=scram-sha-256 \
        --auth-host=scram-sha-256 -E UTF8 --no-instructions" >/dev/null
    printf '%s\n' "$port" > "$dir/port"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/port"
    serve "$dir"
    PGPASSWORD=$password "$bin/psql" -h 127.0.0.1 -p "$port" -U "$ROLE" -d postgres -v ON_ERROR_STOP=1 -qtA \
        -c "CREATE DATABASE $DATABASE" >&2
    say "PostgreSQL $(basename "$(dirname "$bin")") in $dir on 127.0.0.1:$port, database $DATABASE"
    echo "postgresql://$ROLE:$password@127.0.0.1:$port/$DATABASE"
}

serve() {
    dir=$1
    port=$(cat "$dir/port")
    as_server "'$(bin_dir)/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1\" start" >/dev/null
}

pause() {
    as_server "'$(bin_dir)/pg_ctl' -D '$1/data' -m fast -w stop" >/dev/null
}

stop() {
    dir=$1
    bin=$(bin_dir)
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        as_server "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) start "${2:?start needs a folder}" ;;
    stop) stop "${2:?stop needs a folder}" ;;
    pause) pause "${2:?pause needs a folder}" ;;
    resume) serve "${2:?resume needs a folder}" ;;
    *) say "usage: sh .ci/test-postgres.sh start|stop|pause|resume DIR"; exit 2 ;;
esac
