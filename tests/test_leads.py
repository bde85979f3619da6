from __future__ import annotations

from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from funnelvalue import leads
from funnelvalue.leads import (
    canonical_header,
    normalise,
    parse_timestamps,
    rename_columns,
    timestamp_hint,
)

BERLIN = ZoneInfo("Europe/Berlin")


def test_headers_are_matched_loosely_and_renamed() -> None:
    assert canonical_header(" Lead ID ") == "lead_id"
    assert canonical_header("GCLID") == "gclid"
    frame = pd.DataFrame(columns=["Deal Stage", "Record ID", "Email"])
    renamed = rename_columns(frame, {"deal stage": "stage", "Record ID": "lead_id"})
    assert list(renamed.columns) == ["stage", "lead_id", "email"]


def test_offsets_are_respected_and_naive_times_use_the_mapping_zone() -> None:
    raw = pd.Series(
        [
            "2026-11-02 14:30:00+01:00",
            "2026-11-02T14:30:00Z",
            "2026-11-02 14:30:00",
            "2026-07-02 14:30",
            "2026-11-02",
        ]
    )
    parsed, bad = parse_timestamps(raw, BERLIN, None)
    assert not bad.any()
    assert [t.isoformat() for t in parsed] == [
        "2026-11-02T13:30:00+00:00",
        "2026-11-02T14:30:00+00:00",
        "2026-11-02T13:30:00+00:00",
        "2026-07-02T12:30:00+00:00",
        "2026-11-01T23:00:00+00:00",
    ]


def test_dst_edges_are_read_not_rejected() -> None:
    raw = pd.Series(["2026-10-25 02:30:00", "2026-03-29 02:30:00"])  # repeated / skipped hour
    parsed, bad = parse_timestamps(raw, BERLIN, None)
    assert not bad.any()
    assert parsed.iloc[0].isoformat() == "2026-10-25T00:30:00+00:00"  # first (summer) 02:30
    assert parsed.iloc[1].isoformat() == "2026-03-29T01:00:00+00:00"  # moved to 03:00 CEST


ISO_CELLS = [
    "2026-11-02 14:30:00",
    "2026-11-02T14:30:00",
    "2026-11-02 14:30",
    "2026-11-02 14",
    "2026-11-02",
    "2026-11-02 14:30:00.123456",
    "2026-11-02T14:30:00.5",
    "2026-10-25 02:30:00",  # the hour that repeats in Berlin
    "2026-03-29 02:30:00",  # the hour that does not exist
    "2024-02-29 23:59:59",
    "1999-12-31 23:59:59",
]
ZONED_CELLS = [
    "2026-11-02T14:30:00Z",
    "2026-11-02 14:30:00+01:00",
    "2026-11-02 14:30:00-0530",
    "2026-11-02T14:30:00.25+14:00",
]


@pytest.mark.parametrize(
    "cells",
    [
        [*ISO_CELLS, None, "  ", " 2026-11-02 14:30:00 "],  # all naive: the Arrow path
        [*ZONED_CELLS, None],  # all with an offset: the Arrow path
        ISO_CELLS + ZONED_CELLS,  # mixed: cell by cell
        [*ISO_CELLS, "2026-02-30 10:00:00", "02.11.2026 14:30", "soon"],  # some unreadable
    ],
    ids=["naive", "zoned", "mixed", "unreadable"],
)
def test_the_arrow_fast_path_reads_what_the_cell_by_cell_path_reads(
    cells: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole-column Arrow cast is only a faster way to the same instants: a column it
    reads gives what pandas' ISO 8601 parser gives, cell for cell, and flags nothing."""
    raw = pd.Series(cells, dtype="string", index=range(len(cells), 0, -1))  # as after a sort
    fast, fast_bad = parse_timestamps(raw, BERLIN, None)
    monkeypatch.setattr(leads, "_iso_column", lambda text, tz: None)
    slow, slow_bad = parse_timestamps(raw, BERLIN, None)
    pd.testing.assert_series_equal(fast, slow)
    pd.testing.assert_series_equal(fast_bad, slow_bad, check_names=False)
    assert fast.dtype == "datetime64[us, UTC]"
    assert fast.dt.tz is slow.dt.tz  # one UTC object: concat with another time column works


def test_the_arrow_path_takes_only_columns_it_reads_whole() -> None:
    whole = pd.Series(ISO_CELLS, dtype="string")
    assert leads._iso_column(whole, BERLIN) is not None
    assert leads._iso_column(pd.Series(ZONED_CELLS, dtype="string"), BERLIN) is not None
    for odd in ["2026-11-02T14:30:00Z", "2026-1-3 10:00", "20261102", "2026-11-02 24:00:00"]:
        assert leads._iso_column(pd.Series([*ISO_CELLS, odd], dtype="string"), BERLIN) is None


def test_custom_format_and_unparseable_values() -> None:
    raw = pd.Series(["02/11/2026 14:30", "31/02/2026 10:00", None])
    parsed, bad = parse_timestamps(raw, ZoneInfo("UTC"), "%d/%m/%Y %H:%M")
    assert parsed.iloc[0].isoformat() == "2026-11-02T14:30:00+00:00"
    assert bad.tolist() == [False, True, False]


def test_datetime_columns_from_sql_sources() -> None:
    naive = pd.Series(pd.to_datetime(["2026-11-02 14:30:00"]))
    parsed, _ = parse_timestamps(naive, BERLIN, None)
    assert parsed.iloc[0].isoformat() == "2026-11-02T13:30:00+00:00"
    aware = naive.dt.tz_localize("America/New_York")
    parsed, _ = parse_timestamps(aware, BERLIN, None)
    assert parsed.iloc[0].isoformat() == "2026-11-02T19:30:00+00:00"


def test_normalise_trims_blanks_and_explains_bad_times() -> None:
    frame = pd.DataFrame(
        {
            "lead_id": [" L1 ", "L2", "L3"],
            "stage": ["New", "  ", "New"],
            "stage_changed_at": ["2026-11-02 10:00", "yesterday", None],
            "created_at": ["2026-11-01", "2026-11-01", "soon"],
        }
    )
    out = normalise(frame, timezone="UTC")
    assert out["lead_id"].tolist() == ["L1", "L2", "L3"]
    assert out["stage"].isna().tolist() == [False, True, False]
    assert out["gclid"].isna().all()  # optional columns are always there
    errors = out["time_error"].tolist()
    assert errors[0] is pd.NA
    assert errors[1].startswith("stage_changed_at is not a date/time funnelvalue can read")
    assert errors[2].startswith("created_at is not a date/time funnelvalue can read")
    assert "yesterday" not in errors[1]  # cells are never quoted
    assert "soon" not in errors[2]


@pytest.mark.parametrize(
    ("times", "hint"),
    [
        (["28.10.2026 15:52", "03.11.2026 09:00"], 'set timestamp_format: "%d.%m.%Y %H:%M"'),
        (["10/28/2026 3:52 PM", "11/03/2026 9:00 AM"], 'set timestamp_format: "%m/%d/%Y %I:%M %p"'),
        (["28/10/2026", "13/11/2026"], 'set timestamp_format: "%d/%m/%Y"'),
        (["10/28/2026", "11/13/2026"], 'set timestamp_format: "%m/%d/%Y"'),
        (["03/11/2026", "04/12/2026"], 'both timestamp_format: "%d/%m/%Y" (day first) and "%m/'),
        (["yesterday"], "expected e.g. 2026-11-02 14:30:00"),
    ],
)
def test_unreadable_times_name_the_format_that_reads_them(times: list[str], hint: str) -> None:
    assert hint in timestamp_hint(pd.Series(times, dtype="string"))
