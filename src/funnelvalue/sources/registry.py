"""Sources by the name the settings use; each CRM's SDK loads only when it is chosen."""

from __future__ import annotations

from collections.abc import Callable

from funnelvalue.errors import ConfigError
from funnelvalue.mapping import Mapping
from funnelvalue.settings import Settings
from funnelvalue.sources.base import Source

SourceFactory = Callable[[Settings, Mapping], Source]


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
