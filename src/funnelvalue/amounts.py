"""Money as CRMs and people write it, read without guessing.

`1.500` is fifteen hundred in Berlin and one and a half in Boston; a value misread by 1000x
teaches bidding the wrong thing without a word. So a value is read only when it can mean one
thing: `1,054.50`, `1.054,50`, `99,5`, `1 234` and `1054` can; `1.500` or `3,254` cannot until
the mapping declares ``amount_format`` (which then reads every value strictly). Column-wise:
one regular expression pass per shape, never a Python loop over rows.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from funnelvalue.vocabulary import Reason

# amount_format -> (thousands separator, decimal separator), as a marketer recognises them.
AMOUNT_FORMATS: dict[str, tuple[str, str]] = {
    "1,234.56": (",", "."),
    "1.234,56": (".", ","),
    "1 234,56": (" ", ","),
    "1 234.56": (" ", "."),
    "1'234.56": ("'", "."),
    "1234.56": ("", "."),
    "1234,56": ("", ","),
}
MAX_VALUE = 10_000_000.0  # default ceiling: above it a value is a typo or a pasted id

# currency symbols, and ISO codes beside the number (EUR 12.30, 12,30 EUR)
_NOISE = r"[€$£¥]|^[A-Za-z]{3}\s*(?=[-\d])|(?<=\d)\s*[A-Za-z]{3}$"
_SPACES = r"[\s\u00a0\u202f]+"  # spaces, no-break and narrow no-break spaces (fr/ch thousands)
_SIGN = r"-?"


def _strict(thousands: str, decimal: str) -> str:
    """The one shape a declared format allows: optional groups of three, optional decimals."""
    grouped = rf"[1-9]\d{{0,2}}(?:{re.escape(thousands)}\d{{3}})+|" if thousands else ""
    return rf"^{_SIGN}(?:{grouped}\d+)(?:{re.escape(decimal)}\d+)?$"


def clean(raw: pd.Series) -> pd.Series:
    """Trimmed text without currency symbols or codes; every kind of space becomes one space.

    Only cells with something besides digits, separators and a sign go through the currency
    pattern (its lookarounds run in Python, row by row): usually none of them do.
    """
    text = raw.astype(pd.StringDtype("pyarrow")).str.strip()
    plain = text.str.fullmatch(r"[-\d.,']*").fillna(True).astype(bool)
    if not plain.all():
        noisy = text[~plain].str.replace(_NOISE, "", regex=True)
        text = text.mask(~plain, noisy.str.replace(_SPACES, " ", regex=True).str.strip())
    return text


def read_amounts(raw: pd.Series, amount_format: str | None = None) -> tuple[pd.Series, pd.Series]:
    """(values as float, a Reason code where a present value cannot be used; NA elsewhere).

    Missing cells are NaN with no reason (the caller decides about defaults). Numbers that
    are already numbers (an SQL column, a JSON API) are taken as they are.
    """
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.astype("float64")
        return values, _out_of_range(values, pd.Series(pd.NA, index=raw.index, dtype="string"))
    text = clean(raw)
    present = raw.astype("string").str.strip().fillna("") != ""
    values = pd.Series(float("nan"), index=raw.index, dtype="float64")
    problem = pd.Series(pd.NA, index=raw.index, dtype="string")
    if amount_format is not None:
        thousands, decimal = AMOUNT_FORMATS[amount_format]
        fits = text.str.fullmatch(_strict(thousands, decimal)).fillna(False).astype(bool)
        plain = _plain(text[fits], thousands, decimal)
        values[fits] = plain
        problem[present & ~fits] = Reason.VALUE_NOT_A_NUMBER
        return values, _out_of_range(values, problem)
    shapes = _shapes(text)
    for shape, _, reading in _SHAPES:
        rows = shapes == shape
        if reading is not None and rows.any():
            values[rows] = _plain(text[rows], *reading)
    problem[present & (shapes == "ambiguous")] = Reason.VALUE_AMBIGUOUS
    problem[present & shapes.isna()] = Reason.VALUE_NOT_A_NUMBER
    return values, _out_of_range(values, problem)


# One separator and exactly three digits: 1.500 / 1,500 / 3.254 could be either.
AMBIGUOUS = rf"^{_SIGN}[1-9]\d{{0,2}}[.,]\d{{3}}$"
# The shapes a value may have, tried in order, and how each is read: (thousands separator,
# decimal separator); None for the one shape that cannot be read without a declared format.
_SHAPES: list[tuple[str, str, tuple[str, str] | None]] = [
    ("integer", rf"^{_SIGN}\d+$", ("", ".")),
    # one separator followed by 1-2 or 4+ digits, or after a leading 0: only a decimal point
    (
        "decimal point",
        rf"^{_SIGN}(?:\d+\.(?:\d{{1,2}}|\d{{4,}})|0\.\d+|\d{{4,}}\.\d+)$",
        ("", "."),
    ),
    ("decimal comma", rf"^{_SIGN}(?:\d+,(?:\d{{1,2}}|\d{{4,}})|0,\d+|\d{{4,}},\d+)$", ("", ",")),
    ("1,234.56", rf"^{_SIGN}\d{{1,3}}(?:,\d{{3}})+\.\d+$", (",", ".")),
    ("1.234,56", rf"^{_SIGN}\d{{1,3}}(?:\.\d{{3}})+,\d+$", (".", ",")),
    ("1,234,567", rf"^{_SIGN}\d{{1,3}}(?:,\d{{3}}){{2,}}$", (",", ".")),
    ("1.234.567", rf"^{_SIGN}\d{{1,3}}(?:\.\d{{3}}){{2,}}$", (".", ",")),
    ("1 234", rf"^{_SIGN}\d{{1,3}}(?: \d{{3}})+$", (" ", ".")),
    ("1 234,56", rf"^{_SIGN}\d{{1,3}}(?: \d{{3}})+,\d+$", (" ", ",")),
    ("1 234.56", rf"^{_SIGN}\d{{1,3}}(?: \d{{3}})+\.\d+$", (" ", ".")),
    ("1'234.56", rf"^{_SIGN}\d{{1,3}}(?:'\d{{3}})+(?:\.\d+)?$", ("'", ".")),
    ("ambiguous", AMBIGUOUS, None),
]


def is_ambiguous(text: str) -> bool:
    """Could ``text`` be read two ways (1.500: fifteen hundred, or one and a half)?"""
    return re.fullmatch(AMBIGUOUS, text.strip()) is not None


def _shapes(text: pd.Series) -> pd.Series:
    shape = pd.Series(pd.NA, index=text.index, dtype="string")
    for name, pattern, _ in _SHAPES:
        unmatched = shape.isna()
        hit = text[unmatched].str.fullmatch(pattern).fillna(False).astype(bool)
        shape[hit[hit].index] = name
    return shape


def _plain(text: pd.Series, thousands: str, decimal: str) -> pd.Series:
    if thousands:
        text = text.str.replace(thousands, "", regex=False)
    if decimal != ".":
        text = text.str.replace(decimal, ".", regex=False)
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _out_of_range(values: pd.Series, problem: pd.Series) -> pd.Series:
    infinite = values.notna() & ~values.map(math.isfinite, na_action="ignore").astype(bool)
    problem[infinite & problem.isna()] = Reason.VALUE_TOO_LARGE
    return problem


def ambiguity_hint(amount_format: str | None) -> str:
    """The fix, for a reason or a mapping error."""
    if amount_format is not None:
        return f"it does not match amount_format {amount_format!r}"
    return (
        "it could be read two ways (1.500 is 1500 in Germany, 1.5 in the US): set "
        'amount_format in the mapping, e.g. amount_format: "1.234,56" or "1,234.56"'
    )


def read_amount(text: str, amount_format: str | None = None) -> float:
    """One value written in the mapping file; ValueError with the fix when it cannot be read."""
    values, problem = read_amounts(pd.Series([text], dtype="string"), amount_format)
    if problem.notna().iloc[0] or pd.isna(values.iloc[0]):
        if problem.iloc[0] == Reason.VALUE_AMBIGUOUS or amount_format is not None:
            raise ValueError(f"value {text!r}: {ambiguity_hint(amount_format)}")
        raise ValueError(f"value {text!r} is not a number")
    return float(values.iloc[0])
