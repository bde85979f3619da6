from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from funnelvalue.frames import STR, TEXT, labels, trimmed_text, value_offsets
from funnelvalue.vocabulary import ClickIdKind


def test_labels_take_names_by_code_and_a_negative_code_is_missing() -> None:
    taken = labels(["lead", None, "won"], np.array([2, 0, -1, 1, 0]))
    assert taken.dtype == TEXT
    assert taken.tolist() == ["won", "lead", pd.NA, pd.NA, "lead"]
    plain = labels(pd.array(["Won", "New"], dtype=TEXT), np.array([1, 1, 0]), STR)
    assert plain.dtype == STR
    assert plain.tolist() == ["New", "New", "Won"]
    kinds = labels(list(ClickIdKind), np.array([3, 0]))
    assert kinds.tolist() == ["email/phone", "gclid"]
    assert labels(["a"], np.array([], dtype=np.int64)).tolist() == []


def test_trimmed_text_makes_cells_of_only_whitespace_missing() -> None:
    cells = pd.Series([" a ", "   ", None, "b"], dtype=TEXT)
    assert trimmed_text(cells).tolist() == ["a", pd.NA, pd.NA, "b"]
    untouched = pd.Series(["x", None], dtype=TEXT)  # nothing emptied: the trimmed column
    assert trimmed_text(untouched).tolist() == ["x", pd.NA]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()])
def test_value_offsets_are_a_slices_own_window_of_its_parents_offsets(kind: pa.DataType) -> None:
    whole = pa.array(["ab", "c", "", "def", "g"], kind)
    part = whole.slice(1, 3)
    offsets = value_offsets(part)
    assert offsets.tolist() == [2, 3, 3, 6]  # into the parent's data buffer
    data = whole.buffers()[2].to_pybytes()
    assert [data[a:b] for a, b in itertools.pairwise(offsets)] == [
        v.encode() if isinstance(v, str) else v for v in part.to_pylist()
    ]
    assert value_offsets(pa.array([], kind)).tolist() == [0]
