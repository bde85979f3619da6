"""The Destination contract, the outcome frame it returns, and the registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

import pandas as pd

from funnelvalue.errors import ConfigError
from funnelvalue.mapping import Mapping
from funnelvalue.settings import Settings

OUTCOME_COLUMNS = ["key", "status", "error_code", "message", "retry_at"]
# "submitted": accepted by an asynchronous destination, which adds a ``request_id`` column;
# the outcome arrives later through the destination's ``poll(request_ids)``. "written": in an
# import file, which Google has not necessarily fetched yet.
STATUSES = ("uploaded", "duplicate", "rejected", "retry_after", "failed", "submitted", "written")


class Destination(Protocol):
    """Sends conversions; batching, retries and error mapping live inside.

    Optional abilities are the protocols below, checked with ``isinstance``.
    """

    @property
    def name(self) -> str:
        """Where the conversions went (e.g. ``csv:out/import.csv``), for the ledger and summary."""
        ...

    def action_identities(self, labels: Iterable[str], *, strict: bool) -> dict[str, str]:
        """The mapping's action labels -> the action as this destination's Google counts it
        (part of every idempotency key). ``strict``: raise ConfigError for a label that cannot
        be used, before anything is marked pending; otherwise leave unknown labels out."""
        ...

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        """One outcome row per input row (``OUTCOME_COLUMNS``); raises DestinationError when the
        destination is unavailable as a whole, leaving the rows pending."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Validates(Protocol):
    """Asks Google for its verdict per row without recording anything (preview --validate-only)."""

    def validate(self, conversions: pd.DataFrame) -> pd.DataFrame: ...


@runtime_checkable
class Restates(Protocol):
    """Sends new values of conversions already sent as adjustments (never re-uploads)."""

    def restate(self, changed: pd.DataFrame) -> pd.DataFrame: ...


@runtime_checkable
class Asynchronous(Protocol):
    """Outcomes arrive later: ``poll`` returns request_id, state (success | partial | failed |
    processing), error_counts and message per request."""

    def poll(self, request_ids: Iterable[str]) -> pd.DataFrame: ...


@runtime_checkable
class PublishesWindow(Protocol):
    """Keeps a file of everything written lately (the import file a scheduled import fetches);
    the pipeline hands it the ledger's rows of the last ``window_days`` after each run."""

    window_days: int

    def publish(self, recent: pd.DataFrame) -> None: ...


def outcomes(
    keys: pd.Series,
    status: str,
    message: str | None = None,
    error_code: str | None = None,
    retry_at: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The same outcome for every key (all written, all uploaded, all too young...)."""
    count = len(keys)
    return pd.DataFrame(
        {
            "key": keys.to_numpy(),
            "status": status,
            "error_code": pd.Series([error_code] * count, dtype="string"),
            "message": pd.Series([message] * count, dtype="string"),
            "retry_at": pd.Series([retry_at] * count, dtype="datetime64[us, UTC]"),
        }
    )


# (settings, mapping, run id, customer id) -> destination; heavy SDKs load only when chosen.
DestinationFactory = Callable[[Settings, Mapping, int, str], Destination]


def _csv(settings: Settings, mapping: Mapping, run_id: int, customer_id: str) -> Destination:
    from funnelvalue.destinations.csv_import import ImportFile

    return ImportFile.for_run(
        settings.output, mapping.timezone, run_id, settings.import_window_days
    )


def _google_ads(settings: Settings, mapping: Mapping, run_id: int, customer_id: str) -> Destination:
    from funnelvalue.destinations.google_ads import GoogleAdsUpload

    return GoogleAdsUpload.from_settings(settings.google_ads_config, customer_id, run_id)


def _data_manager(
    settings: Settings, mapping: Mapping, run_id: int, customer_id: str
) -> Destination:
    from funnelvalue.destinations.data_manager import DataManagerUpload

    return DataManagerUpload.from_settings(settings.data_manager, customer_id)


DESTINATIONS: dict[str, DestinationFactory] = {
    "csv": _csv,
    "google-ads": _google_ads,
    "data-manager": _data_manager,
}


def check_destination(name: str) -> None:
    if name not in DESTINATIONS:
        raise ConfigError(
            f"unknown destination '{name}' (available: {', '.join(sorted(DESTINATIONS))})"
        )


def make_destination(
    settings: Settings, mapping: Mapping, run_id: int, customer_id: str
) -> Destination:
    check_destination(settings.destination)
    return DESTINATIONS[settings.destination](settings, mapping, run_id, customer_id)
