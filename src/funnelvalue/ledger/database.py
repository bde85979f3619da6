"""Opening the ledger's database: URL checks, migrations, transactions, chunked lookups.

A read-only open (preview, status) of a ledger that does not exist yet gets an empty
in-memory database with the same tables, never a file: every read works and finds nothing,
and nothing is created on disk by looking.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from funnelvalue.errors import LedgerError
from funnelvalue.ledger.driver import read_frame
from funnelvalue.ledger.engine import EMPTY_LEDGER, database_error, make_engine
from funnelvalue.ledger.locking import lock_for_migration
from funnelvalue.ledger.schema import MIGRATIONS, schema_migrations
from funnelvalue.ledger.staging import detach_parts

log = logging.getLogger(__name__)

LOOKUP_CHUNK = 10_000  # keys or lead ids per IN (...) lookup


def utcnow() -> datetime:
    """The ledger's clock: naive UTC, as every time is stored."""
    return datetime.now(UTC).replace(tzinfo=None)


class Database:
    """One open ledger database."""

    def __init__(self, engine: Engine, url: str, *, exists: bool) -> None:
        self.engine = engine
        self.url = url
        self.exists = exists  # False: the empty stand-in of a ledger not created yet
        self.created = False  # this open created the ledger (a new, empty one)

    @classmethod
    def open(cls, url: str, *, create: bool) -> Database:
        """Open and migrate; with ``create=False`` nothing is ever written."""
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise LedgerError(
                f"ledger URL '{url}' is not a database URL (e.g. sqlite:///state/funnelvalue.db "
                "or postgresql+psycopg://user@host/db)"
            ) from exc
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise LedgerError(
                f"ledger URL '{parsed.render_as_string()}': only SQLite and PostgreSQL are "
                "supported"
            )
        database = parsed.database
        if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
            path = Path(database)
            if not path.exists():
                if not create:
                    return cls.empty(url)
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise LedgerError(
                        f"cannot create the ledger's folder {path.parent}: {exc.strerror}"
                    ) from exc
        try:
            opened = cls(make_engine(url), url, exists=True)
            if create:
                opened.migrate()
            elif not inspect(opened.engine).has_table("conversions"):
                opened.close()
                return cls.empty(url)
        except SQLAlchemyError as exc:
            raise database_error(exc, parsed.render_as_string(), "cannot open the ledger") from exc
        except ModuleNotFoundError as exc:
            raise LedgerError(
                f"the database driver for {parsed.drivername} is not installed ({exc.name}); "
                "for PostgreSQL: pip install 'funnelvalue[postgres]'"
            ) from exc
        return opened

    @classmethod
    def empty(cls, url: str) -> Database:
        """An empty ledger in memory standing in for ``url``, which does not exist yet."""
        stand_in = cls(make_engine(EMPTY_LEDGER), url, exists=False)
        stand_in.migrate()
        return stand_in

    @property
    def where(self) -> str:
        """The ledger's URL without a password, for summaries and messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def sqlite_file(self) -> str | None:
        """The SQLite file's path when the ledger is one (the Arrow read path needs it)."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return str(url.database)
        return None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self, staged: bool = False) -> Iterator[Connection]:
        """A write transaction; refused on the stand-in, database errors in plain words.
        ``staged``: it reads staging files (staging.attached_parts), detached after it."""
        if not self.exists:
            raise LedgerError(f"the ledger at {self.where} was opened read-only and does not exist")
        try:
            if not staged:
                with self.engine.begin() as conn:
                    yield conn
                return
            with self.engine.connect() as conn:
                raw: Any = conn.connection.driver_connection
                try:
                    with conn.begin():
                        yield conn
                finally:
                    try:
                        detach_parts(raw)
                    except sqlite3.Error:
                        conn.invalidate()  # never back to the pool with a file attached
        except SQLAlchemyError as exc:
            raise database_error(exc, self.where, "ledger write failed") from exc

    def read(self, query: Any) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return read_frame(conn, query)

    def in_chunks(
        self, values: list[Any], query: Callable[[list[Any]], Any], size: int = LOOKUP_CHUNK
    ) -> list[Any]:
        """The rows of ``query(chunk)`` over ``values`` a chunk at a time: IN (...) lists stay
        within what every driver accepts."""
        found: list[Any] = []
        with self.engine.connect() as conn:
            for start in range(0, len(values), size):
                found.extend(conn.execute(query(values[start : start + size])).all())
        return found

    @staticmethod
    def insert(conn: Connection) -> Any:
        """The dialect's INSERT (both have ON CONFLICT DO UPDATE)."""
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert

    def migrate(self) -> list[str]:
        """Apply the migrations this database has not seen, all in one transaction that
        first takes the migration lock: a second process waits, then finds them applied."""
        applied: list[str] = []
        with self.engine.connect() as conn:
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                lock_for_migration(conn)
                schema_migrations.create(conn, checkfirst=True)
                done = set(conn.scalars(select(schema_migrations.c.name)))
                for name, step in MIGRATIONS:
                    if name in done:
                        continue
                    step(conn)
                    conn.execute(schema_migrations.insert().values(name=name, applied_at=utcnow()))
                    log.log(
                        logging.INFO if self.exists else logging.DEBUG,
                        "ledger migration %s applied",
                        name,
                    )
                    applied.append(name)
        self.created = self.exists and "0001_initial" in applied
        return applied
