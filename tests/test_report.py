"""What the terminal shows: the preview's first rows are the same rows a full sort gives."""

from __future__ import annotations

import numpy as np
import pandas as pd

from funnelvalue.report import STATE_ORDER, _first_rows
from funnelvalue.vocabulary import State


def test_the_shown_rows_are_the_first_of_the_full_order() -> None:
    """Only the shown rows are ordered (a partial selection per state); they must be exactly
    the head of ordering everything by state, then time."""
    rng = np.random.default_rng(3)
    count = 5_000
    states = np.array(list(State))[rng.integers(0, len(State), count)]
    times = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 10_000, count), unit="min"
    )
    rows = pd.DataFrame({"state": states, "conversion_time": times, "n": np.arange(count)})
    priority = rows["state"].map(STATE_ORDER).fillna(len(STATE_ORDER)).to_numpy()
    full = rows.iloc[np.lexsort((rows["conversion_time"].to_numpy(), priority))]
    for limit in (1, 20, 700, count, count + 5):
        shown = _first_rows(rows, limit)
        assert len(shown) == min(limit, count)
        expected = full.head(limit)
        assert shown["state"].tolist() == expected["state"].tolist()
        assert shown["conversion_time"].tolist() == expected["conversion_time"].tolist()
    assert _first_rows(rows, None)["n"].tolist() == full["n"].tolist()
    assert _first_rows(rows.iloc[0:0], 20).empty


def test_member_is_isin_for_keys_missing_values_included() -> None:
    from funnelvalue.frames import member

    values = pd.Series(["a", "b", None, "d"], dtype="string[pyarrow]", index=[5, 6, 7, 8])
    assert member(values, ["b", "d", "z"]).tolist() == [False, True, False, True]
    assert member(values, pd.Series([], dtype="string")).tolist() == [False] * 4
    assert member(values, values).index.tolist() == [5, 6, 7, 8]
    plain = pd.Series(["x", "y"])  # object dtype works too
    assert member(plain, {"y"}).tolist() == [False, True]
