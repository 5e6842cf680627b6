"""pfs: a git-like, versioned file system with dockerized MapReduce.

`pfs.Client` is imported on first use: `import pfs` (and every `pfs.<module>` import, the
server's included) then costs no HTTP client library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Client", "errors"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'pfs' has no attribute {name!r}")
