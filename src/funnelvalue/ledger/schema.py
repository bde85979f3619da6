"""The ledger's tables and its named migrations.

Every schema change is a named step applied once, in its own transaction, and recorded in
``schema_migrations``; the database remembers its own shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("applied_at", DateTime, nullable=False),
)
runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("command", String(20), nullable=False),
    Column("status", String(20), nullable=False),  # running | finished | failed | interrupted
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("source", String(500)),
    Column("destination", String(500)),
    Column("exit_code", Integer),
    Column("summary", JSON),
    Column("message", Text),
)
conversions = Table(
    "conversions",
    metadata,
    Column("key", String(700), primary_key=True),  # customer|action|lead_id|stage
    Column("customer_id", String(20), nullable=False),
    Column("conversion_action", String(300), nullable=False),
    Column("lead_id", String(200), nullable=False),
    Column("stage", String(200), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("conversion_time", DateTime, nullable=False),
    Column("value", Float, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("click_id_kind", String(20), nullable=False),
    Column("click_id", String(512)),
    Column("hashed_email", String(64)),
    Column("hashed_phone", String(64)),
    Column("consent", String(16)),
    # pending | uploaded | duplicate | rejected | retry_after | failed, and for asynchronous
    # destinations: submitted (accepted, outcome not known yet) | partial (its request had
    # failures Google counted but did not attribute to rows)
    Column("status", String(20), nullable=False),
    Column("error_code", String(100)),
    Column("message", Text),
    Column("retry_at", DateTime),
    Column("attempts", Integer, nullable=False, default=0),
    Column("destination", String(500)),
    Column("first_run_id", Integer, ForeignKey("runs.id")),
    Column("last_run_id", Integer, ForeignKey("runs.id")),
    Column("sent_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
    Column("request_id", String(100)),  # the asynchronous request that carried it
    Index("ix_conversions_status", "status", "customer_id"),
    Index("ix_conversions_request", "request_id"),
    Index("ix_conversions_customer", "customer_id"),
    Index("ix_conversions_last_run", "last_run_id"),
)
rejected_rows = Table(
    "rejected_rows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False, index=True),
    Column("source_row", Integer),
    Column("lead_id", String(200)),
    Column("crm_stage", String(200)),
    Column("stage", String(200)),
    Column("reason", Text, nullable=False),
)
watermarks = Table(
    "watermarks",
    metadata,
    Column("source", String(500), primary_key=True),
    Column("value", DateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id")),
    Column("updated_at", DateTime, nullable=False),
)


requests = Table(
    "requests",
    metadata,
    # One asynchronous upload (Data Manager IngestEvents): its outcome arrives later as counts.
    Column("request_id", String(100), primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id")),
    Column("destination", String(500), nullable=False),
    Column("events", Integer, nullable=False),
    Column("status", String(20), nullable=False),  # submitted | success | partial | failed
    Column("submitted_at", DateTime, nullable=False),
    Column("checked_at", DateTime),
    Column("error_counts", JSON),  # {reason: events}
    Index("ix_requests_status", "status", "destination"),
)


def _initial(conn: Connection) -> None:
    metadata.create_all(conn, tables=[runs, conversions, rejected_rows, watermarks])


def _async_requests(conn: Connection) -> None:
    """Ledgers made before asynchronous destinations get the request id and its table."""
    columns = {c["name"] for c in inspect(conn).get_columns("conversions")}
    if "request_id" not in columns:
        conn.execute(text("ALTER TABLE conversions ADD COLUMN request_id VARCHAR(100)"))
    index = next(i for i in conversions.indexes if i.name == "ix_conversions_request")
    index.create(conn, checkfirst=True)
    requests.create(conn, checkfirst=True)


# Named, ordered, each applied once in its own transaction and recorded in schema_migrations.
MIGRATIONS: Sequence[tuple[str, Callable[[Connection], None]]] = (
    ("0001_initial", _initial),
    ("0002_async_requests", _async_requests),
)
