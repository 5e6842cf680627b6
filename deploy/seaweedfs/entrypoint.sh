#!/bin/sh
# Writes the S3 identity from the environment, then runs one `weed server` (master, volume,
# filer, S3 gateway) in the foreground with its data in /data. Only the S3 port is meant
# to be used by clients; the others stay inside the container's networks.
set -eu

if [ -n "${S3_SECRET_KEY_FILE:-}" ]; then  # a Docker secret, rather than the environment
    S3_SECRET_KEY=$(cat "$S3_SECRET_KEY_FILE")
    export S3_SECRET_KEY
fi
if [ -z "${S3_ACCESS_KEY:-}" ] || [ -z "${S3_SECRET_KEY:-}" ]; then
    echo "pfs-seaweedfs: set S3_ACCESS_KEY and S3_SECRET_KEY (or S3_SECRET_KEY_FILE)" >&2
    exit 1
fi
umask 077
python3 - <<'PY'
import json, os
ident = {"name": "pfs", "credentials": [{"accessKey": os.environ["S3_ACCESS_KEY"], "secretKey": os.environ["S3_SECRET_KEY"]}],
         "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
with open("/etc/seaweedfs/s3.json", "w") as f:
    json.dump({"identities": [ident]}, f)
PY
# Grow one volume at a time per bucket, not seven (weed reads ./master.toml).
printf '[master.volume_growth]\ncopy_1 = 1\ncopy_other = 1\n' >/etc/seaweedfs/master.toml

exec weed server \
    -dir=/data \
    -ip=127.0.0.1 \
    -ip.bind=0.0.0.0 \
    -master.volumeSizeLimitMB="${SEAWEEDFS_VOLUME_SIZE_MB:-1024}" \
    -master.telemetry=false \
    -volume.max="${SEAWEEDFS_MAX_VOLUMES:-0}" \
    -volume.preStopSeconds=0 \
    -filer \
    -s3 \
    -s3.port=8333 \
    -s3.config=/etc/seaweedfs/s3.json \
    "$@"
