#!/usr/bin/env bash
# The S3 clients the gateway's tests drive that are not Python packages: rclone, from
# Debian's package (boto3, s3fs and the AWS CLI come with the test extras). Idempotent.
set -euo pipefail
if ! command -v rclone >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "rclone is missing: install Debian's package (apt-get install rclone) as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q rclone >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q rclone; }
fi
