#!/usr/bin/env bash
# Installs what the tests need (into .venv) and runs all checks and tests.
# Idempotent; safe to run again. Exit code is non-zero on any failure, including
# "no tests collected" (pytest's exit 5).
#
#   bash scripts/test.sh              everything, as CI runs it
#   bash scripts/test.sh --quick      lint, types and the tests that need no Docker engine,
#                                     no PostgreSQL or SeaweedFS and take seconds each
#                                     (pytest -m "not docker and not cluster and not slow")
#
# Other arguments go to pytest: bash scripts/test.sh --quick tests/test_api.py -k merge
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
if [ "${1:-}" = "--quick" ]; then
    QUICK=1
    shift
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff"
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
echo "== mypy"
.venv/bin/mypy
MARKS=()
if [ "$QUICK" -eq 1 ]; then
    MARKS=(-m "not docker and not cluster and not slow")
else
    echo "== docker"
    # The docker runtime's tests need an engine and the base image: set up here (as root) on a
    # fresh machine; a no-op when both are there already.
    bash scripts/docker-setup.sh
    echo "== postgresql"
    # The cluster tests start private PostgreSQL servers: they need its binaries.
    bash scripts/pg-setup.sh
    echo "== s3 clients"
    # rclone, one of the S3 clients the gateway's tests drive (Debian's package).
    bash scripts/s3-clients-setup.sh
    echo "== registry"
    # Docker Distribution's registry binary, for the tests of job images from the cluster registry.
    bash scripts/registry-setup.sh
fi
echo "== pytest"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider ${MARKS[@]+"${MARKS[@]}"} "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
