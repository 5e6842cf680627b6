"""Named fault points for fault-injection tests (reliability catalogue H1).

`failpoint(name)` acts when the environment variable PFS_FAILPOINT names that point:
`name` ends the process on the spot, as kill -9 would (no cleanup, no flush of anything
still in memory); `name:raise` raises an unexpected exception there (a bug, as the
server's last-resort error handling sees one).
"""

from __future__ import annotations

import os


def failpoint(name: str) -> None:
    """Crash (or raise) here if PFS_FAILPOINT names this point."""
    point = os.environ.get("PFS_FAILPOINT")
    if point == name:
        os._exit(137)
    if point == f"{name}:raise":
        raise RuntimeError(f"failpoint {name}")
