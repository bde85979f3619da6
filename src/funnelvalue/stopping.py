"""SIGINT and SIGTERM stop a run at a safe point, never between Google's answer and the ledger.

The CLI installs the handlers (``handling_signals``); library code only marks the stretches
where a stop must wait (``deferred``: sending and recording) and calls ``check`` between
requests. Outside those stretches a signal stops the run at once (nothing is in flight);
inside, it is remembered and the run stops after the request in flight, with every outcome
Google returned recorded. A second signal while waiting stops at once.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from funnelvalue.errors import EXIT_SIGINT, EXIT_SIGTERM, Interrupted

# Module state on purpose: a signal handler has nowhere else to leave word.
# ruff: noqa: PLW0603

_EXIT_CODES = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}
_requested: Interrupted | None = None
_deferring = 0


def _interrupted(signum: int) -> Interrupted:
    which = signal.Signals(signum)
    return Interrupted(which.name, _EXIT_CODES.get(which, EXIT_SIGTERM))


def _handle(signum: int, frame: FrameType | None) -> None:
    global _requested
    if _deferring and _requested is None:
        _requested = _interrupted(signum)  # stop after the request in flight
        return
    raise _interrupted(signum)


def check() -> None:
    """Raise Interrupted if a signal asked to stop (call it between requests)."""
    global _requested
    if _requested is not None:
        stop, _requested = _requested, None
        raise stop


def requested() -> bool:
    return _requested is not None


@contextmanager
def deferred() -> Iterator[None]:
    """A stretch that a signal must not cut: it is remembered and ``check`` raises it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


@contextmanager
def handling_signals() -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers for the duration of a command (main thread)."""
    global _requested
    previous = {signum: signal.signal(signum, _handle) for signum in _EXIT_CODES}
    _requested = None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _requested = None
