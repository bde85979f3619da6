from __future__ import annotations

import numpy as np
import pandas as pd

from funnelvalue.frames import STR, TEXT, labels, trimmed_text
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
