"""kill -9 at any moment leaves the ledger consistent; the next run finishes the job once."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from funnelvalue.ledger import Ledger
from funnelvalue.mapping import STARTER
from tests.conftest import REPO, funnel_rows, write_export

pytestmark = pytest.mark.slow


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNNELVALUE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def setup_project(tmp_path: Path, leads: int) -> list[str]:
    now = pd.Timestamp.now(tz="UTC").floor("s")
    write_export(tmp_path / "export.csv", funnel_rows(leads, now))
    (tmp_path / "mapping.yaml").write_text(STARTER.replace("Europe/Berlin", "UTC"))
    return [
        "run",
        "--input",
        "export.csv",
        "--mapping",
        "mapping.yaml",
        "--ledger",
        "sqlite:///state/ledger.db",
        "--output",
        "out/import.csv",
        "--json",
    ]


def order_ids_written(out_dir: Path) -> list[str]:
    ids: list[str] = []
    for path in sorted((out_dir / "runs").glob("import-*.csv")):
        with path.open(newline="") as handle:
            handle.readline()
            ids.extend(row["Order ID"] for row in csv.DictReader(handle))
    return ids


def run_cli(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """`python -m funnelvalue ARGS` in the project folder, to completion."""
    return subprocess.run(
        [sys.executable, "-m", "funnelvalue", *args],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def wait_for(marker: Path, process: subprocess.Popen[Any], seconds: float = 60) -> None:
    """Until a stalling destination writes ``marker`` (or the process ends, or time runs out)."""
    deadline = time.monotonic() + seconds
    while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)


def wait_until_running(
    database: Path, process: subprocess.Popen[Any], after: int, seconds: float = 60
) -> int:
    """Until the ledger shows a run newer than run #``after`` in progress (or the process
    ends, or time runs out): that run's id, else ``after``. A killed run stays marked
    running until the next one starts, hence the id."""
    deadline = time.monotonic() + seconds
    query = "SELECT max(id) FROM runs WHERE status = 'running' AND id > ?"
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.1)) as db:
                (newest,) = db.execute(query, (after,)).fetchone()
            if newest is not None:
                return int(newest)
        except sqlite3.Error:  # not created yet, or locked by the run's write
            pass
        time.sleep(0.01)
    return after


def finish_and_check(tmp_path: Path, args: list[str], expected: int) -> Ledger:
    done = run_cli(tmp_path, args)
    assert done.returncode == 0, done.stderr
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}")
    assert ledger.views.status_counts() == {"written": expected}
    rows = ledger.views.conversions_frame()
    assert rows["order_id"].is_unique
    assert set(order_ids_written(tmp_path / "out")) == set(rows["order_id"])
    again = run_cli(tmp_path, args)
    assert '"sent": 0' in again.stdout
    return ledger


def test_kill_during_upload_then_rerun_sends_the_pending_rows(
    open_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    args = setup_project(tmp_path, 200)
    expected = 200 + 100 + 20
    marker = tmp_path / "uploading"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.stalling_run", *args, "--destination", "stall"],
        cwd=tmp_path,
        env=environment(STALL_MARKER=str(marker)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(marker, process)
    assert marker.read_text() == str(expected)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)

    ledger = open_ledger(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}")
    assert ledger.views.status_counts() == {"pending": expected}  # consistent: all pending
    assert ledger.views.last_runs()[0].status == "running"
    ledger.close()

    ledger = finish_and_check(tmp_path, args, expected)
    runs = {r.id: r.status for r in ledger.views.last_runs()}
    assert runs[1] == "interrupted"
    assert runs[2] == "finished"


def test_kill_at_random_moments_never_loses_or_duplicates(
    open_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    """Killed while starting (times from the start), then at moments after the run opened
    in the ledger (times from then: a run of 32k conversions takes about a second, so
    fixed times alone could all land before it or after it)."""
    args = setup_project(tmp_path, 20_000)
    expected = 20_000 + 10_000 + 2_000
    database = tmp_path / "state" / "ledger.db"
    kills = [(0.3, False), (0.0, True), (0.15, True), (0.3, True), (0.6, True), (1.0, True)]
    newest_run = 0
    for delay, after_opening in kills:
        process = subprocess.Popen(
            [sys.executable, "-m", "funnelvalue", *args],
            cwd=tmp_path,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if after_opening:
            newest_run = wait_until_running(database, process, after=newest_run)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        if (tmp_path / "state" / "ledger.db").exists():
            ledger = open_ledger(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}")
            counts = ledger.views.status_counts()
            assert set(counts) <= {"pending", "written"}
            assert sum(counts.values()) in (0, expected)  # never a half-written batch
            ledger.close()
    ledger = finish_and_check(tmp_path, args, expected)
    statuses = [r.status for r in ledger.views.last_runs(20)]
    assert "interrupted" in statuses, statuses  # at least one kill landed mid-run
