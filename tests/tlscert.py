"""A self-signed certificate for 127.0.0.1, made with Debian's openssl: for the HTTPS tests
and the bench."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_cert(where: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files in `where`, valid for 127.0.0.1 for two days."""
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    return cert, key
