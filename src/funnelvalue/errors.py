"""One error tree for the whole tool, and the exit codes it maps to.

::

    FunnelvalueError                 transient? exit 3 : exit 2
    ├── ConfigError                  settings, mapping, command line (never transient)
    ├── SourceError                  the CRM: unreadable input (2) or unreachable (3)
    ├── DestinationError             Google: a refusal (2) or an outage / quota (3)
    ├── LedgerError                  the ledger: unusable (2) or unreachable, locked, full (3)
    ├── LockedError                  another run holds this account's lock (75)
    └── Interrupted                  SIGINT / SIGTERM, after the request in flight (130 / 143)

``transient`` is the one bit the rest derives from: True means "the same command, unchanged,
may succeed later" (an outage, a rate limit, a PostgreSQL server that is down) and exits 3
so a scheduler simply runs it again; False means "someone must change something" and exits 2.
The pipeline decides from the type and this bit, never from message text. Anything else
that escapes is a bug: the CLI writes its traceback to a file and exits EXIT_INTERNAL, never
0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from funnelvalue.redact import scrub

# One meaning each; the README's table, scheduler/run.sh and the systemd unit follow these.
EXIT_OK = 0  # everything that could be sent was sent
EXIT_INVALID_ROWS = 1  # sent, but some rows hold invalid data someone must fix in the CRM
EXIT_CONFIG = 2  # nothing sent: configuration, usage or unusable input
EXIT_TRY_LATER = 3  # CRM, destination or ledger unavailable, or quota: rows stay pending
EXIT_INTERNAL = 70  # a bug (sysexits EX_SOFTWARE): traceback in a log file
EXIT_LOCKED = 75  # another run holds the lock (sysexits EX_TEMPFAIL): this one did nothing
EXIT_SIGINT = 130  # stopped by Ctrl-C after recording what Google acknowledged
EXIT_SIGTERM = 143  # stopped by SIGTERM (systemd, Kubernetes) likewise

# What each code means, in the words the run summary and scheduler/run.sh use.
EXIT_MEANING = {
    EXIT_OK: "all done: everything that could be sent was sent",
    EXIT_INVALID_ROWS: "sent; some rows hold invalid data to fix in the CRM",
    EXIT_CONFIG: "someone must change something: configuration, input or the account",
    EXIT_TRY_LATER: "try later: rows stay pending for the next run",
    EXIT_INTERNAL: "internal error; the traceback is in the crash log",
    EXIT_LOCKED: "skipped: another run holds the lock; nothing done",
    EXIT_SIGINT: "stopped by Ctrl-C; what Google acknowledged is recorded",
    EXIT_SIGTERM: "stopped by SIGTERM; what Google acknowledged is recorded",
}


class FunnelvalueError(Exception):
    """Root of every error the tool raises on purpose; its message is meant for the user.

    ``outcomes``: what a destination reported for the batches that went through before the
    stop (a DestinationError or a signal part-way through), so they are recorded, not resent.
    """

    transient = False
    outcomes: Any = None

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient

    def __str__(self) -> str:
        """The message, scrubbed: an error body a server echoed may hold a token or an
        address, and messages are printed, logged and stored in the ledger."""
        return scrub(super().__str__())

    @property
    def exit_code(self) -> int:
        return EXIT_TRY_LATER if self.transient else EXIT_CONFIG


class ConfigError(FunnelvalueError):
    """Settings, mapping file or command line are wrong: nothing was sent (exit 2)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message, transient=False)
        self.problems = list(problems)

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        return head + "\n" + "\n".join(f"  - {scrub(p)}" for p in self.problems)


class SourceError(FunnelvalueError):
    """The CRM export or API could not be read: a missing column or an unreadable file
    (permanent), or a network failure or rate limit that outlasted the retries (transient)."""


class DestinationError(FunnelvalueError):
    """The destination refused or could not be reached; the unsent rows stay pending.

    Transient unless said otherwise (an outage, the quota); a refusal of the credentials or
    of the request is permanent. ``outcomes`` holds the outcomes of the batches that did go
    through before the stop, so they are recorded rather than sent again.
    """

    transient = True

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message, transient=transient)


class LedgerError(FunnelvalueError):
    """The ledger cannot be used: a wrong URL, permissions or a damaged file (permanent), or
    a database that is unreachable, locked or full right now (transient)."""


class LockedError(FunnelvalueError):
    """Another run holds this account's lock on the ledger: this run did nothing (exit 75)."""

    transient = True

    @property
    def exit_code(self) -> int:
        return EXIT_LOCKED


class Interrupted(FunnelvalueError):
    """A signal asked the run to stop; raised between requests, never in the middle of one."""

    transient = True

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(
            f"stopped by {signal_name}: what Google acknowledged is recorded; "
            "the next run sends the rest"
        )
        self.signal_name = signal_name
        self._exit_code = exit_code

    @property
    def exit_code(self) -> int:
        return self._exit_code
