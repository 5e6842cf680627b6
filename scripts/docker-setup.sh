#!/usr/bin/env bash
# Makes a local Docker Engine usable for pfs's docker runtime and its tests.
# Run as root on Debian bookworm. Idempotent: every step is skipped when its result
# is already there, so it is safe with an engine that is already running.
#   1. installs docker.io and debootstrap if dockerd / debootstrap are missing;
#   2. starts dockerd in the background (log: /tmp/dockerd.log) if `docker info` fails;
#   3. builds the base image pfs-python-base:local with debootstrap if it is missing
#      (no image registry is reachable, so it is made from Debian's packages).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
BASE_IMAGE=pfs-python-base:local

log() { echo "docker-setup: $*" >&2; }

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    log "installing docker.io and debootstrap"
    apt-get update -q
    apt-get install -y -q docker.io debootstrap
fi

if ! docker info >/dev/null 2>&1; then
    if pgrep -x dockerd >/dev/null 2>&1; then
        log "dockerd is already starting; waiting for it"
    else
        log "starting dockerd (log: /tmp/dockerd.log)"
        setsid dockerd >>/tmp/dockerd.log 2>&1 </dev/null &
    fi
    deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "dockerd did not answer within 60 s; last log lines:"
            tail -n 30 /tmp/dockerd.log >&2 || true
            exit 1
        fi
        sleep 0.5
    done
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "building $BASE_IMAGE with debootstrap (about a minute)"
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d /tmp/pfs-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$mirror" >/tmp/pfs-debootstrap.log 2>&1 || {
        log "debootstrap failed; last log lines:"
        tail -n 30 /tmp/pfs-debootstrap.log >&2
        exit 1
    }
    # apt caches are not needed at run time; keep the image small.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    docker run --rm "$BASE_IMAGE" python3 -c 'print("ok")' >/dev/null
fi

log "ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'), $BASE_IMAGE present)"
