"""How times are written for Google (the API and the import file) and for people reading the
account's own clock: one format, built column-wise."""

from __future__ import annotations

import numpy as np
import pandas as pd


def format_conversion_time(times: pd.Series, timezone: str) -> pd.Series:
    """'2026-11-02 14:30:00+01:00': Google's format, in the account's zone, offset always shown.

    Built from the naive local time and the offset separately: strftime's %z is formatted
    row by row in pandas, the naive part is not.
    """
    local = times.dt.tz_convert(timezone)
    wall = local.dt.tz_localize(None)
    offset_minutes = ((wall - times.dt.tz_localize(None)).dt.total_seconds() // 60).astype("int64")
    codes, distinct = pd.factorize(offset_minutes)
    suffix = np.array(
        [f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}" for m in distinct],
        dtype=object,
    )
    text = wall.dt.strftime("%Y-%m-%d %H:%M:%S").astype("string")
    formatted: pd.Series = text + pd.Series(suffix[codes], index=times.index, dtype="string")
    return formatted


def format_wall_time(times: pd.Series, timezone: str) -> pd.Series:
    """'2026-11-02 14:30:00': the clock in ``timezone``, no offset (the import file, whose
    ``Parameters:TimeZone`` line says which zone)."""
    wall = times.dt.tz_convert(timezone).dt.tz_localize(None)
    formatted: pd.Series = wall.dt.strftime("%Y-%m-%d %H:%M:%S").astype("string")
    return formatted
