"""One retry policy for every remote call: jittered exponential backoff, honouring Retry-After.

CRMs and Google answer "slow down" (429) and "try again" (5xx, dropped connections) in their
own ways; each caller says which of its errors are transient, this module decides how long to
wait and when to give up. ``sleep`` is looked up at call time so tests can record the waits
instead of sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_WAIT = 1.0  # seconds; doubles per attempt (with jitter) up to 30x
MAX_ATTEMPTS = 6
MAX_SECONDS = 300.0
MAX_RETRY_AFTER = 120.0  # a server asking for a longer wait is treated as an outage: give up


def sleep(seconds: float) -> None:
    time.sleep(seconds)


class Retryable(Exception):
    """Raised by a caller for a transient failure; ``retry_after`` is the server's own hint."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _hint(error: BaseException | None) -> float | None:
    hint = getattr(error, "retry_after", None)
    return float(hint) if isinstance(hint, int | float) and hint >= 0 else None


def _worth_waiting(error: BaseException) -> bool:
    """A server that asks for more than MAX_RETRY_AFTER (a daily limit, maintenance) will not
    answer within this run: stop now and let the next run try, instead of sleeping on it."""
    hint = _hint(error)
    return hint is None or hint <= MAX_RETRY_AFTER


def _wait(state: RetryCallState) -> float:
    hint = _hint(state.outcome.exception() if state.outcome else None)
    if hint is not None:
        return hint
    backoff = wait_random_exponential(multiplier=FIRST_WAIT, max=30 * FIRST_WAIT)
    return float(backoff(state))


def call_with_retries(
    what: str,
    call: Callable[[], T],
    is_transient: Callable[[BaseException], bool] = lambda exc: isinstance(exc, Retryable),
) -> T:
    """Run ``call``; retry transient failures; re-raise the last error when giving up."""

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("%s: attempt %d failed (%s); retrying", what, state.attempt_number, error)

    retrying: Retrying = Retrying(
        retry=retry_if_exception(lambda exc: is_transient(exc) and _worth_waiting(exc)),
        wait=_wait,
        stop=stop_after_attempt(MAX_ATTEMPTS) | stop_after_delay(MAX_SECONDS),
        before_sleep=before_sleep,
        sleep=lambda seconds: sleep(seconds),  # noqa: PLW0108 (late-bound for tests)
        reraise=True,
    )
    result: Any = retrying(call)
    return result  # type: ignore[no-any-return]
