#!/usr/bin/env bash
# Gets a machine ready for deploy/compose.yaml, and prints the Compose command to use on
# stdout ("docker compose" or "docker-compose"):
#
#   COMPOSE=$(bash deploy/compose-setup.sh [DIR])
#
# 1. Compose: nothing to do when `docker compose` (v2, the CLI plugin from Docker's own
#    packages) or `docker-compose` works; otherwise installs Debian bookworm's
#    docker-compose (v1.29, apt; needs root). Debian itself ships no Compose v2 plugin.
# 2. pfs's keys, in DIR (default deploy/secrets, ignored by git; another DIR goes into
#    deploy/.env as PFS_SECRETS_DIR, an absolute path), made by deploy/stack-secrets.sh
#    unless they exist: server_key (PFS_SERVER_KEY_FILE) and admin_key (PFS_ADMIN_KEY_FILE,
#    KEY_ID:SECRET, the server admin's key: curl -u "$(cat deploy/secrets/admin_key)"), and
#    registry_password (the job image registry's, user `pfs`: `pfs image push` uses it).
#    Compose file format 2.4 has no secrets, so compose.yaml bind-mounts these files
#    read-only into the pfs containers: they are made readable by you and by the image's
#    group `pfs` (gid 10001, the Dockerfile's) only, mode 0440. (The directory gets the
#    stack's passwords too; compose takes its own from deploy/.env.)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
here=$(cd "$(dirname "$0")" && pwd)
dir=$(realpath -m "${1:-$here/secrets}")
gid=10001  # the group the pfs image runs as (Dockerfile: groupadd --gid 10001 pfs)

log() { echo "compose-setup: $*" >&2; }

if docker compose version >/dev/null 2>&1; then
    compose="docker compose"
else
    if ! docker-compose version >/dev/null 2>&1; then
        log "installing docker-compose (Debian's package)"
        apt-get update -q >&2
        apt-get install -y -q docker-compose >&2
    fi
    docker-compose version >/dev/null
    compose=docker-compose
fi

keys=("$dir/server_key" "$dir/admin_key" "$dir/registry_password")
for f in "${keys[@]}"; do
    # `up` before this script: Docker made an empty directory where the file it mounts was missing
    if [ -d "$f" ] && ! rmdir "$f"; then
        log "$f is a directory (made by Docker when the file was missing): remove it, then run this again"
        exit 1
    fi
done
bash "$here/stack-secrets.sh" "$dir"
chmod 0440 "${keys[@]}"
if [ "$(stat -c %g "${keys[@]}" | sort -u)" != "$gid" ] && ! chgrp "$gid" "${keys[@]}" 2>/dev/null; then
    # Not root: Docker can (the pfs image, built by deploy/build-image.sh, has chgrp).
    docker run --rm --network none --user 0:0 -v "$dir:/secrets" --entrypoint chgrp "${PFS_IMAGE:-pfs:local}" \
        "$gid" /secrets/server_key /secrets/admin_key /secrets/registry_password >&2
fi
echo "$compose"
