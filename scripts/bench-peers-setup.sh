#!/usr/bin/env bash
# The tools bench/ingest.py measures pfs against that are not Python packages: BorgBackup
# and restic, from Debian's packages (git is already there). Idempotent; the bench skips a
# peer that is missing and says so.
set -euo pipefail
missing=()
command -v borg >/dev/null 2>&1 || missing+=(borgbackup)
command -v restic >/dev/null 2>&1 || missing+=(restic)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]}: install Debian's packages (apt-get install ${missing[*]}) as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q "${missing[@]}"; }
fi
echo "bench-peers: $(borg --version), $(restic version | head -1)" >&2
