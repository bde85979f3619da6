"""The canonical lead frame every source produces and every later step relies on.

One row per lead per stage reached. Sources hand over whatever their CRM gives (strings from a
CSV, datetimes from SQL); ``normalise`` turns that into one shape: trimmed strings with empty
cells as missing, timestamps as tz-aware UTC, and a ``time_error`` column that says why a
timestamp could not be used, so the row can be rejected with a reason instead of dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as MappingT
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from funnelvalue.errors import SourceError
from funnelvalue.frames import missing_text, trimmed_text

REQUIRED = ("lead_id", "stage", "stage_changed_at")
OPTIONAL = (
    "created_at",
    "gclid",
    "gbraid",
    "wbraid",
    "email",
    "phone",
    "amount",
    "currency",
    "consent_ad_user_data",
)
CANONICAL = REQUIRED + OPTIONAL
TIMESTAMPS = ("stage_changed_at", "created_at")
# Facts about the lead rather than about one stage change: an export with stage history often
# fills them on one row only, so they are shared across all of the lead's rows.
LEAD_LEVEL = ("created_at", "gclid", "gbraid", "wbraid", "email", "phone", "consent_ad_user_data")

# An offset only counts after a time of day: "2026-11-02" ends in "-02" but is a naive date.
# Matched against the last 6 characters of values that contain a time of day (a colon):
# "2026-11-02" ends in "-02" but is a naive date. Anchored and short, so Arrow's regex
# engine runs it fast.
_OFFSET = r"(?:Z|[+-]\d\d:?\d\d|[+-]\d\d)$"


def canonical_header(name: str) -> str:
    """'Lead ID ' -> 'lead_id': exports differ in case and spacing, not in meaning."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


INTERNAL = ("source_row", "row_error", "time_error")  # added by funnelvalue, never a header

# Headers of well-known exports -> the lead column they hold (compared as canonical_header).
KNOWN_HEADERS = {
    # HubSpot (deals and contacts exports)
    "record_id": "lead_id",
    "deal_stage": "stage",
    "lifecycle_stage": "stage",
    "last_modified_date": "stage_changed_at",
    "create_date": "created_at",
    "google_ad_click_id": "gclid",
    # Salesforce (opportunity and lead reports)
    "opportunity_id": "lead_id",
    "lead_id_18": "lead_id",
    "lead_status": "stage",
    "last_stage_change_date": "stage_changed_at",
    "created_date": "created_at",
    # Pipedrive ("Deal - ..." columns)
    "deal_id": "lead_id",
    "deal_stage_name": "stage",
    "deal_update_time": "stage_changed_at",
    "deal_last_stage_change": "stage_changed_at",
    "deal_deal_created": "created_at",
    "deal_value": "amount",
    "deal_currency": "currency",
    # Zoho CRM
    "modified_time": "stage_changed_at",
    "created_time": "created_at",
    # everyone
    "id": "lead_id",
    "status": "stage",
    "deal_status": "stage",
    "updated_at": "stage_changed_at",
    "last_modified": "stage_changed_at",
    "modified": "stage_changed_at",
    "google_click_id": "gclid",
    "e_mail": "email",
    "email_address": "email",
    "phone_number": "phone",
    "mobile": "phone",
}


def rename_columns(
    frame: pd.DataFrame, renames: MappingT[str, str], used: Iterable[str] = ()
) -> pd.DataFrame:
    """Apply the mapping's ``columns:`` renames, then canonicalise every header.

    Renames are matched the same tolerant way as headers, so "Deal Stage", "deal stage" and
    "deal_stage" all work in the mapping file. Two headers that end up as one column
    funnelvalue reads (``used``: the mapping's value columns; the lead columns always) are an
    error: which one holds the data would be a guess. Unused repeats keep the first.
    """
    wanted = {canonical_header(src): dst for src, dst in renames.items()}
    new_names = []
    for column in frame.columns:
        key = str(column) if column in INTERNAL else canonical_header(str(column))
        new_names.append(wanted.get(key, key))
    renamed = frame.copy(deep=False)
    renamed.columns = pd.Index(new_names)
    repeated = renamed.columns.duplicated(keep=False)
    read = set(CANONICAL) | {canonical_header(u) for u in used}
    clash = sorted({n for n, r in zip(new_names, repeated, strict=True) if r and n in read})
    if clash:
        problems = [
            f"{name}: "
            + ", ".join(
                f"'{h}'" for h, n in zip(frame.columns, new_names, strict=True) if n == name
            )
            for name in clash
        ]
        raise SourceError(
            "the export has more than one column for "
            + ", ".join(clash)
            + " (after the mapping's `columns:` renames): "
            + "; ".join(problems)
            + ". Remove or rename one so each lead column comes from one header"
        )
    return renamed.loc[:, ~renamed.columns.duplicated()]


def check_columns(frame: pd.DataFrame, origin: str, headers: Sequence[str] = ()) -> None:
    """A missing required column is a configuration problem: say which, and the `columns:`
    renames that would map the export's own headers (for well-known CRM exports)."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if not missing:
        return
    headers = list(headers) or [str(c) for c in frame.columns if c not in INTERNAL]
    found = ", ".join(f"'{h}'" for h in headers) or "none"
    suggested: dict[str, str] = {}
    for header in headers:
        target = KNOWN_HEADERS.get(canonical_header(header))
        if target in missing and target not in suggested.values():
            suggested[header] = target
    if suggested:
        renames = ", ".join(f'"{h}": {t}' for h, t in suggested.items())
        fix = f"add to the mapping file: columns: {{{renames}}}"
    else:
        fix = (
            'rename them under `columns:` in the mapping file, e.g. columns: {"Deal Stage": stage}'
        )
    raise SourceError(f"{origin} has no column {', '.join(missing)} (headers: {found}); {fix}")


def normalise(
    frame: pd.DataFrame,
    *,
    timezone: str,
    timestamp_format: str | None = None,
) -> pd.DataFrame:
    """Trim strings, blank -> missing, parse timestamps to UTC, add missing optional columns.

    Works on ``frame`` in place (and returns it): a million-row export should not be held
    twice, raw and clean.
    """
    out = frame
    for column in (*CANONICAL, "row_error"):
        if column not in out.columns:
            out[column] = missing_text(out.index)
    # The row's number in its source, for reasons; int64 even in an empty read (the contract).
    if "source_row" not in out.columns:
        out["source_row"] = np.arange(1, len(out) + 1)
    out["source_row"] = out["source_row"].astype("int64")
    for column in out.columns:
        if column in TIMESTAMPS or column in ("source_row", "row_error"):
            continue
        out[column] = trimmed_text(out[column])
    tz = ZoneInfo(timezone)
    time_error = missing_text(out.index)
    for column in TIMESTAMPS:
        parsed, bad = parse_timestamps(out[column], tz, timestamp_format)
        if bad.any():
            time_error = time_error.fillna(_unreadable_time_reason(column, out[column], bad))
        out[column] = parsed
    missing = out["stage_changed_at"].isna() & time_error.isna()
    time_error[missing] = "stage_changed_at is empty: the time the stage was reached is required"
    out["time_error"] = time_error
    return out


def parse_timestamps(
    raw: pd.Series, tz: ZoneInfo, timestamp_format: str | None
) -> tuple[pd.Series, pd.Series]:
    """Parse a column to tz-aware UTC; return (times, mask of present-but-unusable cells).

    Values with an offset keep it; naive values are read in the mapping's timezone. Datetime
    columns from SQL sources are handled the same way. An ambiguous local time (the hour that
    repeats when clocks go back) is read as the first occurrence; a time that does not exist
    (the hour skipped in spring) moves forward: both are real CRM entries, not errors.
    """
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC"), pd.Series(False, index=raw.index)
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        local = raw.dt.tz_localize(
            tz, ambiguous=np.ones(len(raw), bool), nonexistent="shift_forward"
        )
        return local.dt.tz_convert("UTC"), pd.Series(False, index=raw.index)
    text = trimmed_text(raw)
    present = text.notna()
    if timestamp_format is None:
        whole = _iso_column(text, tz)
        if whole is not None:
            return whole, pd.Series(False, index=raw.index)
    result = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    with_offset = (
        present
        & text.str.contains(":", regex=False, na=False)
        & text.str.slice(-6).str.contains(_OFFSET, na=False)
    )
    if with_offset.any():
        result[with_offset] = pd.to_datetime(
            text[with_offset], utc=True, format="ISO8601", errors="coerce"
        ).astype("datetime64[us, UTC]")
    naive = present & ~with_offset
    if naive.any():
        fmt = timestamp_format or "ISO8601"
        local = pd.to_datetime(text[naive], format=fmt, errors="coerce")
        local = local.dt.tz_localize(
            tz, ambiguous=np.ones(len(local), bool), nonexistent="shift_forward"
        )
        result[naive] = local.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return result, present & result.isna()


def _iso_column(text: pd.Series, tz: ZoneInfo) -> pd.Series | None:
    """The common case at Arrow speed (~10x pandas' ISO 8601 parser): every present cell
    plain ISO 8601 that Arrow's cast reads, all naive (read in ``tz``) or all with an
    offset. Arrow reads a strict subset of what pandas does, to the same instant; None
    when any cell is outside it (mixed, a day-first date, a typo): the caller parses the
    column cell by cell and says which cells it cannot read."""
    cells = pa.array(text.array)
    try:
        naive = pc.cast(cells, pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        try:
            zoned = pc.cast(cells, pa.timestamp("us", tz="UTC"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        # tz_convert: pandas' own UTC (Arrow's is ZoneInfo("UTC"); concat would give objects)
        return pd.Series(zoned.to_pandas().array, index=text.index).dt.tz_convert("UTC")
    local = pd.Series(naive.to_pandas().array, index=text.index).astype("datetime64[us]")
    local = local.dt.tz_localize(
        tz, ambiguous=np.ones(len(local), bool), nonexistent="shift_forward"
    )
    return local.dt.tz_convert("UTC")


def _unreadable_time_reason(column: str, raw: pd.Series, bad: pd.Series) -> pd.Series:
    """The reason for cells that are not times: the column and the fix, never the cell (a
    shifted row can put anything in it)."""
    reasons = pd.Series(pd.NA, index=raw.index, dtype="string")
    hint = timestamp_hint(trimmed_text(raw[bad]))
    reasons[bad] = f"{column} is not a date/time funnelvalue can read; {hint}"
    return reasons


# Layouts CRMs and spreadsheets export, tried on unreadable times to name the fix.
DAY_FIRST = [
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%d-%m-%Y %H:%M",
    "%d-%m-%Y",
]
MONTH_FIRST = [
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y",
    "%m-%d-%Y %H:%M",
    "%m-%d-%Y",
]
OTHER = [
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%Y%m%d%H%M%S",
    "%d %b %Y %H:%M",
    "%d %b %Y",
    "%b %d, %Y %I:%M %p",
    "%b %d, %Y",
]
HINT_SAMPLE = 500  # distinct unreadable values tried per layout


def timestamp_hint(values: pd.Series) -> str:
    """Which ``timestamp_format`` would read ``values``: day-first and month-first layouts
    are both tried, and when both fit (every day is 12 or less) the choice is the user's."""
    sample = pd.Series(values.dropna().unique()[:HINT_SAMPLE], dtype="string")

    def reads_all(layout: str) -> bool:
        return bool(pd.to_datetime(sample, format=layout, errors="coerce").notna().all())

    day = next((f for f in DAY_FIRST if reads_all(f)), None)
    month = next((f for f in MONTH_FIRST if reads_all(f)), None)
    other = next((f for f in OTHER if reads_all(f)), None) if not (day or month) else None
    if day and month:
        return (
            f'both timestamp_format: "{day}" (day first) and "{month}" (month first) read '
            "these times; set the one your CRM uses in the mapping"
        )
    if day or month or other:
        return f'set timestamp_format: "{day or month or other}" in the mapping (it reads them)'
    return (
        "expected e.g. 2026-11-02 14:30:00 or 2026-11-02T14:30:00+01:00; set timestamp_format "
        'in the mapping for other layouts (e.g. "%d.%m.%Y %H:%M")'
    )
