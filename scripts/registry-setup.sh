#!/usr/bin/env bash
# Puts Docker Distribution's `registry` (Debian's docker-registry package, 2.8) at
# build/registry/docker-registry, for the registry tests and deploy/build-store-images.sh.
# The package is downloaded and unpacked, not installed: installing it would start a
# registry service of its own on every interface. Debian bookworm; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/registry
BIN=$OUT/docker-registry

log() { echo "registry-setup: $*" >&2; }

if [ ! -x "$BIN" ]; then
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$OUT"
    work=$(mktemp -d /tmp/pfs-registry.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    chmod 0777 "$work"  # apt's download runs as _apt where it can
    if ! (cd "$work" && apt-get download -q docker-registry >/dev/null 2>&1); then
        apt-get update -q >/dev/null
        (cd "$work" && apt-get download -q docker-registry >/dev/null)
    fi
    dpkg-deb -x "$work"/docker-registry_*.deb "$work/root"
    install -m 0755 "$work/root/usr/bin/docker-registry" "$BIN.tmp"
    mv "$BIN.tmp" "$BIN"
    dpkg-deb -f "$work"/docker-registry_*.deb Version >"$OUT/version"
fi
log "ready ($BIN, $(cat "$OUT/version"))"
