"""Large ledger writes go through staging files (Arrow bulk loads on a thread, each attached
and read by an INSERT ... SELECT once complete): they must store exactly what the executemany
path stores, leave no file behind, and a file a killed run left is removed by its account's
next run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect

from funnelvalue.destinations import registry as destinations
from funnelvalue.ledger import Ledger, driver, staging
from funnelvalue.ledger import engine as engine_module
from funnelvalue.ledger import runs as runs_module
from funnelvalue.pipeline import RunReport, execute
from funnelvalue.settings import Settings, load_settings
from tests.conftest import CUSTOMER, funnel_rows, write_export
from tests.fakes.destinations import FakeDestination

STAMPS = ["updated_at", "sent_at"]  # when the row was written: differs between two runs


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDestination]:
    destination = FakeDestination()
    monkeypatch.setitem(destinations.DESTINATIONS, "fake", lambda context: destination)
    return destination


def ledger_rows(url: str) -> pd.DataFrame:
    with Ledger.open(url) as ledger:
        rows = ledger.views.conversions_frame()
    return rows.drop(columns=STAMPS).sort_values("key").reset_index(drop=True)


def stage_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if ".stage-" in p.name}


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def staged_and_bound(
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    before: Callable[[], None] = lambda: None,
    **settings: Any,
) -> Iterator[tuple[str, Settings, RunReport]]:
    """The same run into two ledgers (folder/staged.db, folder/bound.db): its writes staged
    from the first row, then never staged (executemany). ``before`` runs before each."""
    for name, threshold in (("staged", 1), ("bound", 10**9)):
        monkeypatch.setattr(staging, "STAGE_FROM", threshold)
        run_settings = load_settings(ledger=f"sqlite:///{folder / f'{name}.db'}", **settings)
        before()
        yield name, run_settings, execute(run_settings, dry_run=False)


@pytest.mark.parametrize("destination", ["csv", "fake"])  # written at once / pending first
def test_staged_writes_store_what_executemany_stores(
    destination: str,
    fake: FakeDestination,
    tmp_path: Path,
    mapping_file: Callable[..., Path],
    now: pd.Timestamp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    export = write_export(tmp_path / "export.csv", funnel_rows(60, now))  # type: ignore[arg-type]
    mapping = mapping_file(timezone="UTC")
    found = {}
    used: list[bool] = []
    real = staging.staged

    @contextmanager
    def watched(*args: Any) -> Iterator[staging.Staged]:
        with real(*args) as rows:
            used.append(rows.staging is not None)
            yield rows

    monkeypatch.setattr(runs_module, "staged", watched)
    runs = staged_and_bound(
        monkeypatch,
        tmp_path,
        before=used.clear,
        mapping=mapping,
        input=export,
        destination=destination,
        output=tmp_path / "out" / "import.csv",  # the same words in both ledgers
    )
    for name, settings, report in runs:
        url = settings.ledger
        assert report.summary()["sent"] == 60 + 30 + 6
        assert any(used) == (name == "staged")  # the path under test was taken
        # Each row staged once: the import file's on a thread while it is written, the fake's
        # before they are sent (pending).
        assert used.count(True) == (name == "staged")
        found[name] = ledger_rows(url)
        assert stage_files(tmp_path) == set()
        assert tables(url) == {
            "schema_migrations",
            "runs",
            "conversions",
            "rejected_rows",
            "watermarks",
            "requests",
        }
        again = execute(settings, dry_run=False)  # and the ledger knows every row it staged
        assert again.summary()["sent"] == 0
    pd.testing.assert_frame_equal(found["staged"], found["bound"])
    assert set(found["staged"]["status"]) == {"written" if destination == "csv" else "uploaded"}
    assert found["staged"]["conversion_time"].notna().all()


@pytest.mark.parametrize("down", [False, True])  # finished / failed (rejects recorded both)
def test_staged_rejects_store_what_executemany_stores_in_file_order(
    down: bool,
    fake: FakeDestination,
    tmp_path: Path,
    mapping_file: Callable[..., Path],
    now: pd.Timestamp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sqlite3

    rows = funnel_rows(40, now)
    for n, row in enumerate(rows):
        if n % 3 == 0:
            row["gclid"] = ""  # not attributable: skipped
        if n % 7 == 0:
            row["stage"] = f"Stage {n}"  # unknown: invalid
    export = write_export(tmp_path / "export.csv", rows)  # type: ignore[arg-type]
    fake.unavailable = down
    found = {}
    runs = staged_and_bound(
        monkeypatch,
        tmp_path,
        mapping=mapping_file(timezone="UTC"),
        input=export,
        destination="fake",
    )
    for name, _, report in runs:
        assert len(report.rejects) > 10
        with sqlite3.connect(tmp_path / f"{name}.db") as connection:
            found[name] = connection.execute(
                "SELECT run_id, source_row, typeof(source_row), lead_id, crm_stage, stage,"
                " reason, reason_code, kind FROM rejected_rows ORDER BY id"
            ).fetchall()
        connection.close()
        assert stage_files(tmp_path) == set()
    assert found["staged"] == found["bound"]
    assert [r[1] for r in found["staged"]] == sorted(r[1] for r in found["staged"])
    assert {r[2] for r in found["staged"]} == {"integer"}


def test_a_staging_file_left_by_a_killed_run_is_removed_by_the_next_run_of_its_account(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger.open(url).close()
    (tmp_path / f".l.db.stage-{CUSTOMER}-dead.db").write_bytes(b"")
    (tmp_path / ".l.db.stage-9999999999-live.db").write_bytes(b"")  # another account's
    with Ledger.open(url) as ledger:
        ledger.runs.start("run", "csv:x", "csv:y", CUSTOMER)
    assert stage_files(tmp_path) == {".l.db.stage-9999999999-live.db"}


def test_a_locked_ledger_while_staging_is_try_later_and_sends_nothing(
    fake: FakeDestination,
    tmp_path: Path,
    mapping_file: Callable[..., Path],
    now: pd.Timestamp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process holds the ledger's write lock while the rows are staged: the write
    waits, then the run stops with exit 3 before anything is sent, and the staging file is
    gone; the next run sends everything once."""
    import subprocess
    import sys

    from funnelvalue.errors import EXIT_TRY_LATER, LedgerError

    monkeypatch.setattr(staging, "STAGE_FROM", 1)
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT", 0.2)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    settings = load_settings(
        mapping=mapping_file(timezone="UTC"),
        input=write_export(tmp_path / "export.csv", funnel_rows(20, now)),  # type: ignore[arg-type]
        destination="fake",
        ledger=url,
        output=tmp_path / "out" / "import.csv",
    )
    real = staging.staged
    calls: list[int] = []
    hold = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )

    @contextmanager
    def while_locked(*args: Any) -> Iterator[staging.Staged]:
        """Another process takes the write lock just before the bulk load; once, for
        mark_pending."""
        if calls:
            with real(*args) as rows:
                yield rows
            return
        calls.append(1)
        holder = subprocess.Popen(
            [sys.executable, "-c", hold, str(tmp_path / "l.db")], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            with real(*args) as rows:
                yield rows
        finally:
            holder.kill()
            holder.communicate()

    monkeypatch.setattr(runs_module, "staged", while_locked)
    with pytest.raises(LedgerError, match="locked by another process") as stopped:
        execute(settings, dry_run=False)  # the CLI says it and exits 3
    monkeypatch.setattr(runs_module, "staged", real)
    assert stopped.value.exit_code == EXIT_TRY_LATER
    assert fake.sent_keys == []
    assert stage_files(tmp_path) == set()
    again = execute(settings, dry_run=False)
    assert again.summary()["sent"] == 20 + 10 + 2
    assert len(fake.sent_keys) == len(set(fake.sent_keys)) == 32


def test_times_are_staged_as_sqlalchemy_itself_stores_them_in_sqlite() -> None:
    """The staging file and the executemany path share driver.sqlite_times: it must write
    what SQLAlchemy's DateTime writes (else a staged row would compare, sort and read back
    differently from one SQLAlchemy wrote), to the microsecond, from any zone."""
    from sqlalchemy import DateTime
    from sqlalchemy.dialects import sqlite

    times = pd.Series(
        pd.to_datetime(
            ["2026-11-02 13:30:05", "1969-12-31 23:59:59.5", "2026-03-29 01:59:59.000001", None],
            format="ISO8601",
            utc=True,
        )
    )
    dialect = sqlite.dialect()
    expected = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert expected is not None
    for zoned in (times, times.dt.tz_convert("Europe/Berlin"), times.astype("datetime64[ns, UTC]")):
        wanted = [
            None if pd.isna(t) else expected(t.tz_convert(None).to_pydatetime()) for t in times
        ]
        assert driver.sqlite_times(zoned).to_pylist() == wanted
        assert driver.driver_values(zoned, "sqlite").tolist() == wanted


def test_rows_are_staged_in_key_order_each_row_whole() -> None:
    """in_key_order sorts by key so the INSERT ... SELECT of each part appends to the
    ledger's key index; every other column must move with its key (a column taken in
    another order would give one conversion another's value), across chunks, parts and with
    nulls; at most ``parts`` parts of at least ``rows`` rows (the last may hold fewer)."""
    import random

    import pyarrow as pa

    keys = [f"k{n:05d}" for n in range(500)]
    random.Random(7).shuffle(keys)
    half = len(keys) // 2

    def chunked(values: list[Any], kind: pa.DataType) -> pa.ChunkedArray:
        return pa.chunked_array([values[:half], values[half:]], kind)

    table = pa.table(
        {
            "value": chunked([float(k[1:]) for k in keys], pa.float64()),
            "key": chunked(keys, pa.string()),
            "message": chunked([None if int(k[1:]) % 3 else k for k in keys], pa.string()),
        }
    )
    parts = list(staging.in_key_order(table, parts=8, rows=64))
    assert [len(p) for p in parts] == [64] * 7 + [52]
    assert [len(p) for p in staging.in_key_order(table, parts=3, rows=64)] == [167, 167, 166]
    ordered = pa.concat_tables(parts)
    assert ordered.column_names == ["value", "key", "message"]
    assert ordered["key"].to_pylist() == sorted(keys)
    for row in ordered.to_pylist():
        number = int(row["key"][1:])
        assert row["value"] == float(number)
        assert row["message"] == (None if number % 3 else row["key"])


def test_constant_columns_are_those_with_one_value_or_none_in_every_row() -> None:
    """Written as literals, so a column that differs anywhere (even past the first rows
    looked at, or by a missing cell) must never be one; the key never is."""
    import pyarrow as pa

    rows = 3_000
    table = pa.table(
        {
            "key": ["same"] * rows,
            "customer_id": ["123"] * rows,
            "value": [10.0] * rows,
            "phone": pa.nulls(rows, pa.string()),
            "currency": ["EUR"] * (rows - 1) + ["USD"],  # differs only in the last row
            "consent": ["GRANTED"] * (rows - 1) + [None],  # one missing cell
            "stage": ["lead", "won"] * (rows // 2),
        }
    )
    assert staging.constant_columns(table) == {"customer_id": "123", "value": 10.0, "phone": None}
    assert staging.constant_columns(table.slice(0, 0)) == {}
    # Nothing but constants (rejects of one row each way alike): one column stays loaded,
    # or the part would have no rows to select.
    same = table.select(["customer_id", "value"])
    assert staging.constant_columns(same) == {"value": 10.0}


def test_constant_columns_are_not_staged_and_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    monkeypatch.setattr(staging, "STAGE_FROM", 1)
    frame = pd.DataFrame(
        {
            "key": ["b", "a"],
            "customer_id": ["123", "123"],
            "hashed_phone": pd.Series([None, None], dtype="string"),
            "value": [2.0, 1.0],
        }
    )
    with staging.staged(str(tmp_path / "l.db"), frame, CUSTOMER, "test") as rows:
        assert rows.staging is not None
        [path] = list(rows.staging.parts())
        with sqlite3.connect(path) as connection:
            columns = [
                r[1] for r in connection.execute(f"PRAGMA table_info({staging.STAGE_TABLE})")
            ]
        connection.close()
        assert rows.staging.constants == {"customer_id": "123", "hashed_phone": None}
    assert columns == ["key", "value"]


def test_the_staging_files_hold_the_rows_in_key_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the INSERT ... SELECTs read (each file's rowid order, file after file) is the
    keys' order, whatever order the frame came in."""
    import sqlite3

    monkeypatch.setattr(staging, "STAGE_FROM", 1)
    monkeypatch.setattr(staging, "STAGE_PART_ROWS", 3)  # two files
    frame = pd.DataFrame({"key": ["c", "a", "d", "b"], "value": [3.0, 1.0, 4.0, 2.0]})
    found = []
    with staging.staged(str(tmp_path / "l.db"), frame, CUSTOMER, "test") as rows:
        assert rows.staging is not None
        files = list(rows.staging.parts())
        for path in files:
            with sqlite3.connect(path) as connection:
                found.append(
                    connection.execute(
                        f"SELECT key, value FROM {staging.STAGE_TABLE} ORDER BY rowid"
                    ).fetchall()
                )
            connection.close()
    assert found == [[("a", 1.0), ("b", 2.0), ("c", 3.0)], [("d", 4.0)]]
    assert stage_files(tmp_path) == set()


def test_a_part_is_read_while_the_next_is_loaded_and_everything_is_cleaned_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts are loaded on their own thread and each is handed over once complete (the
    writer does not wait for the whole); leaving early stops the loading after the part in
    hand and removes every file; a failed load reaches the writer after the parts before
    it."""
    import threading

    import pyarrow as pa

    monkeypatch.setattr(staging, "STAGE_FROM", 1)
    monkeypatch.setattr(staging, "STAGE_PART_ROWS", 1)
    real_load = staging._bulk_load
    loaded: list[str] = []
    gate = threading.Event()

    def gated(adbc: Any, path: Path, rows: pa.Table) -> None:
        loaded.append(threading.current_thread().name)
        if len(loaded) == 2:
            assert gate.wait(10)  # the second part waits until the first has been read
        if len(loaded) == 3 and fail:
            raise OSError("disk full")
        if len(loaded) == 3:
            third.set()
            assert stopped.wait(10)  # still loading when the writer leaves
        real_load(adbc, path, rows)

    real_stop = staging.Staging.stop
    stopped, third = threading.Event(), threading.Event()

    def stop(self: staging.Staging) -> None:
        real_stop(self)
        stopped.set()

    monkeypatch.setattr(staging, "_bulk_load", gated)
    monkeypatch.setattr(staging.Staging, "stop", stop)
    frame = pd.DataFrame({"key": ["a", "b", "c", "d"], "value": [1.0, 2.0, 3.0, 4.0]})
    fail = False
    with staging.staged(str(tmp_path / "l.db"), frame, CUSTOMER, "test") as rows:
        assert rows.staging is not None
        parts = rows.staging.parts()
        assert next(parts).exists()  # while the second part is still loading
        gate.set()
        assert next(parts).exists()
        assert third.wait(10)
        rows.staging.stop()  # as leaving does
        assert next(parts).exists()  # the third, loading when the writer stopped it
        with pytest.raises(RuntimeError, match="stopped before its last part"):
            next(parts)  # never an early end that looks like the whole
    assert set(loaded) == {"funnelvalue-staging"}
    assert len(loaded) == 3  # stopped: the part being loaded is finished, the fourth never
    assert stage_files(tmp_path) == set()

    loaded.clear()
    gate.set()
    fail = True
    with staging.staged(str(tmp_path / "l.db"), frame, CUSTOMER, "test") as rows:
        assert rows.staging is not None
        parts = rows.staging.parts()
        assert next(parts).exists()
        assert next(parts).exists()
        with pytest.raises(OSError, match="disk full"):
            next(parts)
    assert stage_files(tmp_path) == set()


@pytest.fixture
def payload(mapping_file: Callable[..., Path], now: pd.Timestamp) -> pd.DataFrame:
    from funnelvalue.conversions import build
    from funnelvalue.leads import normalise
    from funnelvalue.mapping import load_mapping
    from funnelvalue.order_ids import order_ids
    from tests.conftest import HEADER

    mapping = load_mapping(mapping_file(timezone="UTC"))
    frame = pd.DataFrame(funnel_rows(10, now), columns=HEADER).astype("string")
    built = build(normalise(frame, timezone="UTC"), mapping, now, CUSTOMER).conversions
    return built.assign(order_id=order_ids(built["key"]))


def finish_written(
    ledger: Ledger, rows: pd.DataFrame, ahead: runs_module.StagingAhead | None
) -> None:
    from funnelvalue.destinations.base import outcomes

    run_id, _ = ledger.runs.start("run", "csv:x", "csv:out", CUSTOMER)
    ledger.runs.finish(
        run_id,
        outcomes=outcomes(rows["key"].iloc[:0], "written"),
        rejects=pd.DataFrame(),
        watermark=None,
        summary={},
        exit_code=0,
        written=(rows, "csv:out", "written to out"),
        ahead=ahead,
    )


def test_rows_staged_ahead_are_the_rows_written_and_a_subset_is_staged_anew(
    tmp_path: Path, payload: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import file's rows are staged on a thread while it is written: finish uses that
    file when its rows are those conversions (staged once), stores what the synchronous
    path stores, and stages anew when only some of them were written (the staged file holds
    them all, and every staged row is inserted)."""
    monkeypatch.setattr(staging, "STAGE_FROM", 1)
    staged_lengths: list[int] = []
    real = staging.staged

    def counted(database: str | None, frame: pd.DataFrame, *rest: Any) -> Any:
        staged_lengths.append(len(frame))
        return real(database, frame, *rest)

    monkeypatch.setattr(runs_module, "staged", counted)
    plain, ahead_url, subset_url = (f"sqlite:///{tmp_path / n}.db" for n in ("a", "b", "c"))
    with Ledger.open(plain) as ledger:
        finish_written(ledger, payload, None)
    assert staged_lengths == [len(payload)]
    staged_lengths.clear()
    shuffled = payload.sample(frac=1, random_state=3)  # the same conversions, another order
    with Ledger.open(ahead_url) as ledger, ledger.runs.staging_ahead(payload) as ahead:
        finish_written(ledger, shuffled, ahead)
    assert staged_lengths == [len(payload)]  # staged once, on the thread
    pd.testing.assert_frame_equal(ledger_rows(ahead_url), ledger_rows(plain))
    staged_lengths.clear()
    some = payload.iloc[: len(payload) // 2]
    with Ledger.open(subset_url) as ledger, ledger.runs.staging_ahead(payload) as ahead:
        finish_written(ledger, some, ahead)
    assert staged_lengths == [len(payload), len(some)]
    assert sorted(ledger_rows(subset_url)["key"]) == sorted(some["key"])
    assert stage_files(tmp_path) == set()


def test_a_failed_staging_ahead_is_a_ledger_error_and_nothing_is_written(
    tmp_path: Path, payload: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread's failure reaches the write that needs its file, as the synchronous path's
    would (a LedgerError: exit 3, try later); the run's rows are not recorded half."""
    from funnelvalue.errors import LedgerError

    monkeypatch.setattr(staging, "STAGE_FROM", 1)

    def broken(*args: Any) -> None:
        raise staging.database_error(OSError("disk I/O error"), "test", "staging")

    monkeypatch.setattr(staging, "_bulk_load", broken)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Ledger.open(url) as ledger, ledger.runs.staging_ahead(payload) as ahead:
        with pytest.raises(LedgerError, match="disk I/O error"):
            finish_written(ledger, payload, ahead)
        assert ledger.views.conversions_frame().empty
    assert stage_files(tmp_path) == set()


def test_a_ledger_unreadable_before_staging_rejects_is_a_ledger_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whose rejects they are is read before their files are named: a ledger that cannot be
    read then is the usual LedgerError (exit 3, try later), not an internal error."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from funnelvalue.destinations.base import outcomes
    from funnelvalue.errors import LedgerError
    from funnelvalue.vocabulary import REJECT_COLUMNS

    with Ledger.open(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        run_id, _ = ledger.runs.start("run", "csv:x", "csv:out", CUSTOMER)
        rejects = pd.DataFrame({c: ["x"] * 3 for c in REJECT_COLUMNS}).assign(source_row=[2, 3, 4])

        def locked(*args: object, **kwargs: object) -> None:
            raise OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))

        monkeypatch.setattr(staging, "STAGE_FROM", 1)  # staged: their owner is read first
        monkeypatch.setattr(ledger.db.engine, "connect", locked)
        with pytest.raises(LedgerError, match=r"ledger write failed.*locked"):
            ledger.runs.finish(
                run_id,
                outcomes=outcomes(pd.Series([], dtype="string"), "uploaded"),
                rejects=rejects,
                watermark=None,
                summary={},
                exit_code=0,
            )
