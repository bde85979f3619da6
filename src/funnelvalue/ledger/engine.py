"""The ledger's database connection, and its failures in words an operator can act on.

SQLite is opened with a busy timeout (a second process waits for the writer instead of
failing at once) and with explicit ``BEGIN`` statements: Python's sqlite3 module otherwise
runs DDL outside any transaction, so a migration could stop half-applied. A connection asks
for ``BEGIN IMMEDIATE`` (take the write lock now) with ``execution_options(sqlite_begin=...)``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.pool import StaticPool

from funnelvalue.errors import LedgerError

SQLITE_BUSY_TIMEOUT = 60.0  # seconds a writer waits for another process's transaction
SQLITE_CACHE_KIB = 65_536  # 64 MiB of page cache per connection (at most: used as needed)
# Pages of a new ledger file (an existing one keeps its own: SQLite sets it at creation).
# A first run of 900k conversions: insert 1.42 -> 1.13 s, commit 0.31 -> 0.21 s against the
# default 4 KiB (a ledger row takes ~470 bytes with its indexes).
SQLITE_PAGE_SIZE = 16_384
EMPTY_LEDGER = "sqlite://"  # in memory, one connection: the stand-in for a missing ledger


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    pool = {"poolclass": StaticPool} if url == EMPTY_LEDGER else {}
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT}, **pool)

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
        # A first run inserts every conversion with six indexes to keep: with SQLite's
        # default 2 MB page cache each insert rereads index pages from the file.
        dbapi_connection.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        dbapi_connection.execute("PRAGMA temp_store = MEMORY")

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def database_error(exc: Exception, where: str, what: str) -> LedgerError:
    """One line that says what failed and what to do; never the SQL or its parameters."""
    original = getattr(exc, "orig", None) or exc
    detail = str(original).splitlines()[0][:200] if str(original) else type(original).__name__
    lowered = detail.lower()
    if "malformed" in lowered or "not a database" in lowered:
        return LedgerError(
            f"{what}: the ledger file at {where} is damaged ({detail}). Stop the scheduled "
            "job, then recover it: `sqlite3 LEDGER.db '.recover' | sqlite3 recovered.db` and "
            "point the ledger at recovered.db (or restore the last backup); sending with a "
            "new, empty ledger would send everything again"
        )
    if "database is locked" in lowered:
        return LedgerError(
            f"{what}: the ledger at {where} stayed locked by another process for "
            f"{SQLITE_BUSY_TIMEOUT:.0f} s; try again later",
            transient=True,
        )
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        return LedgerError(
            f"{what}: the ledger at {where} cannot be written ({detail}); check the path "
            "and the permissions of the file and its folder"
        )
    if "disk" in lowered and "full" in lowered:
        return LedgerError(f"{what}: the disk holding {where} is full ({detail})", transient=True)
    if isinstance(exc, OperationalError) and not where.startswith("sqlite"):
        return LedgerError(
            f"{what}: the ledger database at {where} is unreachable ({type(original).__name__}); "
            "try again later",
            transient=True,
        )
    kind = "database error" if isinstance(exc, DatabaseError) else type(exc).__name__
    return LedgerError(f"{what} at {where}: {kind}: {detail}")
