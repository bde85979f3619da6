"""The Source contract: what a CRM or an export gives the pipeline, and how it retries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Protocol, TypeVar

import pandas as pd

from funnelvalue.errors import SourceError
from funnelvalue.retrying import Retryable, call_with_retries

T = TypeVar("T")


@dataclass(frozen=True)
class Fetched:
    """One read of a source."""

    leads: pd.DataFrame  # normalised lead frame (leads.normalise), with ``source_row``
    # The newest modification time seen, in the CRM's own clock: the next run's watermark
    # (None: the newest stage change read is used; a CSV export has none).
    high_water: pd.Timestamp | None = None
    warnings: tuple[str, ...] = ()  # worth telling the operator; did not stop the read


class Source(Protocol):
    """A CRM or export that yields lead stage changes."""

    # True: ``fetch(since)`` reads only what changed since then, and the pipeline keeps a
    # watermark for it. False (a CSV export): always read whole, given ``since=None``.
    incremental: ClassVar[bool]

    @property
    def name(self) -> str:
        """Stable identity (e.g. ``csv:examples/crm_leads.csv``): the watermark's key."""
        ...

    def fetch(self, since: datetime | None) -> Fetched:
        """Stage changes since ``since`` (None: everything); raises SourceError."""
        ...


class Reading:
    """The bookkeeping of one read, for sources that note warnings and the newest change as
    they go: ``fetch`` starts both fresh, runs ``_leads`` and hands them over as one value."""

    _warnings: list[str]
    _high_water: pd.Timestamp | None

    def _leads(self, since: datetime | None) -> pd.DataFrame:
        raise NotImplementedError

    def fetch(self, since: datetime | None = None) -> Fetched:
        self._warnings, self._high_water = [], None
        leads = self._leads(since)
        return Fetched(leads, self._high_water, tuple(self._warnings))


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
