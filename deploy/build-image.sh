#!/usr/bin/env bash
# Builds the pfs image (default tag pfs:local) from the repository's Dockerfile.
#
#   bash deploy/build-image.sh                      # pfs:local FROM pfs-python-base:local
#   PFS_IMAGE=pfs:dev BASE=my-python:3.11 bash deploy/build-image.sh
#
# The base image has no pip and containers may have no network, so the wheels are made
# here, on the host, for the base image's Python (asked from the image itself): binary
# wheels of pfs's dependencies (pyproject.toml, plus psycopg[binary] for PostgreSQL) are
# downloaded with pip, and pfs's own wheel is built from a clean copy of the source. They
# go into build/deploy/context, the only thing sent to `docker build`.
#
# Idempotent and cheap when nothing changed: the dependency wheels are downloaded again
# only when the requirements or the Python version change, pfs's wheel is reproducible
# (SOURCE_DATE_EPOCH), so Docker's layer cache makes an unchanged rebuild take seconds.
# Needs a host Python with pip (the project's .venv if there is one; or set PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

IMAGE=${PFS_IMAGE:-pfs:local}
BASE=${BASE:-pfs-python-base:local}
OUT=$ROOT/build/deploy
CTX=$OUT/context
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}  # 1980-01-01: the same source gives the same wheel

log() { echo "build-image: $*" >&2; }

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    log "$PYTHON has no pip: create the project's venv first (python3 -m venv .venv) or set PYTHON"
    exit 1
fi
pip() { "$PYTHON" -m pip --disable-pip-version-check "$@"; }

if ! docker info >/dev/null 2>&1 || ! docker image inspect "$BASE" >/dev/null 2>&1; then
    if [ "$BASE" != pfs-python-base:local ]; then
        log "no Docker Engine, or no image $BASE"
        exit 1
    fi
    bash scripts/docker-setup.sh  # engine and the base image (needs root on a fresh machine)
fi

# The base image's Python, e.g. "3.11": the wheels must fit it, whatever the host runs.
pyver=$(docker run --rm --network none --entrypoint python3 "$BASE" \
    -c 'import sys; print("%d.%d" % sys.version_info[:2])')
abi="cp${pyver/./}"
arch=$(docker run --rm --network none --entrypoint python3 "$BASE" -c 'import platform; print(platform.machine())')

# What pfs needs, from pyproject.toml, plus the PostgreSQL driver and pip (to install with).
reqs=$("$PYTHON" - <<'EOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
names = {d.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in deps}
extra = [] if "psycopg" in names else ["psycopg[binary]>=3.1"]
print("\n".join([*deps, *extra, "pip"]))
EOF
)
stamp=$(printf '%s\n%s %s\n' "$reqs" "$pyver" "$arch" | sha256sum | cut -c1-16)

mkdir -p "$OUT" "$CTX/wheels"
if [ "$(cat "$OUT/deps.stamp" 2>/dev/null || true)" != "$stamp" ] || ! ls "$CTX"/wheels/deps/pip-*.whl >/dev/null 2>&1; then
    log "downloading dependency wheels for CPython $pyver ($arch)"
    rm -rf "$CTX/wheels/deps.new"
    platforms=()
    for v in $(seq 17 40); do platforms+=(--platform "manylinux_2_${v}_${arch}"); done
    platforms+=(--platform "manylinux2014_${arch}" --platform "manylinux2010_${arch}" --platform "manylinux1_${arch}")
    mapfile -t reqarr <<<"$reqs"
    pip download -q -d "$CTX/wheels/deps.new" --only-binary=:all: \
        --python-version "$pyver" --implementation cp --abi "$abi" --abi abi3 --abi none \
        "${platforms[@]}" --platform any "${reqarr[@]}"
    rm -rf "$CTX/wheels/deps"
    mv "$CTX/wheels/deps.new" "$CTX/wheels/deps"
    echo "$stamp" >"$OUT/deps.stamp"
fi

# Build tools for pfs's own wheel, kept so that later builds work offline.
if ! ls "$OUT"/tools/setuptools-*.whl >/dev/null 2>&1; then
    log "downloading build tools (setuptools, wheel)"
    pip download -q -d "$OUT/tools" --only-binary=:all: 'setuptools>=77' wheel
fi

# pfs's wheel from a clean copy: setuptools' build/ directory in the tree can hold stale modules.
log "building the pfs wheel"
rm -rf "$OUT/src" "$CTX/wheels/pfs"
mkdir -p "$OUT/src"
tar -C "$ROOT" --exclude='__pycache__' --exclude='*.egg-info' -cf - pyproject.toml README.md src \
    | tar -C "$OUT/src" -xf -
[ -f LICENSE ] && cp LICENSE "$OUT/src/"
pip wheel -q --no-deps --no-index --find-links "$OUT/tools" -w "$CTX/wheels/pfs" "$OUT/src"
rm -rf "$OUT/src"

log "docker build -t $IMAGE (FROM $BASE)"
docker build -q -f Dockerfile --build-arg "BASE=$BASE" -t "$IMAGE" "$CTX" >/dev/null
log "built $IMAGE ($(docker image inspect -f '{{.Id}}' "$IMAGE" | cut -c1-19))"
