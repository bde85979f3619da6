"""A run's life in the ledger, and everything it writes: each in one transaction.

``start`` opens the run; ``mark_pending`` writes what is about to go out, with everything
needed to send it again, *before* it goes; ``finish`` (or ``fail``) records the outcomes, the
rows left out, the watermark and the run's end together. A crash between any two of these
leaves "pending" rows, which the next run sends again under the same order ids (harmless), or
the outcome: never a conversion sent and forgotten.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, func, literal, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from funnelvalue.frames import arrow_text, member
from funnelvalue.ledger.database import Database, utcnow
from funnelvalue.ledger.driver import CHUNK, bulk_write
from funnelvalue.ledger.engine import database_error
from funnelvalue.ledger.locking import holder_info
from funnelvalue.ledger.requests import record_submitted
from funnelvalue.ledger.schema import conversions, rejected_rows, runs, watermarks
from funnelvalue.ledger.staging import (
    Staged,
    attached_parts,
    drop_stale,
    staged,
    worth_staging,
)
from funnelvalue.vocabulary import DONE, PAYLOAD, REJECT_COLUMNS, Outcome, Restatement, RunStatus


class RunBook:
    def __init__(self, db: Database) -> None:
        self._db = db

    def start(
        self, command: str, source: str, destination: str, customer_id: str
    ) -> tuple[int, list[int]]:
        """Open a run (with the account's lock held); earlier runs of the account still marked
        running were killed: mark them interrupted. Other accounts' runs are left alone."""
        holder = holder_info()
        drop_stale(self._db.sqlite_file, customer_id)  # a killed run's staging files
        with self._db.tx() as conn:
            mine = (runs.c.customer_id == customer_id) | runs.c.customer_id.is_(None)
            running = runs.c.status == RunStatus.RUNNING
            stale = list(conn.scalars(select(runs.c.id).where(running, mine)))
            if stale:
                conn.execute(
                    update(runs)
                    .where(runs.c.id.in_(stale))
                    .values(
                        status=RunStatus.INTERRUPTED,
                        finished_at=utcnow(),
                        message="the process stopped before the run finished; its pending "
                        "conversions are sent by the next run",
                    )
                )
            run_id = conn.execute(
                runs.insert().values(
                    command=command,
                    status=RunStatus.RUNNING,
                    started_at=utcnow(),
                    source=source,
                    destination=destination,
                    customer_id=customer_id,
                    pid=holder["pid"],
                    host=holder["host"][:255],
                )
            ).inserted_primary_key
        assert run_id is not None
        return int(run_id[0]), stale

    def holder(self, customer_id: str) -> str:
        """The run that holds the account's lock, as the runs table says ("" if unknown)."""
        query = (
            select(runs.c.id, runs.c.started_at, runs.c.pid, runs.c.host)
            .where(runs.c.status == RunStatus.RUNNING, runs.c.customer_id == customer_id)
            .order_by(runs.c.id.desc())
            .limit(1)
        )
        try:
            with self._db.engine.connect() as conn:
                row = conn.execute(query).first()
        except SQLAlchemyError:  # only a description for the "locked" message
            return ""
        if row is None:
            return ""
        return (
            f"run #{row.id} started {row.started_at:%Y-%m-%d %H:%M:%S} UTC, "
            f"pid {row.pid} on {row.host}"
        )

    def mark_pending(self, run_id: int, batch: pd.DataFrame, destination: str) -> None:
        """Write the batch as pending, with its payload, before anything is sent."""
        if batch.empty:
            return
        with self._staged(batch) as rows, self._db.tx(rows.staging is not None) as conn:
            self._write_rows(conn, run_id, rows, destination, Outcome.PENDING, None)
            conn.execute(  # the destination's own name (e.g. with its account), for later polls
                update(runs)
                .where(runs.c.id == run_id)
                .values(summary={"pending": len(batch)}, destination=destination)
            )

    @contextmanager
    def staging_ahead(self, batch: pd.DataFrame) -> Iterator[StagingAhead]:
        """Start staging ``batch`` while the caller goes on: the rows a destination that
        knows its outcome first is about to write, staged while it writes them (900k
        conversions: the bulk load overlaps the import file's writing and publishing).
        ``finish`` and ``fail`` take it when their ``written`` rows are these conversions;
        the staging files go on the way out, used or not."""
        rows = _ledger_columns(batch)
        with self._stage(rows) as ready:
            yield StagingAhead(rows, ready)

    @contextmanager
    def _staged(
        self, batch: pd.DataFrame | None, ahead: StagingAhead | None = None
    ) -> Iterator[Staged]:
        """The batch's ledger columns, staged beside the database when it is large
        (staging.staged): started before the transaction that reads them part by part.
        ``ahead``: the same rows being staged already, when they are exactly these."""
        rows = _ledger_columns(batch)
        if ahead is not None and ahead.holds(rows):
            yield ahead.staged()
            return
        with self._stage(rows) as ready:
            yield ready

    def _staged_rejects(
        self, run_id: int, rejects: pd.DataFrame | None
    ) -> AbstractContextManager[Staged]:
        """The rejected rows' columns, staged like conversions when there are many (a
        first run of a big export rejects 50k rows: 0.11 s of binding, now on the staging
        thread while the conversions go in). In file order: they have no key to sort by."""
        if rejects is None or rejects.empty:
            return nullcontext(Staged(pd.DataFrame(columns=REJECT_COLUMNS)))
        frame = rejects[REJECT_COLUMNS]
        if not worth_staging(self._db.sqlite_file, len(frame)):  # no read for whose they are
            return nullcontext(Staged(frame))
        try:  # the account's name is in the files' names (drop_stale)
            with self._db.engine.connect() as conn:
                owner = conn.scalar(select(runs.c.customer_id).where(runs.c.id == run_id))
        except SQLAlchemyError as exc:
            raise database_error(exc, self._db.where, "ledger write failed") from exc
        return staged(self._db.sqlite_file, frame, owner or "", self._db.where)

    def _stage(self, rows: pd.DataFrame) -> AbstractContextManager[Staged]:
        owner = str(rows["customer_id"].iloc[0]) if len(rows) else ""
        return staged(self._db.sqlite_file, rows, owner, self._db.where)

    def _record_written(
        self,
        conn: Connection,
        run_id: int,
        written: tuple[pd.DataFrame, str, str] | None,
        rows: Staged,
    ) -> None:
        """Rows a destination wrote with the outcome known first (finish's ``written``, staged
        as ``rows``): each inserted once as written, and the run names where they went."""
        if written is None or written[0].empty:
            return
        _, destination, message = written
        self._write_rows(conn, run_id, rows, destination, Outcome.WRITTEN, message)
        conn.execute(update(runs).where(runs.c.id == run_id).values(destination=destination))

    def _write_rows(
        self,
        conn: Connection,
        run_id: int,
        rows: Staged,
        destination: str,
        status: Outcome,
        message: str | None,
    ) -> None:
        """Each row with its payload and ``status`` (inserted, or over an older row of the
        same key): an INSERT ... SELECT per staging file, else one executemany."""
        stmt = self._db.insert(conn)(conversions)
        done = status in DONE
        now = utcnow()
        stamp = now.isoformat(sep=" ") if conn.dialect.name == "sqlite" else now
        constants: dict[str, Any] = {
            "status": status.value,
            "destination": destination,
            "first_run_id": run_id,
            "last_run_id": run_id,
            "attempts": 1 if done else 0,
            "updated_at": stamp,
            **(
                {"message": message, "error_code": None, "retry_at": None, "sent_at": stamp}
                if done
                else {}
            ),
        }
        updated = [
            *PAYLOAD,
            "status",
            "destination",
            "last_run_id",
            "updated_at",
            *(["message", "error_code", "retry_at", "sent_at"] if done else []),
        ]

        def upsert(into: Any) -> Any:
            return into.on_conflict_do_update(
                index_elements=[conversions.c.key], set_={c: into.excluded[c] for c in updated}
            )

        if rows.staging is None:
            bulk_write(conn, upsert(stmt), rows.frame, **constants)
            return
        names = list(rows.frame.columns)
        for part in attached_parts(conn, rows):  # each file once loaded, in the keys' order
            source = select(*part, *[literal(v).label(k) for k, v in constants.items()]).where(
                text("true")
            )  # SQLite: INSERT ... SELECT ... ON CONFLICT needs a WHERE
            conn.execute(upsert(stmt.from_select([*names, *constants], source)))

    def finish(
        self,
        run_id: int,
        *,
        outcomes: pd.DataFrame,
        rejects: pd.DataFrame,
        watermark: tuple[str, pd.Timestamp] | None,
        summary: dict[str, Any],
        exit_code: int,
        restatements: pd.DataFrame | None = None,
        written: tuple[pd.DataFrame, str, str] | None = None,
        ahead: StagingAhead | None = None,
    ) -> None:
        """Record every outcome, the rejected rows, the watermark and the run, atomically.

        ``written``: (rows, destination, message) a destination wrote with the outcome known
        before anything left (the import file): each row is written once, as ``written``,
        instead of pending first and updated after (``outcomes`` then says nothing of them).
        ``ahead``: ``staging_ahead`` of those rows, used when they are exactly its rows.
        """
        now = utcnow()
        batch = written and written[0]
        with (
            self._staged(batch, ahead) as rows,
            self._staged_rejects(run_id, rejects) as refused,
            self._db.tx(rows.staging is not None or refused.staging is not None) as conn,
        ):
            self._record_written(conn, run_id, written, rows)
            _record_outcomes(conn, run_id, outcomes, now)
            if restatements is not None:
                _record_restatements(conn, run_id, restatements, now)
            _record_rejects(conn, run_id, refused)
            if watermark is not None:
                self._move_watermark(conn, run_id, *watermark, now)
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    status=RunStatus.FINISHED, finished_at=now, exit_code=exit_code, summary=summary
                )
            )

    def fail(
        self,
        run_id: int,
        exit_code: int,
        message: str,
        summary: dict[str, Any] | None = None,
        rejects: pd.DataFrame | None = None,
        outcomes: pd.DataFrame | None = None,
        status: RunStatus = RunStatus.FAILED,
        restatements: pd.DataFrame | None = None,
        written: tuple[pd.DataFrame, str, str] | None = None,
        ahead: StagingAhead | None = None,
    ) -> None:
        """Close a run that stopped early (``failed``, or ``interrupted`` by a signal) with
        what went through before the stop; its unsent rows stay pending for the next run.
        ``written``, ``ahead``: as for ``finish`` (rows written with their outcome known
        first)."""
        now = utcnow()
        batch = written and written[0]
        with (
            self._staged(batch, ahead) as rows,
            self._staged_rejects(run_id, rejects) as refused,
            self._db.tx(rows.staging is not None or refused.staging is not None) as conn,
        ):
            self._record_written(conn, run_id, written, rows)
            _record_rejects(conn, run_id, refused)
            if outcomes is not None:
                _record_outcomes(conn, run_id, outcomes, now)
            if restatements is not None:
                _record_restatements(conn, run_id, restatements, now)
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    status=status,
                    finished_at=now,
                    exit_code=exit_code,
                    message=message,
                    summary=summary,
                )
            )

    def watermark(self, source: str) -> pd.Timestamp | None:
        """The newest change already read from ``source`` (None: read it in full)."""
        query = select(watermarks.c.value).where(watermarks.c.source == source)
        with self._db.engine.connect() as conn:
            value = conn.scalar(query)
        return None if value is None else pd.Timestamp(value, tz="UTC")

    def _move_watermark(
        self, conn: Connection, run_id: int, source: str, value: pd.Timestamp, now: datetime
    ) -> None:
        stmt = self._db.insert(conn)(watermarks).values(
            source=source,
            value=value.tz_convert(None).to_pydatetime(),
            run_id=run_id,
            updated_at=now,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[watermarks.c.source],
                set_={"value": stmt.excluded.value, "run_id": run_id, "updated_at": now},
            )
        )


class StagingAhead:
    """Rows being staged on a thread (RunBook.staging_ahead), for the write that needs them."""

    def __init__(self, rows: pd.DataFrame, staged: Staged) -> None:
        self._rows = rows
        self._staged = staged

    def holds(self, rows: pd.DataFrame) -> bool:
        """Whether ``rows`` are the conversions staged (a subset, e.g. with some refused, is
        staged anew: the write inserts every staged row). Keys are unique in a run's batch:
        the same count, all of them staged, are the same rows (in the same order: at once)."""
        if len(rows) != len(self._rows):
            return False
        if arrow_text(rows["key"]).equals(arrow_text(self._rows["key"])):
            return True
        return bool(member(rows["key"], self._rows["key"]).all())

    def staged(self) -> Staged:
        """The staged rows: the write reads each part once loaded (and meets the staging's
        error, if it failed, where it needs the next part)."""
        return self._staged


def _ledger_columns(batch: pd.DataFrame | None) -> pd.DataFrame:
    frame = pd.DataFrame(columns=["key", *PAYLOAD]) if batch is None else batch
    return frame[["key", *PAYLOAD]]


def _record_restatements(
    conn: Connection, run_id: int, restatements: pd.DataFrame, now: datetime
) -> None:
    """A restated conversion now has its new value in the ledger (so it is not restated
    again); one that could not be restated keeps the old value and says why."""
    for row in restatements.to_dict("records"):
        values: dict[str, Any] = {"last_run_id": run_id, "updated_at": now}
        if row["status"] == Restatement.RESTATED:
            values.update(
                value=float(row["value"]),
                currency=row["currency"],
                error_code=None,
                message="value restated",
            )
        else:
            values.update(error_code=row["error_code"], message=row["message"])
        conn.execute(update(conversions).where(conversions.c.key == row["key"]).values(**values))


def _record_rejects(conn: Connection, run_id: int, rejects: Staged) -> None:
    """Rows that could not become conversions, with their reasons (never raw PII)."""
    if rejects.frame.empty:
        return
    if rejects.staging is None:
        bulk_write(conn, rejected_rows.insert(), rejects.frame, run_id=run_id)
        return
    names = [*rejects.frame.columns, "run_id"]
    for part in attached_parts(conn, rejects):
        source = select(*part, literal(run_id).label("run_id"))
        conn.execute(rejected_rows.insert().from_select(names, source))


def _record_outcomes(conn: Connection, run_id: int, outcomes: pd.DataFrame, now: datetime) -> None:
    """One UPDATE per distinct outcome (status, code, message, retry time), keys in chunks."""
    if outcomes.empty:
        return
    frame = outcomes.copy()
    frame["retry_at"] = frame["retry_at"].astype("datetime64[us, UTC]")
    if "request_id" not in frame.columns:
        frame["request_id"] = None
    destination = conn.scalar(select(runs.c.destination).where(runs.c.id == run_id)) or ""
    record_submitted(conn, run_id, destination, frame, now)
    groups = frame.fillna({"error_code": "", "message": "", "request_id": ""}).groupby(
        ["status", "error_code", "message", "retry_at", "request_id"], dropna=False, sort=False
    )["key"]
    pending_of_run = (conversions.c.last_run_id == run_id) & (
        conversions.c.status == Outcome.PENDING
    )
    single = groups.ngroups == 1 and conn.scalar(select(func.count()).where(pending_of_run)) == len(
        frame
    )
    for (status, code, message, retry_at, request_id), keys in groups:
        retry = pd.Timestamp(retry_at) if not pd.isna(retry_at) else None  # type: ignore[call-overload, arg-type]
        values: dict[str, Any] = {
            "status": status,
            "error_code": code or None,
            "message": message or None,
            "request_id": request_id or None,
            "retry_at": None if retry is None else retry.tz_convert(None).to_pydatetime(),
            "attempts": conversions.c.attempts + 1,
            "last_run_id": run_id,
            "updated_at": now,
        }
        if status in DONE:
            values["sent_at"] = now
        if single:  # the common case: every row of the run had the same outcome
            conn.execute(update(conversions).where(pending_of_run).values(**values))
            return
        key_list = keys.tolist()
        for start in range(0, len(key_list), CHUNK):
            chunk = key_list[start : start + CHUNK]
            conn.execute(update(conversions).where(conversions.c.key.in_(chunk)).values(**values))
