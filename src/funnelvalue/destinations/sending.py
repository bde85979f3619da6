"""What every API destination does the same way: batches, retries, and keeping what went through.

Both Google APIs take at most 2,000 conversions a request. A batch is sent with the shared retry
policy (funnelvalue.retrying); when the destination stops part-way (quota, outage, a refusal),
the outcomes of the batches that did go through travel on the DestinationError so the ledger
records them instead of sending them again. Identifiers arrive already normalised and hashed
(conversions.py), so no destination ever sees a raw email or phone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import pandas as pd

from funnelvalue import stopping
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
) -> pd.DataFrame:
    """``send`` each batch (it returns the batch's outcomes); on a stop (an error, or a signal
    noticed between requests), what went through so far rides on the error and the rest stays
    pending. ``first``: outcomes decided without sending (they ride along too)."""
    done: list[pd.DataFrame] = [] if first is None or first.empty else [first]
    for batch in parts:
        try:
            stopping.check()  # a signal stops here, between requests, never inside one
            done.append(send(batch))
        except (DestinationError, Interrupted) as exc:
            exc.outcomes = pd.concat(done, ignore_index=True) if done else None
            raise
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
