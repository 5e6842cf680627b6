#!/usr/bin/env bash
# Makes sure a Docker Compose is installed for deploy/compose.yaml: nothing to do when
# `docker compose` (v2, the CLI plugin from Docker's own packages) or `docker-compose`
# works; otherwise installs Debian bookworm's docker-compose (v1.29, apt; needs root).
# Debian itself ships no Compose v2 plugin. Prints the command to use on stdout.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
    exit 0
fi
if ! docker-compose version >/dev/null 2>&1; then
    echo "compose-setup: installing docker-compose (Debian's package)" >&2
    apt-get update -q >&2
    apt-get install -y -q docker-compose >&2
fi
docker-compose version >/dev/null
echo "docker-compose"
