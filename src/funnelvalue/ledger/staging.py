"""Large ledger writes staged beside a SQLite ledger: rows bulk-loaded by ADBC into staging
files, each then read by one INSERT ... SELECT in the writing transaction.

Binding a million rows through the DB-API costs 12-15 s; an Arrow bulk load costs ~1 s. The
rows are sorted by key and loaded in parts, a file per part, on a thread of their own (Arrow
and SQLite's bulk load release the GIL): the write inserts a part as soon as its file is
complete, while the next one loads. 900k conversions into an empty ledger: 2.9 -> 2.0 s from
the start of staging to the commit, against one file loaded whole first.

The ledger file itself is never opened by ADBC (it links its own SQLite, whose locks this
process's connections would not see; sqlite.org/howtocorrupt.html 2.2), nor is a staging
file ever open in both libraries at once: a part is attached only after ADBC closed it.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Column, ColumnElement, Connection, MetaData, Table, literal

from funnelvalue.ledger.driver import sqlite_times
from funnelvalue.ledger.engine import database_error

STAGE_FROM = 5_000  # rows: below this, executemany costs less than staging files
STAGE_PART_ROWS = 100_000  # rows per staging file at least
STAGE_PARTS = 8  # staging files per write at most (each is attached to the writing connection)
STAGE_SCHEMA = "fv_stage"  # a staging file as attached: fv_stage<tag>_0, fv_stage<tag>_1, ...
STAGE_TABLE = "rows"
# A staging file is thrown away after the write (and by drop_stale after a crash): no
# journal, no syncs, big pages. 900k conversions: 1.4 -> 0.9 s.
STAGE_PRAGMAS = ("journal_mode = OFF", "synchronous = OFF", "page_size = 65536")


class Staging:
    """One frame's staging files, made on a thread (``make``) and read as each is complete
    (``parts``). ``stop`` ends the making early; ``remove`` deletes every file made."""

    def __init__(self, adbc: Any, prefix: Path, frame: pd.DataFrame, where: str) -> None:
        self._adbc = adbc
        self._prefix = prefix
        self._frame = frame
        self._where = where
        self._changed = threading.Condition()
        self._ready: list[Path] = []
        self._made: list[Path] = []
        self._done = False
        self._stopping = False
        self._error: BaseException | None = None
        # Columns with one value in every row (the account, often the currency, a column
        # nobody fills): written as literals, not loaded and read back 900k times.
        self.constants: dict[str, Any] = {}
        self.tag = uuid.uuid4().hex[:8]  # its files' schema names: two stagings in one write

    def make(self) -> None:
        """Load every part, in key order; an error is kept for ``parts`` to raise."""
        try:
            arrow = pa.table({c: _arrow_column(self._frame[c]) for c in self._frame.columns})
            # Set before the first part is ready, read by the writer only after it.
            self.constants = constant_columns(arrow)
            arrow = arrow.drop_columns(list(self.constants))
            keyed = "key" in arrow.column_names
            ordered = in_key_order(arrow, _parts_allowed(), STAGE_PART_ROWS)
            for part in ordered if keyed else iter([arrow]):
                with self._changed:
                    if self._stopping:  # a write reading on would miss rows: say so
                        self._error = RuntimeError("staging stopped before its last part")
                        return
                    path = self._prefix.with_name(f"{self._prefix.name}{uuid.uuid4().hex[:12]}.db")
                    self._made.append(path)
                _bulk_load(self._adbc, path, part)
                with self._changed:
                    self._ready.append(path)
                    self._changed.notify_all()
        except self._adbc.Error as exc:
            what = "ledger write failed (staging the rows)"
            self._failed(database_error(exc, self._where, what))
        except BaseException as exc:  # raised by parts(), in the writer's thread
            self._failed(exc)
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def _failed(self, error: BaseException) -> None:
        with self._changed:
            self._error = error

    def parts(self) -> Iterator[Path]:
        """Each staging file in key order, once ADBC has closed it; the staging's error, if
        it failed, where the write needs the next part."""
        for index in itertools.count():
            with self._changed:
                self._changed.wait_for(lambda: len(self._ready) > index or self._done)  # noqa: B023
                if index < len(self._ready):
                    path = self._ready[index]
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield path

    def stop(self) -> None:
        with self._changed:
            self._stopping = True

    def remove(self) -> None:
        for path in self._made:
            for leftover in (path, path.with_name(path.name + "-journal")):
                leftover.unlink(missing_ok=True)


@dataclass(frozen=True)
class Staged:
    """Rows to write, and their staging files when they were staged (a SQLite ledger, a
    large frame): the write is then an INSERT ... SELECT per file, not a million bound rows."""

    frame: pd.DataFrame
    staging: Staging | None = None


def worth_staging(database: str | None, rows: int) -> bool:
    """Whether ``rows`` rows written to the ledger ``database`` go through staging files:
    a SQLite ledger (PostgreSQL: None) and enough of them to pay for the files."""
    return database is not None and rows >= STAGE_FROM


@contextmanager
def staged(database: str | None, frame: pd.DataFrame, owner: str, where: str) -> Iterator[Staged]:
    """``frame`` being staged beside the ledger ``database`` on a thread, its files deleted
    on the way out (the thread first finishes the part it is loading). Small frames,
    PostgreSQL and a missing ADBC driver get Staged(frame): the executemany path.
    ``owner``: the account, in the file names, so that a killed run's files are removed by
    its account's next run (drop_stale)."""
    if not worth_staging(database, len(frame)):
        yield Staged(frame)
        return
    assert database is not None
    try:
        import adbc_driver_sqlite.dbapi as adbc
    except ImportError:
        yield Staged(frame)
        return
    staging = Staging(adbc, _stage_folder(database) / _stage_prefix(database, owner), frame, where)
    thread = threading.Thread(target=staging.make, name="funnelvalue-staging")
    thread.start()
    try:
        yield Staged(frame, staging)
    finally:
        staging.stop()
        thread.join()
        staging.remove()


def attached_parts(conn: Connection, rows: Staged) -> Iterator[list[ColumnElement[Any]]]:
    """Each staging file of ``rows``, attached to ``conn`` inside its transaction (SQLite
    allows it), as what to select: each of the frame's columns, from the file, or as its
    literal value where it is a constant. Database.tx detaches the files after."""
    staging = rows.staging
    assert staging is not None
    raw: Any = conn.connection.driver_connection
    for number, path in enumerate(staging.parts()):
        schema = f"{STAGE_SCHEMA}{staging.tag}_{number}"
        raw.execute(f"ATTACH DATABASE ? AS {schema}", (str(path),))
        fixed = staging.constants
        loaded = [c for c in rows.frame.columns if c not in fixed]
        part = Table(STAGE_TABLE, MetaData(schema=schema), *[Column(c) for c in loaded])
        yield [literal(fixed[c]).label(c) if c in fixed else part.c[c] for c in rows.frame.columns]


def constant_columns(table: pa.Table) -> dict[str, Any]:
    """The columns with the same value, or nothing, in every row (never the key): a look
    at the first rows rules most columns out before any whole column is compared."""
    found: dict[str, Any] = {}
    for name in table.column_names:
        column = table[name]
        if name == "key" or not len(column) or 0 < column.null_count < len(column):
            continue
        if column.null_count:
            found[name] = None
            continue
        first = column[0]
        if all(pc.all(pc.equal(cells, first)).as_py() for cells in (column[:1000], column)):
            found[name] = first.as_py()
    if len(found) == table.num_columns:  # one column stays: a part without one has no rows
        found.pop(table.column_names[0], None)
    return found


def detach_parts(raw: Any) -> None:
    """Every staging file attached to the raw SQLite connection ``raw`` (outside a
    transaction: a file read in one stays locked until it ends)."""
    names = [row[1] for row in raw.execute("PRAGMA database_list").fetchall()]
    for name in names:
        if name.startswith(STAGE_SCHEMA):
            raw.execute(f"DETACH DATABASE {name}")


def in_key_order(table: pa.Table, parts: int, rows: int) -> Iterator[pa.Table]:
    """``table``'s rows sorted by key, in at most ``parts`` consecutive parts of at least
    ``rows`` rows: the INSERT ... SELECT of each then appends to the ledger's key index
    rather than landing in it at random (900k conversions into an empty ledger: 5.1-6.9 ->
    2.9-4.0 s; SQLite's own ORDER BY sorted whole rows and cost more than it saved). A part
    at a time, the sorted copy is never whole (a first run stages while it writes the
    import file: its peak 1.22 -> 1.05 GB)."""
    order = pc.sort_indices(table["key"])
    size = max(rows, -(-len(order) // parts), 1)
    for start in range(0, len(order), size):
        yield table.take(order[start : start + size])


def drop_stale(database: str | None, owner: str) -> None:
    """Staging files a killed run of this account left behind (its lock is held now)."""
    if database is None:
        return
    for leftover in _stage_folder(database).glob(f"{_stage_prefix(database, owner)}*"):
        leftover.unlink(missing_ok=True)


def _bulk_load(adbc: Any, path: Path, rows: pa.Table) -> None:
    with adbc.connect(str(path), autocommit=True) as connection, connection.cursor() as cursor:
        for pragma in STAGE_PRAGMAS:  # set outside a transaction, or SQLite refuses
            cursor.execute(f"PRAGMA {pragma}")
            cursor.fetchall()
        cursor.adbc_ingest(STAGE_TABLE, rows, mode="create")


def _parts_allowed() -> int:
    """STAGE_PARTS, or fewer where this Python's SQLite attaches fewer databases."""
    probe = sqlite3.connect(":memory:")
    try:
        return max(1, min(STAGE_PARTS, probe.getlimit(sqlite3.SQLITE_LIMIT_ATTACHED) - 1))
    finally:
        probe.close()


def _stage_folder(database: str) -> Path:
    return Path(database).resolve().parent


def _stage_prefix(database: str, owner: str) -> str:
    return f".{Path(database).name}.stage-{owner}-"


def _arrow_column(series: pd.Series) -> pa.Array | pa.ChunkedArray:
    """A column as the SQLite dialect stores it: times as SQLAlchemy's text, missing as NULL."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return sqlite_times(series)
    if pd.api.types.is_float_dtype(series):
        return pa.array(series.to_numpy(dtype="float64"), pa.float64())
    if pd.api.types.is_integer_dtype(series):
        return pa.array(series, pa.int64())
    return pa.array(series.astype(pd.StringDtype("pyarrow")), pa.string())
