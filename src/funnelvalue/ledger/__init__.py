"""The ledger: the single source of truth for "was this conversion already sent?".

``store`` holds the Ledger (runs, conversions, outcomes, watermarks), ``schema`` its tables and
migrations, ``driver`` the bulk reads and writes that keep a million-row run fast.
"""

from funnelvalue.ledger.schema import metadata, schema_migrations
from funnelvalue.ledger.store import (
    CHANGED,
    DONE,
    FIXED,
    NEW,
    PAYLOAD,
    PENDING,
    REJECTED_BEFORE,
    RETRY_DUE,
    RETRY_LATER,
    SENT,
    TO_SEND,
    Ledger,
    RunSummary,
)

__all__ = [
    "CHANGED",
    "DONE",
    "FIXED",
    "NEW",
    "PAYLOAD",
    "PENDING",
    "REJECTED_BEFORE",
    "RETRY_DUE",
    "RETRY_LATER",
    "SENT",
    "TO_SEND",
    "Ledger",
    "RunSummary",
    "metadata",
    "schema_migrations",
]
