"""Destinations by the name the settings use; Google's SDKs load only when one is chosen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from funnelvalue.destinations.base import Destination
from funnelvalue.errors import ConfigError
from funnelvalue.mapping import Mapping
from funnelvalue.settings import Settings


@dataclass(frozen=True)
class Context:
    """What a destination is made for: the account, the run, and the run's one clock."""

    settings: Settings
    mapping: Mapping
    customer_id: str
    now: pd.Timestamp
    run_id: int = 0  # 0: a preview or a check, recorded under no run


DestinationFactory = Callable[[Context], Destination]


def _csv(context: Context) -> Destination:
    from funnelvalue.destinations.csv_import import ImportFile

    settings = context.settings
    return ImportFile.for_run(
        settings.output,
        context.mapping.timezone,
        context.run_id,
        settings.import_window_days,
        now=context.now,
        # the Data Manager's name -> id list, read backwards: a mapping that gives ids
        action_names={ident: name for name, ident in settings.data_manager.action_ids.items()},
    )


def _google_ads(context: Context) -> Destination:
    from funnelvalue.destinations.google_ads import GoogleAdsUpload

    settings = context.settings
    return GoogleAdsUpload.from_settings(
        settings.google_ads_config,
        context.customer_id,
        context.run_id,
        context.now,
        in_flight=settings.requests_in_flight,
    )


def _data_manager(context: Context) -> Destination:
    from funnelvalue.destinations.data_manager import DataManagerUpload

    settings = context.settings
    return DataManagerUpload.from_settings(
        settings.data_manager, context.customer_id, in_flight=settings.requests_in_flight
    )


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


def make_destination(context: Context, name: str | None = None) -> Destination:
    """The destination ``name`` (default: the one the settings choose)."""
    chosen = name or context.settings.destination
    check_destination(chosen)
    return DESTINATIONS[chosen](context)
