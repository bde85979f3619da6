from __future__ import annotations

import hashlib

import pandas as pd

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
        "janedoe+ads@googlemail.com",
        pd.NA,
    ]


def test_phone_to_e164() -> None:
    values = pd.Series(
        ["+49 (151) 123-4567", "0049 151 1234567", "0151 1234567", "12", None], dtype="string"
    )
    assert normalise_phone(values, "49").tolist() == [
        "+491511234567",
        "+491511234567",
        "+491511234567",
        pd.NA,
        pd.NA,
    ]
    assert normalise_phone(values, None).tolist()[2] is pd.NA  # national number, no code


def test_sha256_matches_hashlib_and_keeps_missing() -> None:
    values = pd.Series(["a@example.com", None, "a@example.com"], dtype="string")
    expected = hashlib.sha256(b"a@example.com").hexdigest()
    assert sha256_hex(values).tolist() == [expected, pd.NA, expected]
