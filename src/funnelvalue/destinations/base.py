"""The Destination contract, the outcome frame it returns, and the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pandas as pd

from funnelvalue.errors import ConfigError
from funnelvalue.mapping import Mapping
from funnelvalue.settings import Settings

OUTCOME_COLUMNS = ["key", "status", "error_code", "message", "retry_at"]
# "submitted": accepted by an asynchronous destination, which adds a ``request_id`` column;
# the outcome arrives later through the destination's ``poll(request_ids)``.
STATUSES = ("uploaded", "duplicate", "rejected", "retry_after", "failed", "submitted")


class Destination(Protocol):
    """Sends conversions; batching, retries and error mapping live inside.

    A destination may also define ``prepare(conversions)``, called before anything is marked
    pending, to check its own configuration (the Google Ads one resolves conversion actions),
    and, if it is asynchronous, ``poll(request_ids)`` returning a frame of request_id, state
    (success | partial | failed | processing), error_counts and message.
    """

    @property
    def name(self) -> str:
        """Where the conversions went (e.g. ``csv:out/import.csv``), for the ledger and summary."""
        ...

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        """One outcome row per input row (``OUTCOME_COLUMNS``); raises DestinationError when the
        destination is unavailable as a whole, leaving the rows pending."""
        ...

    def close(self) -> None: ...


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

    return ImportFile.for_run(settings.output, mapping.timezone, run_id)


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
