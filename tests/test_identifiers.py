from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from funnelvalue.identifiers import normalise_email, normalise_phone, sha256_hex, valid_click_id


def test_click_ids() -> None:
    values = pd.Series(
        [
            "Cj0KCQiA1234567890abcdef-_",
            "short",
            "has space in it 1234567",
            "EAIaIQobChMI9ZbQ2pDd-wIV",
            None,
        ],
        dtype="string",
    )
    assert valid_click_id(values).tolist() == [True, False, False, True, False]


def test_email_normalisation_follows_google() -> None:
    values = pd.Series(
        [
            " Jane.Doe@GMail.com ",
            "j.doe@example.com",
            "not-an-email",
            "jane.doe+ads@googlemail.com",
            None,
        ],
        dtype="string",
    )
    assert normalise_email(values).tolist() == [
        "janedoe@gmail.com",
        "j.doe@example.com",
        pd.NA,
        "janedoe@googlemail.com",  # Google drops a +suffix of its own addresses too
        pd.NA,
    ]


def test_phone_to_e164() -> None:
    values = pd.Series(
        ["+49 (151) 2345-6789", "0049 151 23456789", "0151 23456789", "12", None], dtype="string"
    )
    assert normalise_phone(values, "49").tolist() == [
        "+4915123456789",
        "+4915123456789",
        "+4915123456789",
        pd.NA,
        pd.NA,
    ]
    assert normalise_phone(values, None).tolist()[2] is pd.NA  # national number, no code


@pytest.mark.parametrize(
    ("raw", "country", "e164"),
    [
        ("06 1234 5678", "39", "+390612345678"),  # Italy keeps the leading 0
        ("1-800-555-0100", "1", "+18005550100"),  # no trunk 0; the 1 is not doubled
        ("(212) 555-0100", "1", "+12125550100"),
        ("+44 20 7946 0958", "49", "+442079460958"),  # international stays as written
        ("0044 20 7946 0958", None, "+442079460958"),
        ("020 7946 0958", "44", "+442079460958"),
        ("123", "49", None),
        ("0151 1234567", "49", None),  # one digit short of a German mobile number
        ("call me", "49", None),
    ],
)
def test_phone_numbers_by_each_countrys_rules(
    raw: str, country: str | None, e164: str | None
) -> None:
    got = normalise_phone(pd.Series([raw], dtype="string"), country).iloc[0]
    assert (None if pd.isna(got) else got) == e164


def test_sha256_matches_hashlib_and_keeps_missing() -> None:
    values = pd.Series(["a@example.com", None, "a@example.com"], dtype="string")
    expected = hashlib.sha256(b"a@example.com").hexdigest()
    assert sha256_hex(values).tolist() == [expected, pd.NA, expected]


@pytest.mark.parametrize("storage", ["python", "pyarrow"])
def test_sha256_hashes_the_utf8_bytes_of_any_text(storage: str) -> None:
    """Google hashes the UTF-8 bytes: an address with a non-ASCII letter (IDN domains, names)
    must give hashlib's digest of exactly those bytes, whatever the column's storage."""
    texts = ["jürgen@example.de", "ana@españa.es", "李@example.cn"]
    values = pd.Series([*texts, None], dtype=pd.StringDtype(storage))
    expected = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    assert sha256_hex(values).tolist() == [*expected, pd.NA]
