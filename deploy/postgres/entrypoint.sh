#!/bin/sh
# Makes the cluster on first start (user, password, database from the environment), then
# runs the server in the foreground. Clients must authenticate (scram-sha-256) from any
# address; inside the container the local socket trusts the postgres OS user only.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then  # a Docker secret, rather than the environment
    POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi
db=${POSTGRES_DB:-$user}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "pfs-postgres: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (the cluster is new)" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    trap 'rm -f "$pwfile"' EXIT
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    trap - EXIT
    {
        echo "host all all 0.0.0.0/0 scram-sha-256"
        echo "host all all ::/0 scram-sha-256"
    } >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ] && [ "$db" != template1 ]; then
        # single-user mode: no server listens while the cluster is being set up
        echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
    echo "pfs-postgres: created cluster with database $db for $user" >&2
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
