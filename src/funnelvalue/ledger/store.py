"""The ledger: the single source of truth for "was this conversion already sent?".

SQLAlchemy Core over a SQLite file by default, PostgreSQL by URL. A conversion is written as
``pending`` (with everything needed to send it again) before it goes out, and moved to its
outcome afterwards in the same transaction that closes the run, so a crash at any point leaves
either "pending" (sent again next run; the order_id makes the replay harmless) or the outcome.
Times are stored as naive UTC. Rows never expire on their own: Google's click window is 90 days
and forgetting a key earlier is how old conversions get sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, func, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from funnelvalue.errors import LedgerError
from funnelvalue.ledger.driver import CHUNK, bulk_write, read_frame, read_sqlite_arrow
from funnelvalue.ledger.engine import database_error
from funnelvalue.ledger.engine import make_engine as _engine
from funnelvalue.ledger.locking import RunLock, acquire, holder_info, lock_for_migration
from funnelvalue.ledger.schema import (
    MIGRATIONS,
    conversions,
    rejected_rows,
    requests,
    runs,
    schema_migrations,
    watermarks,
)

log = logging.getLogger(__name__)

# Ledger states of a built conversion, as preview shows them.
NEW = "new"
SENT = "already sent"
CHANGED = "value changed"
PENDING = "pending"
RETRY_DUE = "retry due"
RETRY_LATER = "retry later"
REJECTED_BEFORE = "rejected before"
FIXED = "fixed since rejected"
TO_SEND = frozenset({NEW, PENDING, RETRY_DUE, FIXED})

PAYLOAD = [
    "customer_id",
    "conversion_action",
    "action_identity",
    "lead_id",
    "stage",
    "order_id",
    "conversion_time",
    "value",
    "currency",
    "click_id_kind",
    "click_id",
    "hashed_email",
    "hashed_phone",
    "consent",
]
# Statuses that mean "it went out; do not send it again". ``submitted``: an asynchronous
# destination accepted it and its outcome is not known yet; ``partial``: its request was
# confirmed with failures Google counted but did not attribute to rows.
# ``written``: in an import file, which Google has not necessarily fetched yet.
DONE = ("uploaded", "duplicate", "submitted", "partial", "written")
LOOKUP_CHUNK = 10_000  # keys or lead ids per IN (...) lookup
MAX_SUBMISSIONS = 3  # a request that fails as a whole is sent again at most this often


@dataclass(frozen=True)
class RunSummary:
    id: int
    command: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    summary: dict[str, Any]
    message: str | None


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Ledger:
    """What was sent, when, with what outcome; plus run history and per-source watermarks."""

    def __init__(self, engine: Engine | None, url: str) -> None:
        self._engine = engine
        self.url = url
        self.created = False  # this open created the ledger (a new, empty one)
        self._adopted: pd.DataFrame | None = None  # legacy rows re-keyed in memory (preview)

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Ledger:
        """Open (and migrate) the ledger. With ``create=False`` nothing is ever written: a
        missing SQLite file is read as an empty ledger (that is what preview needs)."""
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise LedgerError(
                f"ledger URL '{url}' is not a database URL "
                "(e.g. sqlite:///state/funnelvalue.db or "
                "postgresql+psycopg://user@host/db)"
            ) from exc
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise LedgerError(
                f"ledger URL '{parsed.render_as_string()}': only SQLite and "
                "PostgreSQL are supported"
            )
        database = parsed.database
        if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
            path = Path(database)
            if not path.exists():
                if not create:
                    return cls(None, url)
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise LedgerError(
                        f"cannot create the ledger's folder {path.parent}: {exc.strerror}"
                    ) from exc
        try:
            engine = _engine(url)
            ledger = cls(engine, url)
            if create:
                ledger.migrate()
            elif not inspect(engine).has_table("conversions"):
                engine.dispose()
                return cls(None, url)
        except SQLAlchemyError as exc:
            raise database_error(exc, parsed.render_as_string(), "cannot open the ledger") from exc
        except ModuleNotFoundError as exc:
            raise LedgerError(
                f"the database driver for {parsed.drivername} is not installed "
                f"({exc.name}); for PostgreSQL: pip install 'funnelvalue[postgres]'"
            ) from exc
        return ledger

    @property
    def where(self) -> str:
        """The ledger's URL without a password, for summaries and messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def exists(self) -> bool:
        return self._engine is not None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        if self._engine is None:
            raise LedgerError("the ledger was opened read-only and does not exist yet")
        try:
            with self._engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise database_error(exc, self.where, "ledger write failed") from exc

    def migrate(self) -> list[str]:
        """Apply the migrations this database has not seen, all in one transaction that
        first takes the migration lock: a second process waits, then finds them applied."""
        assert self._engine is not None
        applied: list[str] = []
        with self._engine.connect() as conn:
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
                    log.info("ledger migration %s applied", name)
                    applied.append(name)
        self.created = "0001_initial" in applied
        return applied

    def lock(self, customer_id: str) -> RunLock:
        """This account's run lock (LockedError when another run holds it)."""
        assert self._engine is not None
        return acquire(self._engine, customer_id, lambda: self._holder(customer_id))

    def _holder(self, customer_id: str) -> str:
        """The run that holds the account's lock, as the runs table says."""
        assert self._engine is not None
        try:
            with self._engine.connect() as conn:
                row = conn.execute(
                    select(runs.c.id, runs.c.started_at, runs.c.pid, runs.c.host)
                    .where(runs.c.status == "running", runs.c.customer_id == customer_id)
                    .order_by(runs.c.id.desc())
                    .limit(1)
                ).first()
        except SQLAlchemyError:
            return ""
        if row is None:
            return ""
        return (
            f"run #{row.id} started {row.started_at:%Y-%m-%d %H:%M:%S} UTC, "
            f"pid {row.pid} on {row.host}"
        )

    # -- runs ---------------------------------------------------------------------------

    def start_run(
        self, command: str, source: str, destination: str, customer_id: str
    ) -> tuple[int, list[int]]:
        """Open a run (with the account's lock held); earlier runs of the account still marked
        running were killed: mark them interrupted. Other accounts' runs are left alone."""
        holder = holder_info()
        with self._tx() as conn:
            mine = (runs.c.customer_id == customer_id) | runs.c.customer_id.is_(None)
            stale = list(conn.scalars(select(runs.c.id).where(runs.c.status == "running", mine)))
            if stale:
                conn.execute(
                    update(runs)
                    .where(runs.c.id.in_(stale))
                    .values(
                        status="interrupted",
                        finished_at=utcnow(),
                        message="the process stopped before the run finished; its pending "
                        "conversions are sent by the next run",
                    )
                )
            run_id = conn.execute(
                runs.insert().values(
                    command=command,
                    status="running",
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

    def fail_run(
        self,
        run_id: int,
        exit_code: int,
        message: str,
        summary: dict[str, Any] | None = None,
        rejects: pd.DataFrame | None = None,
        outcomes: pd.DataFrame | None = None,
        status: str = "failed",
    ) -> None:
        """Close a run that stopped early (``failed``, or ``interrupted`` by a signal); its
        unsent rows stay pending for the next run."""
        with self._tx() as conn:
            if rejects is not None:
                self._record_rejects(conn, run_id, rejects)
            if outcomes is not None:
                self._record_outcomes(conn, run_id, outcomes, utcnow())
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    status=status,
                    finished_at=utcnow(),
                    exit_code=exit_code,
                    message=message,
                    summary=summary,
                )
            )

    def last_runs(self, limit: int = 10) -> list[RunSummary]:
        if self._engine is None:
            return []
        with self._engine.connect() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit)).mappings()
            return [
                RunSummary(
                    id=r["id"],
                    command=r["command"],
                    status=r["status"],
                    started_at=r["started_at"],
                    finished_at=r["finished_at"],
                    exit_code=r["exit_code"],
                    summary=r["summary"] or {},
                    message=r["message"],
                )
                for r in rows
            ]

    def status_counts(self) -> dict[str, int]:
        if self._engine is None:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(conversions.c.status, func.count()).group_by(conversions.c.status)
            )
            return {str(status): int(count) for status, count in rows}

    # -- conversions --------------------------------------------------------------------

    def classify(self, built: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
        """Each built conversion's ledger ``state`` (NEW, SENT, CHANGED, ...) and the
        ``ledger_order_id`` it was sent with (NA when new): a replay or a restatement must
        use the order id Google already has, whatever today's key would hash to."""
        state = pd.Series(NEW, index=built.index, dtype="string")
        result = pd.DataFrame(
            {"state": state, "ledger_order_id": pd.Series(pd.NA, index=built.index, dtype="string")}
        )
        if self._engine is None or built.empty:
            return result
        known = self._known(built["customer_id"].iloc[0])
        if known.empty:
            return result
        position = pd.Index(known["key"]).get_indexer(built["key"])
        found = position >= 0
        merged = built[
            [
                "key",
                "value",
                "currency",
                "click_id",
                "hashed_email",
                "hashed_phone",
                "conversion_time",
            ]
        ].copy()
        for column in (
            "status_ledger",
            "value_ledger",
            "currency_ledger",
            "retry_at_ledger",
            "order_id_ledger",
        ):
            values = known[column].take(np.where(found, position, 0)).to_numpy()
            merged[column] = pd.Series(values, index=built.index).where(found)
        status = merged["status_ledger"]
        done = status.isin(DONE)
        changed = done & (
            ((merged["value"] - merged["value_ledger"]).abs() > 0.005)
            | (merged["currency"] != merged["currency_ledger"])
        )
        state[done] = SENT
        state[changed] = CHANGED
        state[status.isin(["pending", "failed"])] = PENDING
        retry = status == "retry_after"
        due = retry & (
            merged["retry_at_ledger"].isna() | (merged["retry_at_ledger"] <= now.tz_convert(None))
        )
        state[retry] = RETRY_LATER
        state[due] = RETRY_DUE
        rejected = status == "rejected"
        if rejected.any():
            state[rejected] = REJECTED_BEFORE
            state[rejected & self._payload_differs(merged[rejected])] = FIXED
        result["state"] = state
        result["ledger_order_id"] = merged["order_id_ledger"].astype("string")
        return result

    def _known(self, customer_id: str) -> pd.DataFrame:
        """key, status, value, currency, retry_at, order_id of every conversion sent for the
        customer (plus, in a preview, the legacy rows re-keyed in memory)."""
        assert self._engine is not None
        columns = [conversions.c[c] for c in ("key", "status", "value", "currency", "order_id")]
        mine = conversions.c.customer_id == customer_id
        url = self._engine.url
        frame = None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            never_null = func.coalesce(conversions.c.retry_at, "").label("retry_at")
            query = select(*columns, never_null).where(mine)
            frame = read_sqlite_arrow(str(url.database), query, self._engine.dialect)
        if frame is None:
            with self._engine.connect() as conn:
                frame = read_frame(conn, select(*columns, conversions.c.retry_at).where(mine))
        retry = frame["retry_at"].replace("", None)
        frame["retry_at"] = pd.to_datetime(retry, format="ISO8601")
        if self._adopted is not None and not self._adopted.empty:
            frame = pd.concat([self._adopted, frame], ignore_index=True)
        return frame.rename(columns=lambda c: c if c == "key" else f"{c}_ledger")

    # -- identity -----------------------------------------------------------------------

    def adopt_legacy(
        self,
        customer_id: str,
        identify: Callable[[list[str]], dict[str, str]],
        *,
        dry_run: bool,
    ) -> tuple[int, list[str]]:
        """Give rows written before migration 0003 the key of what Google counts.

        Their keys held mapping labels (``customer|action label|lead|stage name``); each is
        re-keyed to ``customer|action identity|lead`` and keeps its order_id, so a renamed
        stage or an action now written by id is recognised as already sent. ``identify``
        resolves the old labels (the destination knows how; unknown ones are left for a later
        run). Where two old rows become one conversion, the one sent first keeps the key; the
        other stays as history. A preview re-keys in memory only. Returns (rows adopted,
        labels that could not be resolved).
        """
        if self._engine is None:
            return 0, []
        query = select(
            conversions.c.key,
            conversions.c.conversion_action,
            conversions.c.lead_id,
            conversions.c.status,
            conversions.c.value,
            conversions.c.currency,
            conversions.c.retry_at,
            conversions.c.order_id,
            conversions.c.first_run_id,
        ).where(conversions.c.customer_id == customer_id, conversions.c.action_identity.is_(None))
        with self._engine.connect() as conn:
            legacy = read_frame(conn, query)
        if legacy.empty:
            return 0, []
        labels = sorted(legacy["conversion_action"].astype(str).unique())
        identities = identify(labels)
        unresolved = [label for label in labels if label not in identities]
        legacy["identity"] = legacy["conversion_action"].map(identities)
        legacy = legacy[legacy["identity"].notna()].copy()
        if legacy.empty:
            return 0, unresolved
        legacy["new_key"] = customer_id + "|" + legacy["identity"] + "|" + legacy["lead_id"]
        legacy["not_done"] = ~legacy["status"].isin(DONE)
        legacy = legacy.sort_values(["new_key", "not_done", "first_run_id", "key"])
        taken = set(self._existing_keys(legacy["new_key"].unique().tolist()))
        winner = ~legacy["new_key"].duplicated() & ~legacy["new_key"].isin(taken)
        adopted, superseded = legacy[winner], legacy[~winner]
        if dry_run:
            self._adopted = pd.DataFrame(
                {
                    "key": adopted["new_key"].to_numpy(),
                    "status": adopted["status"].to_numpy(),
                    "value": adopted["value"].astype("float64").to_numpy(),
                    "currency": adopted["currency"].to_numpy(),
                    "order_id": adopted["order_id"].to_numpy(),
                    "retry_at": pd.to_datetime(adopted["retry_at"]).to_numpy(),
                }
            )
            return len(adopted), unresolved
        rekey = (
            update(conversions)
            .where(conversions.c.key == bindparam("old_key"))
            .values(key=bindparam("new_key"), action_identity=bindparam("identity"))
        )
        with self._tx() as conn:
            if len(superseded):
                conn.execute(
                    update(conversions)
                    .where(conversions.c.key == bindparam("old_key"))
                    .values(action_identity=""),
                    [{"old_key": k} for k in superseded["key"]],
                )
            if len(adopted):
                conn.execute(
                    rekey,
                    [
                        {"old_key": old, "new_key": new, "identity": identity}
                        for old, new, identity in zip(
                            adopted["key"], adopted["new_key"], adopted["identity"], strict=True
                        )
                    ],
                )
        log.info(
            "ledger: %d conversions from before stable keys re-keyed (%d kept as history)",
            len(adopted),
            len(superseded),
        )
        return len(adopted), unresolved

    def _in_chunks(
        self, values: list[Any], query: Callable[[list[Any]], Any], size: int = LOOKUP_CHUNK
    ) -> list[Any]:
        """The rows of ``query(chunk)`` over ``values`` a chunk at a time: IN (...) lists stay
        within what every driver accepts."""
        assert self._engine is not None
        found: list[Any] = []
        with self._engine.connect() as conn:
            for start in range(0, len(values), size):
                found.extend(conn.execute(query(values[start : start + size])).all())
        return found

    def sent_keys(self, keys: list[str]) -> list[str]:
        """Which of ``keys`` went out (any done status): for rows past the lookback today."""
        return self._existing_keys(keys, done_only=True)

    def _existing_keys(self, keys: list[str], *, done_only: bool = False) -> list[str]:
        if self._engine is None:
            return []

        def query(chunk: list[str]) -> Any:
            found = select(conversions.c.key).where(conversions.c.key.in_(chunk))
            return found.where(conversions.c.status.in_(DONE)) if done_only else found

        found: list[str] = [row[0] for row in self._in_chunks(keys, query)]
        if self._adopted is not None and done_only:
            adopted = self._adopted[self._adopted["status"].isin(DONE)]
            found.extend(adopted.loc[adopted["key"].isin(keys), "key"])
        return found

    def sent_under_other_action(self, fresh: pd.DataFrame) -> pd.DataFrame:
        """Of conversions about to go out as new, those whose lead and stage the ledger holds
        as sent under another action: a mapping edit that really moves a stage (Google counts
        them again, as conversions of the new action). Columns: key, stage, previous_action."""
        empty = pd.DataFrame(columns=["key", "stage", "previous_action"])
        if self._engine is None or fresh.empty:
            return empty
        customer_id = str(fresh["customer_id"].iloc[0])
        leads = fresh["lead_id"].astype(str).unique().tolist()
        found = self._in_chunks(
            leads,
            lambda chunk: select(
                conversions.c.lead_id,
                conversions.c.stage,
                conversions.c.conversion_action,
                conversions.c.action_identity,
            ).where(
                conversions.c.customer_id == customer_id,
                conversions.c.lead_id.in_(chunk),
                conversions.c.status.in_(DONE),
                conversions.c.action_identity.is_not(None),
                conversions.c.action_identity != "",
            ),
        )
        if not found:
            return empty
        before = pd.DataFrame(
            found, columns=["lead_id", "stage", "previous_action", "previous_identity"]
        )
        now = fresh[["key", "lead_id", "stage", "action_identity"]].astype(str)
        joined = now.merge(before.astype(str), on=["lead_id", "stage"])
        moved = joined[joined["action_identity"] != joined["previous_identity"]]
        return moved.drop_duplicates("key")[["key", "stage", "previous_action"]]

    def _payload_differs(self, rows: pd.DataFrame) -> pd.Series:
        """For rows rejected before: did the identifier or the time change since (a fix)?"""
        assert self._engine is not None
        old = self._in_chunks(
            rows["key"].tolist(),
            lambda chunk: select(
                conversions.c.key,
                conversions.c.click_id,
                conversions.c.hashed_email,
                conversions.c.hashed_phone,
                conversions.c.conversion_time,
            ).where(conversions.c.key.in_(chunk)),
            size=CHUNK,
        )
        before = pd.DataFrame(
            old, columns=["key", "click_id", "hashed_email", "hashed_phone", "conversion_time"]
        ).set_index("key")
        now = rows.set_index("key")
        differs = pd.Series(False, index=now.index)
        for column in ("click_id", "hashed_email", "hashed_phone"):
            differs |= now[column].astype(object).fillna("") != before[column].reindex(
                now.index
            ).astype(object).fillna("")
        old_time = pd.to_datetime(before["conversion_time"].reindex(now.index)).dt.tz_localize(
            "UTC"
        )
        differs |= now["conversion_time"] != old_time
        return pd.Series(differs.to_numpy(), index=rows.index)

    def due_elsewhere(
        self, customer_id: str, exclude: pd.Series, now: pd.Timestamp
    ) -> pd.DataFrame:
        """Pending or due rows that today's input no longer has: sent from the ledger's copy."""
        query = select(conversions.c.key, *[conversions.c[c] for c in PAYLOAD]).where(
            conversions.c.status.in_(["pending", "failed", "retry_after"]),  # the index
            conversions.c.customer_id == customer_id,
            (conversions.c.status != "retry_after")
            | (conversions.c.retry_at <= now.tz_convert(None).to_pydatetime()),
        )
        frame = self._payload_frame(query)
        return frame[~frame["key"].isin(exclude)].reset_index(drop=True)

    def written_since(
        self, customer_id: str, since: pd.Timestamp, destination: str | None = None
    ) -> pd.DataFrame:
        """Conversions written to an import file since ``since`` (oldest first), with what
        the file needs: for the rolling file a scheduled import fetches, and for export."""
        query = (
            select(conversions.c.key, *[conversions.c[c] for c in PAYLOAD])
            .where(
                conversions.c.customer_id == customer_id,
                conversions.c.status == "written",
                conversions.c.sent_at >= since.tz_convert(None).to_pydatetime(),
            )
            .order_by(conversions.c.sent_at, conversions.c.conversion_time, conversions.c.key)
        )
        if destination is not None:
            query = query.where(conversions.c.destination == destination)
        return self._payload_frame(query)

    def _payload_frame(self, query: Any) -> pd.DataFrame:
        empty = pd.DataFrame({c: pd.Series(dtype="string") for c in ["key", *PAYLOAD]})
        empty["conversion_time"] = pd.Series(dtype="datetime64[us, UTC]")
        empty["value"] = pd.Series(dtype="float64")
        if self._engine is None:
            return empty
        with self._engine.connect() as conn:
            frame = read_frame(conn, query)
        if frame.empty:
            return empty
        frame["conversion_time"] = pd.to_datetime(frame["conversion_time"]).dt.tz_localize("UTC")
        for column in ("key", *PAYLOAD):
            if column not in ("conversion_time", "value"):
                frame[column] = frame[column].astype("string")
        frame["value"] = frame["value"].astype("float64")
        return frame.reset_index(drop=True)

    def mark_pending(self, run_id: int, batch: pd.DataFrame, destination: str) -> None:
        """Write the batch as pending, with its payload, before anything is sent."""
        if batch.empty:
            return
        with self._tx() as conn:
            stmt = self._insert(conn)(conversions)
            stmt = stmt.on_conflict_do_update(
                index_elements=[conversions.c.key],
                set_={
                    c: stmt.excluded[c]
                    for c in [*PAYLOAD, "status", "destination", "last_run_id", "updated_at"]
                },
            )
            now = utcnow()
            bulk_write(
                conn,
                stmt,
                batch[["key", *PAYLOAD]],
                status="pending",
                destination=destination,
                first_run_id=run_id,
                last_run_id=run_id,
                attempts=0,
                updated_at=now.isoformat(sep=" ") if conn.dialect.name == "sqlite" else now,
            )
            conn.execute(  # the destination's own name (e.g. with its account), for later polls
                update(runs)
                .where(runs.c.id == run_id)
                .values(summary={"pending": len(batch)}, destination=destination)
            )

    @staticmethod
    def _insert(conn: Connection) -> Any:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert

    def finish_run(
        self,
        run_id: int,
        *,
        outcomes: pd.DataFrame,
        rejects: pd.DataFrame,
        watermark: tuple[str, pd.Timestamp] | None,
        summary: dict[str, Any],
        exit_code: int,
        restatements: pd.DataFrame | None = None,
    ) -> None:
        """Record every outcome, the rejected rows, the watermark and the run, atomically."""
        now = utcnow()
        with self._tx() as conn:
            self._record_outcomes(conn, run_id, outcomes, now)
            if restatements is not None:
                self._record_restatements(conn, run_id, restatements, now)
            self._record_rejects(conn, run_id, rejects)
            if watermark is not None:
                source, value = watermark
                stmt = self._insert(conn)(watermarks).values(
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
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(status="finished", finished_at=now, exit_code=exit_code, summary=summary)
            )

    @staticmethod
    def _record_restatements(
        conn: Connection, run_id: int, restatements: pd.DataFrame, now: datetime
    ) -> None:
        """A restated conversion now has its new value in the ledger (so it is not restated
        again); one that could not be restated keeps the old value and says why."""
        for row in restatements.to_dict("records"):
            values: dict[str, Any] = {"last_run_id": run_id, "updated_at": now}
            if row["status"] == "restated":
                values.update(
                    value=float(row["value"]),
                    currency=row["currency"],
                    error_code=None,
                    message="value restated",
                )
            else:
                values.update(error_code=row["error_code"], message=row["message"])
            conn.execute(
                update(conversions).where(conversions.c.key == row["key"]).values(**values)
            )

    @staticmethod
    def _record_rejects(conn: Connection, run_id: int, rejects: pd.DataFrame) -> None:
        """Rows that could not become conversions, with their reasons (never raw PII)."""
        if not rejects.empty:
            columns = ["source_row", "lead_id", "crm_stage", "stage", "reason", "reason_code"]
            columns += ["kind"]
            bulk_write(conn, rejected_rows.insert(), rejects[columns], run_id=run_id)

    @staticmethod
    def _record_outcomes(
        conn: Connection, run_id: int, outcomes: pd.DataFrame, now: datetime
    ) -> None:
        """One UPDATE per distinct outcome (status, code, message, retry time), keys in chunks."""
        if outcomes.empty:
            return
        frame = outcomes.copy()
        frame["retry_at"] = frame["retry_at"].astype("datetime64[us, UTC]")
        if "request_id" not in frame.columns:
            frame["request_id"] = None
        Ledger._record_requests(conn, run_id, frame, now)
        groups = frame.fillna({"error_code": "", "message": "", "request_id": ""}).groupby(
            ["status", "error_code", "message", "retry_at", "request_id"],
            dropna=False,
            sort=False,
        )["key"]
        single = groups.ngroups == 1 and conn.scalar(
            select(func.count()).where(
                conversions.c.last_run_id == run_id, conversions.c.status == "pending"
            )
        ) == len(frame)
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
                conn.execute(
                    update(conversions)
                    .where(conversions.c.last_run_id == run_id, conversions.c.status == "pending")
                    .values(**values)
                )
                return
            key_list = keys.tolist()
            for start in range(0, len(key_list), CHUNK):
                conn.execute(
                    update(conversions)
                    .where(conversions.c.key.in_(key_list[start : start + CHUNK]))
                    .values(**values)
                )

    @staticmethod
    def _record_requests(conn: Connection, run_id: int, frame: pd.DataFrame, now: datetime) -> None:
        """Each asynchronous request the outcomes name, as ``submitted``, with its size."""
        submitted = frame[frame["request_id"].notna() & (frame["status"] == "submitted")]
        if submitted.empty:
            return
        destination = conn.scalar(select(runs.c.destination).where(runs.c.id == run_id))
        for request_id, events in submitted.groupby("request_id").size().items():
            conn.execute(
                requests.insert().values(
                    request_id=str(request_id),
                    run_id=run_id,
                    destination=destination or "",
                    events=int(events),
                    status="submitted",
                    submitted_at=now,
                )
            )

    def open_requests(self, destination: str) -> list[str]:
        """Requests of ``destination`` whose outcome is not known yet, oldest first."""
        if self._engine is None:
            return []
        query = (
            select(requests.c.request_id)
            .where(requests.c.status == "submitted", requests.c.destination == destination)
            .order_by(requests.c.submitted_at)
        )
        with self._engine.connect() as conn:
            return list(conn.scalars(query))

    def confirm_requests(self, statuses: pd.DataFrame) -> dict[str, int]:
        """Record what an asynchronous destination says about its requests, atomically.

        ``statuses``: request_id, state (success | partial | failed | processing),
        error_counts ({reason: events}), message. Success: the rows are uploaded. Partial:
        the rows are ``partial`` with the request's counts (Google does not say which rows
        failed). Failed as a whole: the rows go back to pending and are sent again (at most
        MAX_SUBMISSIONS times; replays are harmless, the transaction id is the order id), or
        are ``duplicate`` when every failure was "already ingested". Returns requests per state.
        """
        counts: dict[str, int] = {}
        now = utcnow()
        with self._tx() as conn:
            for row in statuses.to_dict("records"):
                state = str(row["state"])
                counts[state] = counts.get(state, 0) + 1
                errors = {str(k): int(v) for k, v in (row.get("error_counts") or {}).items()}
                request = requests.c.request_id == row["request_id"]
                if state == "processing":
                    conn.execute(update(requests).where(request).values(checked_at=now))
                    continue
                conn.execute(
                    update(requests)
                    .where(request)
                    .values(status=state, checked_at=now, error_counts=errors or None)
                )
                mine = (conversions.c.request_id == row["request_id"]) & (
                    conversions.c.status == "submitted"
                )
                message = str(row.get("message") or "") or None
                if state == "success":
                    values: dict[str, Any] = {"status": "uploaded", "message": message}
                elif state == "partial":
                    values = {"status": "partial", "error_code": "PARTIAL_SUCCESS"}
                    values["message"] = message
                elif errors and set(errors) <= {"DUPLICATE_TRANSACTION_ID"}:
                    values = {"status": "duplicate", "message": "already in Google Ads"}
                else:
                    conn.execute(
                        update(conversions)
                        .where(mine, conversions.c.attempts >= MAX_SUBMISSIONS)
                        .values(
                            status="rejected",
                            error_code="REQUEST_FAILED",
                            message=f"failed {MAX_SUBMISSIONS} times: {message}",
                            updated_at=now,
                        )
                    )
                    values = {"status": "pending", "error_code": "REQUEST_FAILED"}
                    values["message"] = message
                conn.execute(update(conversions).where(mine).values(updated_at=now, **values))
        return counts

    def request_summary(self) -> dict[str, Any]:
        """Asynchronous requests per status, the unconfirmed events, the oldest open one, and
        the failure reasons Google counted."""
        if self._engine is None:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    requests.c.status,
                    func.count(),
                    func.sum(requests.c.events),
                    func.min(requests.c.submitted_at),
                ).group_by(requests.c.status)
            ).all()
            reasons: dict[str, int] = {}
            for (errors,) in conn.execute(
                select(requests.c.error_counts).where(requests.c.error_counts.is_not(None))
            ):
                for reason, events in (errors or {}).items():
                    reasons[reason] = reasons.get(reason, 0) + int(events)
        by_status = {str(s): {"requests": int(n), "events": int(e or 0)} for s, n, e, _ in rows}
        oldest = next((first for s, _, _, first in rows if s == "submitted"), None)
        return {
            "requests": by_status,
            "oldest_open": None if oldest is None else pd.Timestamp(oldest, tz="UTC").isoformat(),
            "failure_reasons": dict(sorted(reasons.items(), key=lambda item: -item[1])),
        }

    def destination_rejections(self) -> dict[str, int]:
        """How many conversions the destination rejected, per error code, most common first."""
        if self._engine is None:
            return {}
        query = (
            select(conversions.c.error_code, func.count())
            .where(conversions.c.status == "rejected")
            .group_by(conversions.c.error_code)
            .order_by(func.count().desc())
        )
        with self._engine.connect() as conn:
            return {str(code): int(count) for code, count in conn.execute(query)}

    def funnel_history(self, customer_id: str) -> pd.DataFrame:
        """Every conversion the ledger holds for the customer (no identifiers): lead, stage,
        when it was reached, its value and when it went out; for funnel statistics."""
        columns = ["lead_id", "stage", "reached_at", "value", "status", "sent_at"]
        if self._engine is None:
            return pd.DataFrame(columns=columns)
        query = select(
            conversions.c.lead_id,
            conversions.c.stage,
            conversions.c.conversion_time.label("reached_at"),
            conversions.c.value,
            conversions.c.status,
            conversions.c.sent_at,
        ).where(conversions.c.customer_id == customer_id)
        with self._engine.connect() as conn:
            frame = read_frame(conn, query)
        if frame.empty:
            return pd.DataFrame(columns=columns)
        for column in ("reached_at", "sent_at"):
            frame[column] = pd.to_datetime(frame[column]).dt.tz_localize("UTC")
        return frame

    def watermarks(self) -> dict[str, pd.Timestamp]:
        """Every source's watermark: the newest change already read from it."""
        if self._engine is None:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(select(watermarks.c.source, watermarks.c.value)).all()
        return {str(source): pd.Timestamp(value, tz="UTC") for source, value in rows}

    def watermark(self, source: str) -> pd.Timestamp | None:
        if self._engine is None:
            return None
        with self._engine.connect() as conn:
            value = conn.scalar(select(watermarks.c.value).where(watermarks.c.source == source))
        return None if value is None else pd.Timestamp(value, tz="UTC")

    def rejected_rows(self, run_id: int) -> pd.DataFrame:
        if self._engine is None:
            return pd.DataFrame()
        with self._engine.connect() as conn:
            rows = (
                conn.execute(
                    select(rejected_rows)
                    .where(rejected_rows.c.run_id == run_id)
                    .order_by(rejected_rows.c.id)
                )
                .mappings()
                .all()
            )
        return pd.DataFrame(rows)

    def conversions_frame(self) -> pd.DataFrame:
        """Every ledger row (tests and status use it; no raw PII is stored to leak)."""
        if self._engine is None:
            return pd.DataFrame()
        with self._engine.connect() as conn:
            return pd.DataFrame(conn.execute(select(conversions)).mappings().all())
