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


def test_the_one_search_shortcut_never_skips_a_replacement() -> None:
    """scrub returns text unchanged after one combined search when no pattern matches: over
    texts assembled from every pattern's ingredients (and near misses), it must give exactly
    what applying every replacement gives."""
    import random

    from funnelvalue import redact

    pieces = [
        "Bearer ", "basic ", "abcdefghij123", "pat-na1-", "0badc0de-feed-4bad", "ya29.",
        "a0AfH6SMBxyzxyz", "1//", "0gLxyzxyzxyz", "AIza", "SyA0123456789abcdefghij",
        "eyJhbGciOi", ".", "eyJzdWIiOiIx", "00D", "5g000000abcde", "!", "AQ0AQH0123456789abcdefgh",
        "token", "=", ":", '"', "password", " ", "\n", "://", "fv", "@", "db", "example.com",
        "anna.mueller", "+", "49", "151 98765", "432", "(0)", "-", "D-10999", "Won", "x", "%",
        "lead_id", "&", "secret-value",
    ]  # fmt: skip
    rng = random.Random(15)
    hidden = {"secret-value"}
    differed = 0
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        expected = redact._scrub_all(text, hidden)
        assert scrub(text, hidden) == expected, text
        differed += expected != text
    assert differed > 500  # the texts did exercise the replacements
