"""Protected branches: a branch matching a rule changes only by merge from another branch,
as lakeFS and git hosts do it. Direct writes, deletes, commits, reverts, pushes (fast-forward
or forced) and deleting the branch are refused with BranchProtected (403); a merge into it,
discarding its (already unreachable) staged writes and creating it where it is missing are
allowed.

Rules are read from the database at most once a second per repository and process (a check
runs on every write): a rule added through another node holds here within that second.
"""

from __future__ import annotations

import fnmatch
import threading
import time

from ..errors import BranchProtected
from ..paths import check_branch_pattern
from ..storage.identity import IdentityStore

RULES_TTL = 1.0  # seconds a repository's rules are kept in memory


class BranchRules:
    """The protected-branch rules of one repository (by id: ids are never reused)."""

    def __init__(self, store: IdentityStore, repo_id: int) -> None:
        self.store = store
        self.repo_id = repo_id
        self._rules: list[str] = []
        self._read_at = -RULES_TTL
        self._lock = threading.Lock()

    def patterns(self) -> list[str]:
        with self._lock:
            if time.monotonic() - self._read_at >= RULES_TTL:
                self._rules = self.store.protected(self.repo_id)
                self._read_at = time.monotonic()
            return self._rules

    def matching(self, branch: str) -> str | None:
        """The first rule that protects `branch`, or None."""
        return next((p for p in self.patterns() if fnmatch.fnmatchcase(branch, p)), None)

    def check(self, branch: str, what: str) -> None:
        """Refuse `what` (a change other than a merge) to a protected branch."""
        rule = self.matching(branch)
        if rule is not None:
            shown = "" if rule == branch else f" (rule {rule!r})"
            raise BranchProtected(
                f"branch {branch!r} is protected{shown}: it changes only by merge from another branch, not by {what}"
            )

    def add(self, pattern: str) -> bool:
        added = self.store.protect(self.repo_id, check_branch_pattern(pattern))
        self._forget()
        return added

    def remove(self, pattern: str) -> bool:
        removed = self.store.unprotect(self.repo_id, check_branch_pattern(pattern))
        self._forget()
        return removed

    def _forget(self) -> None:
        with self._lock:
            self._read_at = -RULES_TTL
