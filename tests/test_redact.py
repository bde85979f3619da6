"""What scrub hides, and what it must leave readable."""

from __future__ import annotations

import logging

import pytest

from funnelvalue.errors import SourceError
from funnelvalue.redact import RedactingFilter, remember, scrub


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("Authorization: Bearer abcdefghij123", "abcdefghij123"),
        ("token pat-na1-0badc0de-feed-4bad-beef-123456789abc", "0badc0de"),
        ("oauth ya29.a0AfH6SMBxyzxyzxyz", "a0AfH6SMB"),
        ("refresh 1//0gLxyzxyzxyzxyz", "0gLxyz"),
        ("jwt eyJhbGciOi.eyJzdWIiOiIx.SflKxwRJSM", "eyJhbGciOi"),
        ("token=abc123def&x=1", "abc123def"),
        ('{"client_secret": "s3cr3t-value"}', "s3cr3t-value"),
        ("postgresql://fv:Sup3rSecret@db/fv", "Sup3rSecret"),
        ("write to anna.mueller@example.com now", "anna.mueller@example.com"),
        ("call +49 151 98765432 today", "98765432"),
    ],
)
def test_secrets_and_personal_data_are_hidden(text: str, hidden: str) -> None:
    assert hidden not in scrub(text)


@pytest.mark.parametrize(
    "text",
    [
        "cannot open postgresql+psycopg://fv@db.example.com/fv",  # the host stays readable
        "the time 2026-11-02T14:30:00+01:00 is in the future",
        "3 of 1,234,567 rows; the token was refused (HTTP 401)",
    ],
)
def test_what_an_operator_needs_stays(text: str) -> None:
    assert scrub(text) == text


def test_remembered_secrets_are_hidden_in_messages_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    remember("a-very-private-value")
    assert "a-very-private-value" not in str(SourceError("echo: a-very-private-value"))
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "got %s", ("a-very-private-value",), None
    )
    RedactingFilter().filter(record)
    assert "a-very-private-value" not in record.getMessage()
