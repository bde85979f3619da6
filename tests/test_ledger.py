from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect, select, text

from funnelvalue.conversions import build
from funnelvalue.destinations.base import outcomes
from funnelvalue.errors import LedgerError
from funnelvalue.leads import normalise
from funnelvalue.ledger import Ledger, dedupe, schema_migrations
from funnelvalue.mapping import Mapping
from funnelvalue.order_ids import order_ids
from funnelvalue.vocabulary import RunStatus
from funnelvalue.vocabulary import State as states
from tests.conftest import CUSTOMER, HEADER, funnel_rows


@pytest.fixture
def conversions(mapping: Mapping, now: pd.Timestamp) -> pd.DataFrame:
    frame = pd.DataFrame(funnel_rows(10, now), columns=HEADER).astype("string")
    built = build(normalise(frame, timezone="UTC"), mapping, now, CUSTOMER).conversions
    return built.assign(order_id=order_ids(built["key"]))


def test_migrations_are_recorded_and_applied_once(
    open_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    first = open_ledger(url)
    assert first.db.migrate() == []  # already applied by open()
    first.close()
    engine = create_engine(url)
    with engine.connect() as conn:
        assert list(conn.scalars(select(schema_migrations.c.name))) == [
            "0001_initial",
            "0002_async_requests",
            "0003_stable_identity",
            "0004_written_window",
            "0005_leaner_indexes",
        ]
    assert {"runs", "conversions", "rejected_rows", "watermarks", "requests"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_a_new_ledger_file_has_big_pages_and_an_old_one_keeps_its_own(
    open_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    import sqlite3

    from funnelvalue.ledger.engine import SQLITE_PAGE_SIZE

    def page_size(path: Path) -> int:
        with sqlite3.connect(path) as raw:
            return int(raw.execute("PRAGMA page_size").fetchone()[0])

    open_ledger(f"sqlite:///{tmp_path / 'new.db'}").close()
    assert page_size(tmp_path / "new.db") == SQLITE_PAGE_SIZE
    with sqlite3.connect(tmp_path / "old.db") as raw:  # made by an older funnelvalue
        raw.execute("PRAGMA page_size = 4096")
        raw.execute("CREATE TABLE kept (x)")
    old = open_ledger(f"sqlite:///{tmp_path / 'old.db'}")
    old.runs.start("run", "csv:x", "csv:y", CUSTOMER)
    old.close()
    assert page_size(tmp_path / "old.db") == 4096


def test_a_ledger_from_before_asynchronous_destinations_is_upgraded(
    ledger_url: str, open_ledger: Callable[..., Ledger], now: pd.Timestamp
) -> None:
    """A 0001-only ledger (no request_id, no requests table) gains both and keeps its rows."""
    ledger = open_ledger(ledger_url)
    run_id, _ = ledger.runs.start("run", "csv:x", "csv:y", CUSTOMER)
    ledger.close()
    engine = create_engine(ledger_url)
    with engine.begin() as conn:  # undo 0002 by hand: what an older funnelvalue left behind
        conn.execute(text("DROP INDEX ix_conversions_request"))
        conn.execute(text("ALTER TABLE conversions DROP COLUMN request_id"))
        conn.execute(text("DROP TABLE requests"))
        conn.execute(text("DELETE FROM schema_migrations WHERE name = '0002_async_requests'"))
    engine.dispose()

    upgraded = open_ledger(ledger_url)
    assert [r.id for r in upgraded.views.last_runs()] == [run_id]
    engine = create_engine(ledger_url)
    columns = {c["name"] for c in inspect(engine).get_columns("conversions")}
    assert "request_id" in columns
    assert "requests" in inspect(engine).get_table_names()
    engine.dispose()


def test_read_only_open_never_creates_anything(
    open_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'state' / 'l.db'}", create=False)
    assert not ledger.exists
    assert not (tmp_path / "state").exists()
    assert ledger.views.last_runs() == []


def test_bad_urls_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="not a database URL"):
        Ledger.open("state/funnelvalue.db")
    with pytest.raises(LedgerError, match="only SQLite and PostgreSQL"):
        Ledger.open("mysql://u@localhost/db")


def test_classify_pending_send_record_and_states(
    open_ledger: Callable[..., Ledger],
    ledger_url: str,
    conversions: pd.DataFrame,
    now: pd.Timestamp,
) -> None:
    ledger = open_ledger(ledger_url)
    assert set(ledger.classify(conversions, now)["state"]) == {states.NEW}
    run_id, stale = ledger.runs.start("run", "src", "dst", CUSTOMER)
    assert stale == []
    ledger.runs.mark_pending(run_id, conversions, "dst")
    assert set(ledger.classify(conversions, now)["state"]) == {states.PENDING}
    result = outcomes(conversions["key"], "uploaded", message="ok")
    keys = conversions["key"]
    result.loc[keys.index[0], ["status", "error_code"]] = ["rejected", "EXPIRED_EVENT"]
    result.loc[keys.index[1], "status"] = "retry_after"
    result.loc[keys.index[1], "retry_at"] = now + pd.Timedelta(hours=6)
    ledger.runs.finish(
        run_id,
        outcomes=result,
        rejects=pd.DataFrame(),
        watermark=("src", now),
        summary={"sent": 1},
        exit_code=0,
    )
    got = ledger.classify(conversions, now)["state"]
    assert got.iloc[0] == states.REJECTED_BEFORE
    assert got.iloc[1] == states.RETRY_LATER
    assert set(got.iloc[2:]) == {states.SENT}
    later = ledger.classify(conversions, now + pd.Timedelta(hours=7))["state"]
    assert later.iloc[1] == states.RETRY_DUE
    changed = conversions.copy()
    changed.loc[changed.index[2], "value"] += 1
    changed.loc[changed.index[0], "click_id"] = "Cj0KCQiAfixedfixedfixedfixed"
    got = ledger.classify(changed, now)["state"]
    assert got.iloc[2] == states.CHANGED
    assert got.iloc[0] == states.FIXED
    assert ledger.runs.watermark("src") == now
    rows = ledger.views.conversions_frame().set_index("key")
    assert rows.loc[keys.iloc[0], "error_code"] == "EXPIRED_EVENT"
    assert rows.loc[keys.iloc[2], "attempts"] == 1
    assert rows.loc[keys.iloc[2], "sent_at"] is not None
    assert ledger.views.last_runs()[0].status == "finished"
    ledger.close()


def test_a_run_reads_the_ledger_rows_of_its_own_keys_only(
    open_ledger: Callable[..., Ledger],
    ledger_url: str,
    conversions: pd.DataFrame,
    now: pd.Timestamp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """History that today's input does not touch is never read: today's keys go into a
    temporary table joined in the database (the cost follows today, not the account's age)."""
    ledger = open_ledger(ledger_url)
    history, today = conversions.iloc[:12], conversions.iloc[12:]
    run_id, _ = ledger.runs.start("run", "src", "dst", CUSTOMER)
    ledger.runs.mark_pending(run_id, conversions, "dst")
    ledger.runs.finish(
        run_id,
        outcomes=outcomes(conversions["key"], "uploaded"),
        rejects=pd.DataFrame(),
        watermark=None,
        summary={},
        exit_code=0,
    )
    read: list[int] = []
    original = dedupe.classify

    def spy(built: pd.DataFrame, known: pd.DataFrame, *args: object, **kw: object) -> pd.DataFrame:
        read.append(len(known))
        return original(built, known, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("funnelvalue.ledger.store.dedupe.classify", spy)
    fresh = today.assign(key=today["key"].where(today.index % 2 == 0, "new-" + today["key"]))
    states_now = ledger.classify(fresh, now)["state"]
    assert read == [int((fresh.index % 2 == 0).sum())]  # only today's keys, none of history
    assert len(history) > 0
    assert list(states_now) == [states.SENT if n % 2 == 0 else states.NEW for n in fresh.index]
    ledger.close()


def test_runs_left_running_are_marked_interrupted(
    open_ledger: Callable[..., Ledger], ledger_url: str
) -> None:
    ledger = open_ledger(ledger_url)
    crashed, _ = ledger.runs.start("run", "s", "d", CUSTOMER)
    _, stale = ledger.runs.start("run", "s", "d", CUSTOMER)
    assert stale == [crashed]
    assert ledger.views.last_runs()[1].status == "interrupted"


def test_due_rows_missing_from_input_come_from_the_ledger_copy(
    open_ledger: Callable[..., Ledger],
    ledger_url: str,
    conversions: pd.DataFrame,
    now: pd.Timestamp,
) -> None:
    ledger = open_ledger(ledger_url)
    run_id, _ = ledger.runs.start("run", "s", "d", CUSTOMER)
    ledger.runs.mark_pending(run_id, conversions, "d")
    rest = ledger.due_elsewhere(CUSTOMER, conversions["key"].iloc[3:], now)
    assert sorted(rest["key"]) == sorted(conversions["key"].iloc[:3])
    original = conversions.set_index("key").loc[rest["key"]]
    assert rest["conversion_time"].tolist() == original["conversion_time"].tolist()
    assert rest["click_id"].tolist() == original["click_id"].tolist()


def test_a_runs_row_says_how_it_ended_and_who_holds_the_lock(
    open_ledger: Callable[..., Ledger],
    ledger_url: str,
    conversions: pd.DataFrame,
    now: pd.Timestamp,
) -> None:
    ledger = open_ledger(ledger_url)
    first, _ = ledger.runs.start("run", "src", "dst", CUSTOMER)
    other, _ = ledger.runs.start("run", "src", "dst", "9999999999")  # another account
    holder = ledger.runs.holder(CUSTOMER)
    assert holder.startswith(f"run #{first} started ")
    assert f"pid {os.getpid()}" in holder
    assert ledger.runs.holder("5555555555") == ""  # nobody runs for that account
    ledger.runs.mark_pending(first, conversions, "dst")
    ledger.runs.finish(
        first,
        outcomes=outcomes(conversions["key"], "uploaded"),
        rejects=pd.DataFrame(),
        watermark=("src", now),
        summary={"sent": len(conversions)},
        exit_code=1,
    )
    ledger.runs.fail(
        other, 3, "Google is down", summary={"pending": 2}, status=RunStatus.INTERRUPTED
    )
    runs = {run.id: run for run in ledger.views.last_runs()}
    done, stopped = runs[first], runs[other]
    assert (done.status, done.exit_code, done.summary) == (
        "finished",
        1,
        {"sent": len(conversions)},
    )
    assert done.finished_at is not None
    assert (stopped.status, stopped.exit_code, stopped.message) == (
        "interrupted",
        3,
        "Google is down",
    )
    assert stopped.summary == {"pending": 2}
    assert stopped.finished_at is not None
    assert ledger.runs.holder(CUSTOMER) == ""  # finished: nobody holds it
    rows = ledger.views.conversions_frame()
    assert set(rows["last_run_id"]) == {first}
    with ledger.db.engine.connect() as conn:
        assert conn.execute(text("SELECT run_id FROM watermarks")).scalar() == first


def _plan(conn: Any, query: str) -> str:
    return " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}"))


def test_lookups_use_the_lean_indexes_and_an_older_ledger_gets_them(tmp_path: Path) -> None:
    """Three B-trees per inserted row besides the table (key, window, run), yet every lookup
    a run or a poll makes still finds an index; a ledger from before 0005 is upgraded."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger.open(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:  # what 0001-0004 left: full indexes and the status one
        for name in ("ix_conversions_request", "ix_conversions_legacy"):
            conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(
            text("CREATE INDEX ix_conversions_status ON conversions (status, customer_id)")
        )
        conn.execute(text("CREATE INDEX ix_conversions_request ON conversions (request_id)"))
        conn.execute(
            text("CREATE INDEX ix_conversions_legacy ON conversions (customer_id, action_identity)")
        )
        conn.execute(text("DELETE FROM schema_migrations WHERE name = '0005_leaner_indexes'"))
    Ledger.open(url).close()
    with engine.connect() as conn:
        found = {i["name"]: i for i in inspect(conn).get_indexes("conversions")}
        assert set(found) == {
            "ix_conversions_request",
            "ix_conversions_last_run",
            "ix_conversions_legacy",
            "ix_conversions_written",
        }
        sql = {
            name: conn.scalar(text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": name})
            for name in ("ix_conversions_request", "ix_conversions_legacy")
        }
        assert "WHERE request_id IS NOT NULL" in sql["ix_conversions_request"]
        assert "WHERE action_identity IS NULL" in sql["ix_conversions_legacy"]
        lookups = {
            "SELECT key FROM conversions WHERE request_id = 'r1'": "ix_conversions_request",
            "SELECT key FROM conversions WHERE customer_id = '1' AND action_identity IS NULL": (
                "ix_conversions_legacy"
            ),
            "SELECT key FROM conversions WHERE customer_id = '1' AND status IN ('pending', "
            "'held')": "ix_conversions_written",
            "SELECT key FROM conversions WHERE last_run_id = 3 AND status = 'pending'": (
                "ix_conversions_last_run"
            ),
        }
        for query, index in lookups.items():
            assert index in _plan(conn, query), query
    engine.dispose()
