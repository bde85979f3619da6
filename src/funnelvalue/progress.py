"""Progress of long work, for a person watching a terminal.

Library code says which phase it is in and how far a counted one has got (``phase``,
``advance``); by default nobody listens, so cron, ``--json`` and Python callers see nothing.
The CLI listens with ``Bar`` on stderr, and only on a terminal: the bar appears once a run has
taken a few seconds and is gone when it ends, leaving the summary as the output.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Listener(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, steps: int) -> None: ...

    def close(self) -> None: ...


class Nobody:
    """The default listener: nothing is shown."""

    def phase(self, name: str, total: int | None) -> None:
        return None

    def advance(self, steps: int) -> None:
        return None

    def close(self) -> None:
        return None


_listener: Listener = Nobody()


def phase(name: str, total: int | None = None) -> None:
    """A new phase of the work (``total``: how many steps it counts, if it counts)."""
    _listener.phase(name, total)


def advance(steps: int = 1) -> None:
    """Steps of the current phase done (safe from any thread)."""
    _listener.advance(steps)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    global _listener  # noqa: PLW0603 (one run at a time reports to one place)
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous
        listener.close()


class Bar:
    """A rich progress bar on ``console``, shown only once the work has lasted ``delay``
    seconds (a quick run flashes nothing) and removed when it ends."""

    def __init__(self, console: Console, delay: float = 3.0) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(delay, self._show)
        self._timer.daemon = True
        self._shown = self._closed = False
        self._timer.start()

    def _show(self) -> None:
        with self._lock:
            if not self._closed:
                self._progress.start()
                self._shown = True

    def phase(self, name: str, total: int | None) -> None:
        with self._lock:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(name, total=total)

    def advance(self, steps: int) -> None:
        with self._lock:
            if self._task is not None:
                self._progress.advance(self._task, steps)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            if self._shown:
                self._progress.stop()
