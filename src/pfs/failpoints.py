"""Named crash points for fault-injection tests (reliability catalogue H1).

`failpoint(name)` ends the process on the spot, as kill -9 would (no cleanup, no flush of
anything still in memory), when the environment variable PFS_FAILPOINT names that point.
"""

from __future__ import annotations

import os


def failpoint(name: str) -> None:
    """Crash here if PFS_FAILPOINT names this point."""
    if os.environ.get("PFS_FAILPOINT") == name:
        os._exit(137)
