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
    Column("customer_id", String(20)),  # whose lock the run held (NULL: before 0003)
    Column("pid", Integer),
    Column("host", String(255)),
)
conversions = Table(
    "conversions",
    metadata,
    # customer|action identity|lead_id (see conversions.idempotency_key); rows written before
    # migration 0003 keep their old key until a run re-keys them (Ledger.adopt_legacy)
    Column("key", Text, primary_key=True),
    Column("customer_id", String(20), nullable=False),
    Column("conversion_action", Text, nullable=False),  # as the mapping named it
    # the action as Google counts it (resolved id, or the import file's name); NULL: a row
    # from before 0003 not re-keyed yet; "" : a re-keyed duplicate kept only as history
    Column("action_identity", Text),
    Column("lead_id", Text, nullable=False),
    Column("stage", Text, nullable=False),
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
    # Partial where only a few rows are looked up: an inserted row outside the WHERE costs
    # that index nothing (an import-file row has no request; new rows have their identity).
    Index(
        "ix_conversions_request",
        "request_id",
        sqlite_where=text("request_id IS NOT NULL"),
        postgresql_where=text("request_id IS NOT NULL"),
    ),
    Index("ix_conversions_last_run", "last_run_id"),
    Index(
        "ix_conversions_legacy",
        "customer_id",
        sqlite_where=text("action_identity IS NULL"),
        postgresql_where=text("action_identity IS NULL"),
    ),
    # the import file's window (written since a date): a range, not every row ever written
    Index("ix_conversions_written", "customer_id", "status", "sent_at"),
)
rejected_rows = Table(
    "rejected_rows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False, index=True),
    Column("source_row", Integer),
    Column("lead_id", Text),
    Column("crm_stage", Text),
    Column("stage", Text),
    Column("reason", Text, nullable=False),
    Column("reason_code", String(40)),
    Column("kind", String(10)),  # invalid (fix it in the CRM) | skipped (not attributable)
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


def _add_columns(conn: Connection, table: str, columns: dict[str, str]) -> None:
    present = {c["name"] for c in inspect(conn).get_columns(table)}
    for name, kind in columns.items():
        if name not in present:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))


def _stable_identity(conn: Connection) -> None:
    """Keys that survive mapping edits, one run at a time, any lead id on any backend.

    Adds the action identity (NULL marks the rows whose keys a run still has to re-key: the
    old key held mapping labels), who holds each run, and reason codes of rejected rows;
    widens the text columns PostgreSQL limited (a 201-character lead id failed every run).
    """
    _add_columns(conn, "conversions", {"action_identity": "TEXT"})
    _add_columns(
        conn, "runs", {"customer_id": "VARCHAR(20)", "pid": "INTEGER", "host": "VARCHAR(255)"}
    )
    _add_columns(conn, "rejected_rows", {"reason_code": "VARCHAR(40)", "kind": "VARCHAR(10)"})
    if conn.dialect.name == "postgresql":
        for table, column in (
            ("conversions", "key"),
            ("conversions", "conversion_action"),
            ("conversions", "lead_id"),
            ("conversions", "stage"),
            ("rejected_rows", "lead_id"),
            ("rejected_rows", "crm_stage"),
            ("rejected_rows", "stage"),
        ):
            conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE TEXT"))
    index = next(i for i in conversions.indexes if i.name == "ix_conversions_legacy")
    index.create(conn, checkfirst=True)


def _written_window(conn: Connection) -> None:
    """The rolling import file reads the rows written in its window: an index for that range
    (without it the read grew with every row the account ever wrote). The customer-only
    index goes: the legacy and the window indexes both start with the customer, and every
    index is one more B-tree each inserted row updates."""
    index = next(i for i in conversions.indexes if i.name == "ix_conversions_written")
    index.create(conn, checkfirst=True)
    conn.execute(text("DROP INDEX IF EXISTS ix_conversions_customer"))


def _leaner_indexes(conn: Connection) -> None:
    """Fewer B-trees for every inserted row (a first run of 900k conversions spent most of
    its ledger write on six): the status index goes (the window index starts with the
    customer and the status, which every per-account status query has), and the request and
    legacy indexes hold only the rows they are looked up by."""
    for name in ("ix_conversions_status", "ix_conversions_request", "ix_conversions_legacy"):
        conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
    for index in conversions.indexes:
        if index.name in ("ix_conversions_request", "ix_conversions_legacy"):
            index.create(conn, checkfirst=True)


# Named, ordered, each applied once in its own transaction and recorded in schema_migrations.
MIGRATIONS: Sequence[tuple[str, Callable[[Connection], None]]] = (
    ("0001_initial", _initial),
    ("0002_async_requests", _async_requests),
    ("0003_stable_identity", _stable_identity),
    ("0004_written_window", _written_window),
    ("0005_leaner_indexes", _leaner_indexes),
)
