#!/bin/sh
# Writes the registry's configuration from the environment and secret files, then runs it
# in the foreground with none of that environment (the registry reads REGISTRY_* variables
# as settings of its own, hence other names here). Storage: S3 (STORE_S3_ENDPOINT,
# _BUCKET, _PREFIX, _ACCESS_KEY, and the secret key in the file STORE_S3_SECRET_KEY_FILE
# or in STORE_S3_SECRET_KEY); clients: one htpasswd user (AUTH_USER, its password in
# AUTH_PASSWORD_FILE), the one pfs and its users push and pull with. Blobs are served
# through the registry, never by redirecting clients to the store. TLS: the certificate
# and key files TLS_CERT_FILE and TLS_KEY_FILE, if set (else plain HTTP, for a registry
# reachable on loopback and a private network only).
set -eu
need() { eval "v=\${$1:-}"; [ -n "$v" ] || { echo "pfs-registry: set $1" >&2; exit 1; }; }
for v in STORE_S3_ENDPOINT STORE_S3_BUCKET STORE_S3_ACCESS_KEY AUTH_USER AUTH_PASSWORD_FILE; do
    need "$v"
done
if [ -n "${TLS_CERT_FILE:-}" ]; then need TLS_KEY_FILE; fi
umask 077
python3 -W ignore::DeprecationWarning - <<'PY'
import crypt, json, os, secrets
def read(name):
    with open(os.environ[name]) as f:
        return f.read().strip()
password = read("AUTH_PASSWORD_FILE")
with open("/etc/pfs-registry/htpasswd", "w") as f:
    f.write(f"{os.environ['AUTH_USER']}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
config = {
    "version": 0.1,
    "log": {"level": os.environ.get("LOG_LEVEL", "warn"), "accesslog": {"disabled": True}},
    "storage": {
        "s3": {
            "accesskey": os.environ["STORE_S3_ACCESS_KEY"],
            "secretkey": read("STORE_S3_SECRET_KEY_FILE")
            if os.environ.get("STORE_S3_SECRET_KEY_FILE")
            else os.environ["STORE_S3_SECRET_KEY"],
            "region": os.environ.get("STORE_S3_REGION", "us-east-1"),
            "regionendpoint": os.environ["STORE_S3_ENDPOINT"],
            "bucket": os.environ["STORE_S3_BUCKET"],
            "rootdirectory": "/" + os.environ.get("STORE_S3_PREFIX", "registry").strip("/"),
            "secure": os.environ["STORE_S3_ENDPOINT"].startswith("https:"),
            "v4auth": True,
        },
        "delete": {"enabled": True},
        "redirect": {"disable": True},
        "cache": {"blobdescriptor": "inmemory"},
    },
    "http": {"addr": ":5000", "secret": secrets.token_hex(32), "headers": {"X-Content-Type-Options": ["nosniff"]}},
    "auth": {"htpasswd": {"realm": "pfs-registry", "path": "/etc/pfs-registry/htpasswd"}},
}
if os.environ.get("TLS_CERT_FILE"):
    config["http"]["tls"] = {"certificate": os.environ["TLS_CERT_FILE"], "key": os.environ["TLS_KEY_FILE"]}
with open("/etc/pfs-registry/scheme", "w") as f:  # for the health check
    f.write("https" if os.environ.get("TLS_CERT_FILE") else "http")
with open("/etc/pfs-registry/config.yml", "w") as f:
    json.dump(config, f)  # JSON is YAML
PY
exec env -i PATH=/usr/local/bin:/usr/bin:/bin docker-registry serve /etc/pfs-registry/config.yml
