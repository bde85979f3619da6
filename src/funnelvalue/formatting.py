"""How times are written for Google (the API and the import file) and for people reading the
account's own clock: one format, built column-wise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from funnelvalue.frames import TEXT


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
    formatted: pd.Series = _clock(wall) + pd.Series(suffix[codes], index=times.index, dtype=TEXT)
    return formatted


def format_wall_time(times: pd.Series, timezone: str) -> pd.Series:
    """'2026-11-02 14:30:00': the clock in ``timezone``, no offset (the import file, whose
    ``Parameters:TimeZone`` line says which zone)."""
    return _clock(times.dt.tz_convert(timezone).dt.tz_localize(None))


def _clock(wall: pd.Series) -> pd.Series:
    """Naive times as '2026-11-02 14:30:00', to the second, missing as missing: Arrow's cast
    of second timestamps writes exactly that, ~15x pandas' strftime."""
    seconds = wall.to_numpy(dtype="datetime64[s]")
    text = pc.cast(pa.array(seconds, pa.timestamp("s"), from_pandas=True), pa.string())
    return pd.Series(pd.array(text, dtype=TEXT), index=wall.index)
