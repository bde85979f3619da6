"""One error tree for the whole tool.

The CLI maps each branch to an exit code, and the pipeline decides "retry or stop" from the
type alone (``transient``), never from message text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FunnelvalueError(Exception):
    """Root of every error the tool raises on purpose; its message is meant for the user."""

    exit_code = 2
    transient = False


class ConfigError(FunnelvalueError):
    """Settings, mapping file or command line are wrong: nothing was sent (exit 2)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class SourceError(FunnelvalueError):
    """The CRM export or API could not be read.

    Permanent (a missing column, an unreadable file) is a configuration problem (exit 2);
    transient (network, rate limit after retries) means "try again later" (exit 3).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.exit_code = 3 if transient else 2


class DestinationError(FunnelvalueError):
    """The destination refused or could not be reached; the unsent rows stay pending.

    ``outcomes`` holds the outcomes of the batches that did go through before the stop, so
    they are recorded rather than sent again.
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient
        self.exit_code = 3 if transient else 2
        self.outcomes: Any = None


class LedgerError(FunnelvalueError):
    """The ledger database cannot be opened or migrated (exit 2: fix the URL or permissions)."""
