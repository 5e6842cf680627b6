"""Clone, pull and push between pfs instances: only the objects the receiver lacks travel.

Objects are immutable and named by their hash, so a transfer is a walk of what the
receiver does not have yet, like `git fetch`. Three parties, one module each:

- `sender` (the source server) answers `ancestors` (its commit graph, a page at a time),
  `walk` (the objects each commit adds to its first parent, children before parents) and
  `fetch` (those objects, framed);
- `receiver` (the destination server) answers `missing` (which of these it lacks), takes
  `objects` (each verified against its name and its kind's size bound, made durable, then
  each commit checked like a local write: complete, trees and names well-formed, sizes and
  file hashes true, within the server's limits; then indexed) and moves a branch with
  `ref` (a compare-and-swap, fast-forward only unless forced);
- `driver`: `transfer` (run by `pfs clone/pull/push` or any Python program) talks to both
  over plain HTTP.

`wire` holds the format all three share. The servers import `sender` and `receiver`
only; the driver's names below load on first use, so a server never loads the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .driver import BranchResult, TransferReport, clone, parse_refspec, pull, push, transfer

__all__ = ["BranchResult", "TransferReport", "clone", "parse_refspec", "pull", "push", "transfer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".driver", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
