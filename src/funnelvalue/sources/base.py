"""The Source contract and the registry the pipeline picks from by name."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TypeVar

import pandas as pd

from funnelvalue.errors import ConfigError, SourceError
from funnelvalue.mapping import Mapping
from funnelvalue.retrying import Retryable, call_with_retries
from funnelvalue.settings import Settings

T = TypeVar("T")


class Source(Protocol):
    """A CRM or export that yields lead stage changes."""

    @property
    def name(self) -> str:
        """Stable identity (e.g. ``csv:examples/crm_leads.csv``): the watermark's key."""
        ...

    @property
    def warnings(self) -> list[str]:
        """Things the operator should know that did not stop the read (e.g. Latin-1 input)."""
        ...

    def fetch(self, since: datetime | None) -> pd.DataFrame:
        """Stage changes since ``since`` (None: everything), as a normalised lead frame with a
        ``source_row`` column that points the user back at the record.

        A source that can read incrementally has a ``high_water`` attribute, set after
        fetching to the newest modification time it saw (in the CRM's own clock): it becomes
        the next run's watermark (None: the newest stage change read). Sources without the
        attribute (a CSV export) are always read whole and given ``since=None``.
        """
        ...


SourceFactory = Callable[[Settings, Mapping], Source]


def with_retries(crm: str, what: str, call: Callable[[], T]) -> T:
    """One call to a CRM under the shared retry policy (``call`` raises Retryable for what is
    worth another try); still failing after that: a transient SourceError (exit 3)."""
    try:
        return call_with_retries(f"{crm} {what}", call)
    except Retryable as exc:
        raise SourceError(
            f"{crm} is unavailable after retries ({what}: {exc}); nothing was recorded, the "
            "next run reads the same records again",
            transient=True,
        ) from exc


def _csv(settings: Settings, mapping: Mapping) -> Source:
    from funnelvalue.sources.csv_file import CsvSource

    return CsvSource.from_settings(settings, mapping)


def _hubspot(settings: Settings, mapping: Mapping) -> Source:
    from funnelvalue.sources.hubspot import HubSpotSource

    return HubSpotSource.from_settings(settings, mapping)


def _salesforce(settings: Settings, mapping: Mapping) -> Source:
    from funnelvalue.sources.salesforce import SalesforceSource

    return SalesforceSource.from_settings(settings, mapping)


def _sql(settings: Settings, mapping: Mapping) -> Source:
    from funnelvalue.sources.sql import SqlSource

    return SqlSource.from_settings(settings, mapping)


SOURCES: dict[str, SourceFactory] = {
    "csv": _csv,
    "hubspot": _hubspot,
    "salesforce": _salesforce,
    "sql": _sql,
}


def make_source(settings: Settings, mapping: Mapping) -> Source:
    if settings.source not in SOURCES:
        raise ConfigError(
            f"unknown source '{settings.source}' (available: {', '.join(sorted(SOURCES))})"
        )
    return SOURCES[settings.source](settings, mapping)
