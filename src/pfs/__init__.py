"""pfs: a git-like, versioned file system with dockerized MapReduce."""

from . import errors
from .client import Client

__all__ = ["Client", "errors"]
__version__ = "0.1.0"
