#!/usr/bin/env bash
# Makes the local Docker Engine a Swarm manager, for the swarm job runtime and
# deploy/stack.yaml: a one-node swarm on 127.0.0.1 (PFS_SWARM_ADDR to advertise another
# address). Run as root on Debian bookworm. Idempotent: an engine that already is a swarm
# manager is left as it is; scripts/docker-setup.sh first makes sure there is an engine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "swarm-setup: $*" >&2; }

bash scripts/docker-setup.sh

state=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" = inactive ]; then
    log "docker swarm init --advertise-addr ${PFS_SWARM_ADDR:-127.0.0.1}"
    # Another process may be doing the same: what counts is the state afterwards.
    docker swarm init --advertise-addr "${PFS_SWARM_ADDR:-127.0.0.1}" >/dev/null 2>&1 || true
    state=$(docker info --format '{{.Swarm.LocalNodeState}}')
fi
if [ "$state" != active ]; then
    log "the engine's swarm state is '$state', not active"
    exit 1
fi
if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != true ]; then
    log "this engine is a swarm worker; pfs's swarm runtime needs a manager"
    exit 1
fi
log "ready (node $(docker info --format '{{.Swarm.NodeID}}'), $(docker info --format '{{.Swarm.Nodes}}') node(s))"
