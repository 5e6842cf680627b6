"""Where a job's container runs: cut off from the host, from other jobs and from the world.

A container on Docker's default bridge reaches every host service listening on 0.0.0.0
or the bridge's address (a pfs API, PostgreSQL, dockerd's swarm ports), every other
container on that bridge, and the internet. A job is code a client sent, so its workers
run instead on one network of pfs's own (`pfs-jobs`, bridge `pfs-jobs0`):

- `internal`: Docker forwards nothing from it to any other interface, so no other network
  and no outside address is reachable;
- inter-container traffic off (`enable_icc=false`): a job cannot reach another job's
  worker, even on the same network;
- one host firewall rule: the host rejects every connection a container on that bridge
  opens to it (`INPUT -i pfs-jobs0 ... --ctstate NEW -j REJECT`). Docker leaves the host
  itself reachable from any bridge, internal or not; the rule closes that. pfs's own
  connections to its workers are opened by the host, so their replies still pass.

pfs adds the rule itself when it may (root, as dockerd itself runs); otherwise the operator
adds it once (the error says how) and starts pfs with `--job-firewall operator`. Workers
run as an unprivileged user (`--job-user`, default 65534:65534, "nobody"), with no
capabilities and no new privileges.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

from ...errors import BadRequest, Unavailable

log = logging.getLogger("pfs.jobs.runtime")

NETWORK = "pfs-jobs"
BRIDGE = "pfs-jobs0"  # Linux interface names have at most 15 characters
RULE = ["INPUT", "-i", BRIDGE, "-m", "conntrack", "--ctstate", "NEW", "-j", "REJECT"]
NETWORK_OPTIONS = {
    "com.docker.network.bridge.name": BRIDGE,
    "com.docker.network.bridge.enable_icc": "false",
    "com.docker.network.bridge.enable_ip_masquerade": "false",
}
FIREWALL_MODES = ("pfs", "operator")


@dataclass(frozen=True)
class Sandbox:
    """The operator's settings for job containers."""

    user: str = "65534:65534"  # uid:gid inside the container; "root" or "0" only if the operator says so
    firewall: str = "pfs"  # "pfs": pfs adds the host rule; "operator": it is there already

    def __post_init__(self) -> None:
        if self.firewall not in FIREWALL_MODES:
            raise BadRequest(f"job firewall must be one of {', '.join(FIREWALL_MODES)}, not {self.firewall!r}")
        if not self.user or any(c.isspace() for c in self.user):
            raise BadRequest(f"job user must be a user name or uid[:gid], not {self.user!r}")


class Isolation:
    """Makes sure the jobs network and the host rule exist before a worker starts."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._network_ok = False
        self._lock = threading.Lock()

    def ensure(self, api: Any) -> str:
        """The network workers join; Unavailable (503) if they could not be isolated."""
        with self._lock:
            if not self._network_ok:
                _ensure_network(api)
                self._network_ok = True
        if self.sandbox.firewall == "pfs":
            _ensure_rule()
        return NETWORK


def _ensure_network(api: Any) -> None:
    import docker.errors

    from .engine import docker_errors

    for attempt in range(2):
        with docker_errors("looking up the jobs network"):
            found = [n for n in api.networks(names=[NETWORK]) if n.get("Name") == NETWORK]
        if found:
            net = found[0]
            opts = net.get("Options") or {}
            if not net.get("Internal") or any(opts.get(k) != v for k, v in NETWORK_OPTIONS.items()):
                raise Unavailable(
                    f"Docker network {NETWORK!r} exists but is not the isolated network pfs makes "
                    f"(internal, no inter-container traffic, bridge {BRIDGE}): remove it (docker network rm "
                    f"{NETWORK}) and pfs makes it again"
                )
            return
        try:
            with docker_errors("creating the jobs network"):
                api.create_network(
                    NETWORK, driver="bridge", internal=True, options=dict(NETWORK_OPTIONS), labels={"pfs": "1"}
                )
            log.warning("created Docker network %s (bridge %s) for job workers", NETWORK, BRIDGE)
            return
        except Exception as exc:  # another pfs made it at the same moment: look again
            if attempt or not isinstance(exc.__cause__, docker.errors.APIError):
                raise


def rule_command() -> str:
    return "iptables -I " + " ".join(RULE)


def _ensure_rule() -> None:
    iptables = shutil.which("iptables", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    hint = (
        f"job workers must not reach this host: pfs needs root to add the firewall rule "
        f"`{rule_command()}`; add it yourself and start pfs with --job-firewall operator"
    )
    if iptables is None:
        raise Unavailable(f"iptables not found; {hint}")
    try:
        if subprocess.run([iptables, "-w", "-C", *RULE], capture_output=True, timeout=30).returncode == 0:
            return
        added = subprocess.run([iptables, "-w", "-I", *RULE], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"running iptables failed ({exc}); {hint}") from None
    if added.returncode != 0:
        why = added.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise Unavailable(f"{why[0] if why else 'iptables failed'}; {hint}")
    log.warning("added the host firewall rule: %s", rule_command())
