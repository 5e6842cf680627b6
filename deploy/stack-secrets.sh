#!/usr/bin/env bash
# Makes the secret files deploy/stack.yaml reads, in DIR (default deploy/secrets, ignored
# by git), each unless it exists; deploy/compose-setup.sh makes the same directory for
# deploy/compose.yaml. Owner-only files (umask 077), random contents:
#
#   db_password, pgpass            PostgreSQL's password, and the same as libpq's PGPASSFILE
#   s3_secret_key, aws_credentials SeaweedFS's S3 secret, and the same as an AWS credentials file
#   server_key                     pfs's PFS_SERVER_KEY_FILE: base64 of 32 random bytes, which
#                                  encrypt access-key secrets at rest; every node gets this one
#   admin_key                      pfs's PFS_ADMIN_KEY_FILE, KEY_ID:SECRET: the server admin
#                                  `admin` is made with it when the server has no user yet, and
#                                  it is what you sign in with: curl -u "$(cat deploy/secrets/admin_key)"
#   registry_password              the password of the registry of job images (user `pfs`):
#                                  pfs pulls with it, and `pfs image push` pushes with it
#   registry_ca.pem,               the registry's TLS: a CA of its own (pfs's PFS_REGISTRY_CA;
#   registry_tls_cert.pem, _key.pem  copy it to /etc/docker/certs.d/HOST:5000/ca.crt on a
#                                  machine that pushes to HOST) and the registry's certificate
#                                  for registry, localhost, 127.0.0.1 and PFS_REGISTRY_HOSTS
#
# `docker stack deploy` turns them into Docker secrets (pfs_server_key, pfs_admin_key, ...
# for a stack named pfs; `docker stack rm` removes them); a container sees only its own,
# under /run/secrets, never in its environment or in `docker service inspect`. Keep the
# files: a new server_key cannot read the access keys the old one encrypted, and the
# admin_key only takes effect on a server with no users (change keys with pfs's key API).
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
if [ ! -s "$dir/server_key" ]; then                          # pfs's PFS_SERVER_KEY_FILE
    python3 -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())' \
        >"$dir/server_key"
fi
if [ ! -s "$dir/admin_key" ]; then                           # pfs's PFS_ADMIN_KEY_FILE: KEY_ID:SECRET
    python3 -c 'import secrets
ids = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # an id like the ones pfs makes: PFS and 17 base32 letters
print("PFS" + "".join(secrets.choice(ids) for _ in range(17)) + ":" + secrets.token_urlsafe(30), end="")' \
        >"$dir/admin_key"
fi
if [ ! -s "$dir/registry_password" ]; then                   # PFS_REGISTRY_PASSWORD_FILE, and the registry's AUTH_PASSWORD_FILE
    rand | tr -d '\n' >"$dir/registry_password"
fi
if [ ! -s "$dir/registry_ca.pem" ] || [ ! -s "$dir/registry_tls_cert.pem" ] || [ ! -s "$dir/registry_tls_key.pem" ]; then
    # The stack's registry serves TLS: a CA of its own (its key is thrown away: re-run
    # after deleting these three files to issue new ones) and a certificate for the names
    # pfs and the nodes' engines use, plus PFS_REGISTRY_HOSTS (comma-separated names or
    # addresses of the nodes, for pushes from other machines).
    command -v openssl >/dev/null || { echo "stack-secrets: needs openssl (apt-get install openssl)" >&2; exit 1; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    san="DNS:registry,DNS:localhost,IP:127.0.0.1"
    for h in $(printf '%s' "${PFS_REGISTRY_HOSTS:-}" | tr ',' ' '); do
        case $h in *[!0-9.]*) san="$san,DNS:$h" ;; *) san="$san,IP:$h" ;; esac
    done
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout "$work/ca.key" -out "$dir/registry_ca.pem" -days 3650 \
        -subj "/CN=pfs registry CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req "${ec[@]}" -keyout "$dir/registry_tls_key.pem" -out "$work/tls.csr" -subj "/CN=registry" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' \
        "$san" >"$work/ext"
    openssl x509 -req -in "$work/tls.csr" -CA "$dir/registry_ca.pem" -CAkey "$work/ca.key" -CAserial "$work/ca.srl" -CAcreateserial \
        -out "$dir/registry_tls_cert.pem" -days 3650 -extfile "$work/ext" 2>/dev/null
fi
echo "stack-secrets: $(cd "$dir" && pwd)" >&2
