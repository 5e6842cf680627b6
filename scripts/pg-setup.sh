#!/usr/bin/env bash
# Installs the PostgreSQL server binaries the tests need (they start private servers on
# loopback themselves, in temporary directories). Debian bookworm; idempotent: does
# nothing when initdb is already there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "pg-setup: installing postgresql" >&2
    apt-get update -q
    apt-get install -y -q postgresql
fi
# Debian's package starts a cluster of its own where it can; the tests do not use it.
echo "pg-setup: ready ($(ls -d /usr/lib/postgresql/*/bin | head -n 1))" >&2
