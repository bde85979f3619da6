"""What every API destination does the same way: batches, retries, and keeping what went through.

Both Google APIs take at most 2,000 conversions a request. A batch is sent with the shared retry
policy (funnelvalue.retrying); when the destination stops part-way (quota, outage, a refusal),
the outcomes of the batches that did go through travel on the DestinationError so the ledger
records them instead of sending them again. Identifiers arrive already normalised and hashed
(conversions.py), so no destination ever sees a raw email or phone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import pandas as pd

from funnelvalue import progress, stopping
from funnelvalue.errors import DestinationError, Interrupted
from funnelvalue.retrying import call_with_retries
from funnelvalue.vocabulary import OUTCOME_COLUMNS

T = TypeVar("T")

BATCH_SIZE = 2000  # UploadClickConversions and IngestEvents both cap a request here
CALL_TIMEOUT = 120.0  # seconds; neither client sets one of its own
# ABORTED (a concurrency conflict) is safe to retry too: order and transaction ids make a
# replayed request a duplicate at Google, never a second conversion.
TRANSIENT_GRPC = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "ABORTED"}


def batches(conversions: pd.DataFrame, size: int = BATCH_SIZE) -> Iterator[pd.DataFrame]:
    for start in range(0, len(conversions), size):
        yield conversions.iloc[start : start + size]


def send_in_batches(
    parts: Iterable[pd.DataFrame],
    send: Callable[[pd.DataFrame], pd.DataFrame],
    first: pd.DataFrame | None = None,
    in_flight: int = 1,
) -> pd.DataFrame:
    """``send`` each batch (it returns the batch's outcomes), up to ``in_flight`` at once, so
    network waits overlap. Outcomes are kept per batch as each returns: their order does not
    matter (the ledger records by key). On a stop (an error, or a signal noticed before a
    request starts) no new request starts, the ones in flight are waited for and kept, and
    what went through rides on the error; the rest stays pending. ``first``: outcomes decided
    without sending (they ride along too)."""
    done: list[pd.DataFrame] = [] if first is None or first.empty else [first]
    stop: BaseException | None = None
    batches_left = iter(parts)
    with ThreadPoolExecutor(max_workers=max(1, in_flight), thread_name_prefix="upload") as pool:
        flying: set[Future[pd.DataFrame]] = set()
        while True:
            while stop is None and len(flying) < max(1, in_flight):
                try:
                    stopping.check()  # a signal stops here, between requests, never inside one
                except Interrupted as exc:
                    stop = exc
                    break
                batch = next(batches_left, None)
                if batch is None:
                    break
                flying.add(pool.submit(send, batch))
            if not flying:
                break
            finished, flying = wait(flying, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    done.append(future.result())
                    progress.advance(len(done[-1]))
                except BaseException as exc:  # the first is raised, once nothing is in flight
                    stop = stop or exc
    if stop is not None:
        if isinstance(stop, DestinationError | Interrupted):
            stop.outcomes = pd.concat(done, ignore_index=True) if done else None
        raise stop
    if not done:
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    return pd.concat(done, ignore_index=True)


def call_rpc(
    what: str,
    call: Callable[[], T],
    is_transient: Callable[[BaseException], bool],
    translate: Callable[[BaseException], Exception],
) -> T:
    """One API call: transient failures retried by the shared policy, then every failure
    turned into our own error type so the pipeline decides from the type."""
    try:
        return call_with_retries(what, call, is_transient)
    except Exception as exc:
        raise translate(exc) from exc


def grpc_code(exc: BaseException) -> str:
    """The gRPC status name of a failed call (api_core exceptions and GoogleAdsException)."""
    error: Any = getattr(exc, "error", None)  # GoogleAdsException wraps the grpc.RpcError
    code = error.code() if error is not None and hasattr(error, "code") else None
    if code is None and getattr(exc, "grpc_status_code", None) is not None:
        code = exc.grpc_status_code  # type: ignore[attr-defined]
    return str(getattr(code, "name", code or ""))
