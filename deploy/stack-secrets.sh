#!/usr/bin/env bash
# Makes the secret files deploy/stack.yaml reads (random passwords), in DIR (default
# deploy/secrets, ignored by git), unless they exist. `docker stack deploy` turns them
# into Docker secrets (and `docker stack rm` removes those); a container sees only its own,
# under /run/secrets, never in its environment or in `docker service inspect`.
#
#   bash deploy/stack-secrets.sh [DIR]        # PFS_DB_USER / PFS_S3_ACCESS_KEY: default pfs
set -euo pipefail
cd "$(dirname "$0")"
dir=${1:-secrets}
user=${PFS_DB_USER:-pfs}
access=${PFS_S3_ACCESS_KEY:-pfs}

umask 077
mkdir -p "$dir"
rand() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
if [ ! -s "$dir/db_password" ] || [ ! -s "$dir/pgpass" ]; then
    pw=$(rand)
    printf '%s' "$pw" >"$dir/db_password"                  # PostgreSQL's POSTGRES_PASSWORD_FILE
    printf '*:*:*:%s:%s\n' "$user" "$pw" >"$dir/pgpass"     # pfs's PGPASSFILE (libpq's format)
fi
if [ ! -s "$dir/s3_secret_key" ] || [ ! -s "$dir/aws_credentials" ]; then
    key=$(rand)
    printf '%s' "$key" >"$dir/s3_secret_key"                 # SeaweedFS's S3_SECRET_KEY_FILE
    printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$access" "$key" \
        >"$dir/aws_credentials"                              # pfs's AWS_SHARED_CREDENTIALS_FILE
fi
echo "stack-secrets: $(cd "$dir" && pwd)" >&2
