"""The one retry policy: backoff, the server's own wait, and when to give up."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from funnelvalue.retrying import MAX_ATTEMPTS, MAX_RETRY_AFTER, Retryable, call_with_retries


def failing(*errors: Exception) -> tuple[Callable[[], str], list[int]]:
    """A call that raises ``errors`` in turn, then answers "ok"; and how often it was called."""
    pending, calls = list(errors), [0]

    def call() -> str:
        calls[0] += 1
        if pending:
            raise pending.pop(0)
        return "ok"

    return call, calls


def test_the_servers_wait_is_honoured(waits: list[float]) -> None:
    call, calls = failing(Retryable("429", retry_after=3), Retryable("429", retry_after=0))
    assert call_with_retries("x", call) == "ok"
    assert waits == [3.0, 0.0]
    assert calls == [3]


def test_a_wait_longer_than_the_cap_is_an_outage_not_a_nap(waits: list[float]) -> None:
    call, calls = failing(Retryable("daily limit", retry_after=MAX_RETRY_AFTER + 1))
    with pytest.raises(Retryable, match="daily limit"):
        call_with_retries("x", call)
    assert waits == []
    assert calls == [1]
    call, _ = failing(Retryable("429", retry_after=MAX_RETRY_AFTER))
    assert call_with_retries("x", call) == "ok"  # the cap itself is still waited for
    assert waits == [MAX_RETRY_AFTER]


def test_backoff_grows_and_gives_up_after_the_attempts(waits: list[float]) -> None:
    call, calls = failing(*[Retryable("503")] * MAX_ATTEMPTS)
    with pytest.raises(Retryable, match="503"):
        call_with_retries("x", call)
    assert calls == [MAX_ATTEMPTS]
    assert len(waits) == MAX_ATTEMPTS - 1
    assert all(0 <= wait <= 30 for wait in waits)


def test_what_is_not_transient_is_never_retried(waits: list[float]) -> None:
    call, calls = failing(ValueError("bad request"))
    with pytest.raises(ValueError, match="bad request"):
        call_with_retries("x", call)
    assert calls == [1]
    assert waits == []
