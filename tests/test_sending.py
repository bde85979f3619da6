"""Requests in flight at once (destinations/sending.py): overlap, order, and stops."""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import pytest

from funnelvalue import stopping
from funnelvalue.destinations.base import outcomes
from funnelvalue.destinations.sending import send_in_batches
from funnelvalue.errors import DestinationError, Interrupted


def parts(count: int, size: int = 3) -> list[pd.DataFrame]:
    return [pd.DataFrame({"key": [f"b{n}-{i}" for i in range(size)]}) for n in range(count)]


class Recorder:
    """A send that takes ``seconds``, notes how many run at once, and fails on ``fail``."""

    def __init__(self, seconds: float = 0.05, fail: int | None = None) -> None:
        self.seconds, self.fail = seconds, fail
        self.started: list[int] = []
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        number = int(batch["key"].iloc[0].split("-")[0][1:])
        with self.lock:
            self.started.append(number)
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.seconds * (3 if number == 0 else 1))  # the first is the slowest
            if number == self.fail:
                raise DestinationError("quota", transient=True)
            return outcomes(batch["key"], "uploaded")
        finally:
            with self.lock:
                self.running -= 1


def test_requests_overlap_up_to_the_bound_and_every_outcome_is_kept() -> None:
    send = Recorder()
    result = send_in_batches(parts(10), send, in_flight=4)
    assert send.most == 4  # overlapping, never more than the bound
    assert sorted(result["key"]) == sorted(k for p in parts(10) for k in p["key"])
    assert result["key"].is_unique
    assert result["key"].iloc[0] != "b0-0"  # returned as they came back: the slow one last


def test_one_at_a_time_when_asked() -> None:
    send = Recorder(seconds=0.01)
    send_in_batches(parts(5), send, in_flight=1)
    assert send.most == 1
    assert send.started == [0, 1, 2, 3, 4]


def test_a_stop_waits_for_the_requests_in_flight_and_keeps_them() -> None:
    """Batch 2 hits the quota: nothing new starts, the ones in flight finish and are kept."""
    send = Recorder(fail=2)
    with pytest.raises(DestinationError) as caught:
        send_in_batches(parts(20), send, in_flight=4)
    kept = caught.value.outcomes
    assert kept is not None
    started = set(send.started)
    assert len(started) < 20  # the rest stays pending
    assert set(kept["key"].str.split("-").str[0]) == {f"b{n}" for n in started - {2}}
    assert send.running == 0  # nothing left in flight when the error is raised


def test_a_signal_stops_after_the_requests_in_flight() -> None:
    send = Recorder()

    def signalling(batch: pd.DataFrame) -> pd.DataFrame:
        if batch["key"].iloc[0] == "b1-0":
            os.kill(os.getpid(), signal.SIGTERM)
        return send(batch)

    with stopping.handling_signals(), stopping.deferred(), pytest.raises(Interrupted) as caught:
        send_in_batches(parts(30), signalling, in_flight=3)
    kept = caught.value.outcomes
    assert caught.value.exit_code == 143
    assert kept is not None
    assert len(set(send.started)) < 30
    assert set(kept["key"].str.split("-").str[0]) == {f"b{n}" for n in set(send.started)}


def test_nothing_to_send_is_an_empty_frame() -> None:
    result = send_in_batches([], Recorder(), in_flight=4)
    assert result.empty
    assert list(result.columns) == ["key", "status", "error_code", "message", "retry_at"]
