"""The ledger: the single source of truth for "was this conversion already sent?".

SQLAlchemy Core over a SQLite file by default, PostgreSQL by URL. ``Ledger`` answers the
pipeline's questions about what it holds (the dedupe policy itself is ``dedupe``) and hands
out its parts: ``runs`` (a run's life and every write), ``requests`` (asynchronous requests)
and ``views`` (what status and the report read). Times are stored as naive UTC. Rows never
expire on their own: Google's click window is 90 days and forgetting a key earlier is how old
conversions get sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
from sqlalchemy import bindparam, func, literal_column, select, update

from funnelvalue.frames import member
from funnelvalue.ledger import dedupe
from funnelvalue.ledger.database import Database
from funnelvalue.ledger.driver import CHUNK, TODAY, load_keys, read_frame, read_sqlite_arrow
from funnelvalue.ledger.locking import RunLock, acquire
from funnelvalue.ledger.requests import RequestBook
from funnelvalue.ledger.runs import RunBook
from funnelvalue.ledger.schema import conversions
from funnelvalue.ledger.views import LedgerViews
from funnelvalue.vocabulary import DONE, PAYLOAD, UNSENT, Outcome

log = logging.getLogger(__name__)


class Ledger:
    """What was sent, when, with what outcome; plus run history and per-source watermarks."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.runs = RunBook(db)
        self.requests = RequestBook(db)
        self.views = LedgerViews(db)
        self._adopted: pd.DataFrame | None = None  # legacy rows re-keyed in memory (preview)

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Ledger:
        """Open (and migrate) the ledger. With ``create=False`` nothing is ever written: a
        ledger that does not exist is read as an empty one (what preview and status need)."""
        return cls(Database.open(url, create=create))

    @property
    def where(self) -> str:
        return self.db.where

    @property
    def exists(self) -> bool:
        return self.db.exists

    @property
    def created(self) -> bool:
        return self.db.created

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lock(self, customer_id: str) -> RunLock:
        """This account's run lock (LockedError when another run holds it)."""
        return acquire(self.db.engine, customer_id, lambda: self.runs.holder(customer_id))

    # -- what a run does with each conversion -------------------------------------------------

    def known(self, built: pd.DataFrame) -> pd.DataFrame:
        """dedupe.KNOWN_COLUMNS of the ledger's rows for the built conversions' keys."""
        nothing = pd.DataFrame(columns=dedupe.KNOWN_COLUMNS)
        if built.empty or (not self.db.exists and self._adopted is None):
            return nothing  # no ledger yet: nothing known
        customer_id = str(built["customer_id"].iloc[0])
        if self.knows_nothing_of(customer_id):
            return nothing  # a first run: no million-key join against an empty account
        return self._known(customer_id, built["key"])

    def knows_nothing_of(self, customer_id: str) -> bool:
        """Whether the ledger has no conversion of the account (nor any re-keyed in memory):
        its first run, every conversion built is new."""
        return self._adopted is None and not self._holds_any(customer_id)

    def classify(
        self,
        built: pd.DataFrame,
        now: pd.Timestamp,
        estimated: pd.Series | None = None,
        known: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Each built conversion's ledger ``state`` and ``ledger_order_id`` (dedupe.classify);
        ``known``: what ``known(built)`` returned, when the caller read it already."""
        if built.empty:
            return dedupe.classify(built, pd.DataFrame(columns=dedupe.KNOWN_COLUMNS), now)
        known = self.known(built) if known is None else known
        refused_keys = known.loc[known["status"] == Outcome.REJECTED, "key"]
        refused = None
        if len(refused_keys):
            mine = built["key"][member(built["key"], refused_keys)].tolist()
            refused = self._refused_payload(mine) if mine else None
        return dedupe.classify(built, known, now, refused, estimated)

    def _known(self, customer_id: str, keys: pd.Series) -> pd.DataFrame:
        """dedupe.KNOWN_COLUMNS of the ledger's rows for today's ``keys`` (plus, in a preview,
        the legacy rows re-keyed in memory). The keys go into a temporary table joined in the
        database: the cost follows today's input, not the account's history."""
        columns = [conversions.c[c] for c in ("key", "status", "value", "currency", "order_id")]
        mine = conversions.c.customer_id == customer_id
        joined = conversions.join(TODAY, TODAY.c.key == conversions.c.key)
        frame = None
        if (database := self.db.sqlite_file) is not None:
            never_null = func.coalesce(conversions.c.retry_at, "").label("retry_at")
            query = select(*columns, never_null).select_from(joined).where(mine)
            frame = read_sqlite_arrow(database, query, self.db.engine.dialect, keys)
        if frame is None:
            query = select(*columns, conversions.c.retry_at).select_from(joined).where(mine)
            with self.db.engine.connect() as conn:
                load_keys(conn, keys)
                frame = read_frame(conn, query)
                TODAY.drop(conn)
                conn.commit()
        retry = frame["retry_at"].replace("", None)
        frame["retry_at"] = pd.to_datetime(retry, format="ISO8601")
        if self._adopted is not None and not self._adopted.empty:
            frame = pd.concat([self._adopted, frame], ignore_index=True)
        return frame[dedupe.KNOWN_COLUMNS]

    def _refused_payload(self, keys: list[str]) -> pd.DataFrame:
        """What the rows Google refused were sent with (dedupe.FIX_COLUMNS)."""
        found = self.db.in_chunks(
            keys,
            lambda chunk: select(
                conversions.c.key, *[conversions.c[c] for c in dedupe.FIX_COLUMNS]
            ).where(conversions.c.key.in_(chunk)),
            size=CHUNK,
        )
        return pd.DataFrame(found, columns=["key", *dedupe.FIX_COLUMNS])

    def sent_keys(self, keys: list[str]) -> list[str]:
        """Which of ``keys`` went out (any done status): for rows past the lookback today."""
        return self._existing_keys(keys, done_only=True)

    def _existing_keys(self, keys: list[str], *, done_only: bool = False) -> list[str]:
        def query(chunk: list[str]) -> Any:
            found = select(conversions.c.key).where(conversions.c.key.in_(chunk))
            return found.where(conversions.c.status.in_(DONE)) if done_only else found

        found: list[str] = [row[0] for row in self.db.in_chunks(keys, query)]
        if self._adopted is not None and done_only:
            adopted = self._adopted[self._adopted["status"].isin(DONE)]
            found.extend(adopted.loc[adopted["key"].isin(keys), "key"])
        return found

    def _holds_any(self, customer_id: str, *, sent: bool = False) -> bool:
        """Whether the ledger has any row of the account (``sent``: any sent): one index
        probe, so a first run skips lookups that cost a join or a query per chunk."""
        if not self.db.exists:
            return False
        mine = conversions.c.customer_id == customer_id
        where = mine & conversions.c.status.in_(DONE) if sent else mine
        with self.db.engine.connect() as conn:
            return conn.execute(select(conversions.c.key).where(where).limit(1)).first() is not None

    def sent_of_leads(self, customer_id: str, leads: list[str]) -> pd.DataFrame:
        """lead_id, stage, value of every conversion sent (done) for these leads: what Google
        credits them already (the incremental value strategy subtracts it)."""
        if not leads or not self._holds_any(customer_id, sent=True):
            return pd.DataFrame(columns=["lead_id", "stage", "value"])
        found = self.db.in_chunks(
            leads,
            lambda chunk: select(
                conversions.c.lead_id, conversions.c.stage, conversions.c.value
            ).where(
                conversions.c.customer_id == customer_id,
                conversions.c.lead_id.in_(chunk),
                conversions.c.status.in_(DONE),
                conversions.c.action_identity != "",  # not a re-keyed duplicate kept as history
            ),
        )
        return pd.DataFrame(found, columns=["lead_id", "stage", "value"])

    def sent_under_other_action(self, fresh: pd.DataFrame) -> pd.DataFrame:
        """Of conversions about to go out as new, those whose lead and stage the ledger holds
        as sent under another action: a mapping edit that really moves a stage (Google counts
        them again, as conversions of the new action). Columns: key, stage, previous_action."""
        empty = pd.DataFrame(columns=["key", "stage", "previous_action"])
        customer_id = "" if fresh.empty else str(fresh["customer_id"].iloc[0])
        if fresh.empty or not self._holds_any(customer_id, sent=True):
            return empty
        leads = fresh["lead_id"].astype(str).unique().tolist()
        found = self.db.in_chunks(
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

    def due_elsewhere(
        self, customer_id: str, exclude: pd.Series, now: pd.Timestamp
    ) -> pd.DataFrame:
        """Pending or due rows that today's input no longer has: sent from the ledger's copy."""
        query = select(conversions.c.key, *[conversions.c[c] for c in PAYLOAD]).where(
            conversions.c.status.in_([*UNSENT, Outcome.RETRY_AFTER]),  # the index
            conversions.c.customer_id == customer_id,
            (conversions.c.status != Outcome.RETRY_AFTER)
            | (conversions.c.retry_at <= now.tz_convert(None).to_pydatetime()),
        )
        frame = self._payload_frame(query)
        if frame.empty:  # the usual day: nothing left over (isin on a million keys costs)
            return frame
        return frame[~member(frame["key"], exclude)].reset_index(drop=True)

    def written_since(
        self, customer_id: str, since: pd.Timestamp, destination: str | None = None
    ) -> pd.DataFrame:
        """Conversions written to an import file since ``since`` (oldest first), with what
        the file needs: for the rolling file a scheduled import fetches, and for export."""
        conditions = [
            conversions.c.customer_id == customer_id,
            conversions.c.status == Outcome.WRITTEN,
            conversions.c.sent_at >= since.tz_convert(None).to_pydatetime(),
        ]
        if destination is not None:
            conditions.append(conversions.c.destination == destination)
        # Oldest first; a run's rows in the order it wrote them. SQLite has that order for
        # free (rowid): sorting 900k rows by time and key cost ~1 s of every daily run.
        if self.db.engine.dialect.name == "sqlite":
            order: tuple[Any, ...] = (conversions.c.sent_at, literal_column("rowid"))
        else:
            order = (conversions.c.sent_at, conversions.c.conversion_time, conversions.c.key)
        if (database := self.db.sqlite_file) is not None:
            # Through Arrow (ADBC): the rolling file reads a week of rows every run, and the
            # DB-API's Python tuples cost seconds at a million. ADBC types a column by its
            # first rows, so nullable text goes as '' and comes back as missing.
            nullable = [c for c in PAYLOAD if conversions.c[c].nullable and c != "value"]
            columns = [
                func.coalesce(conversions.c[c], "").label(c) if c in nullable else conversions.c[c]
                for c in ("key", *PAYLOAD)
            ]
            query = select(*columns).where(*conditions).order_by(*order)
            frame = read_sqlite_arrow(database, query, self.db.engine.dialect)
            if frame is not None:
                for column in nullable:
                    frame[column] = frame[column].mask(frame[column] == "")
                return self._payload_frame(frame=frame)
        query = (
            select(conversions.c.key, *[conversions.c[c] for c in PAYLOAD])
            .where(*conditions)
            .order_by(*order)
        )
        return self._payload_frame(query)

    def _payload_frame(self, query: Any = None, frame: pd.DataFrame | None = None) -> pd.DataFrame:
        """The payload columns as the pipeline uses them (of ``query``, or of a ``frame``
        read already): times aware UTC, text as strings, values as floats."""
        frame = self.db.read(query) if frame is None else frame
        if frame.empty:
            frame = pd.DataFrame({c: pd.Series(dtype="string") for c in ["key", *PAYLOAD]})
        frame["conversion_time"] = pd.to_datetime(frame["conversion_time"]).dt.tz_localize("UTC")
        for column in ("key", *PAYLOAD):
            if column not in ("conversion_time", "value"):
                frame[column] = frame[column].astype("string")
        frame["value"] = frame["value"].astype("float64")
        return frame.reset_index(drop=True)

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
        stage or an action now written by id is recognised as already sent (the rule is
        dedupe.rekey_legacy). ``identify`` resolves the old labels (the destination knows
        how; unknown ones are left for a later run). A preview re-keys in memory only.
        Returns (rows adopted, labels that could not be resolved).
        """
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
        legacy = self.db.read(query)
        if legacy.empty:
            return 0, []
        labels = sorted(legacy["conversion_action"].astype(str).unique())
        identities = identify(labels)
        unresolved = [label for label in labels if label not in identities]
        adopted, superseded = dedupe.rekey_legacy(
            legacy, identities, customer_id, lambda keys: set(self._existing_keys(keys))
        )
        if adopted.empty and superseded.empty:
            return 0, unresolved
        if dry_run:
            self._adopted = pd.DataFrame(
                {
                    "key": adopted["new_key"].to_numpy(),
                    "status": adopted["status"].to_numpy(),
                    "value": adopted["value"].astype("float64").to_numpy(),
                    "currency": adopted["currency"].to_numpy(),
                    "retry_at": pd.to_datetime(adopted["retry_at"]).to_numpy(),
                    "order_id": adopted["order_id"].to_numpy(),
                }
            )
            return len(adopted), unresolved
        rekey = (
            update(conversions)
            .where(conversions.c.key == bindparam("old_key"))
            .values(key=bindparam("new_key"), action_identity=bindparam("identity"))
        )
        with self.db.tx() as conn:
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
