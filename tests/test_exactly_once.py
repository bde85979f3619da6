"""Exactly once, and never a false "success": identity, locks, exit codes, signals, faults."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from funnelvalue import pipeline
from funnelvalue.cli import app
from funnelvalue.errors import LedgerError, LockedError
from funnelvalue.ledger import Ledger
from funnelvalue.ledger.runs import RunBook
from funnelvalue.mapping import STARTER
from funnelvalue.settings import Settings, load_settings
from tests.conftest import CUSTOMER, funnel_rows, gclid, write_export
from tests.fakes.google_ads_server import ENABLED, UPLOAD_CLICKS, FakeGoogleAds
from tests.test_crash import environment, run_cli, wait_for

runner = CliRunner()


def starter(**changes: Any) -> dict[str, Any]:
    data = yaml.safe_load(STARTER)
    data.update(timezone="UTC", customer_id=CUSTOMER, **changes)
    return data


def write_mapping(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def csv_settings(tmp_path: Path, mapping_file: Callable[..., Path], ledger: str) -> Settings:
    """The export at tmp_path/export.csv to an import file, with the given ledger."""
    return load_settings(
        None,
        mapping=mapping_file(timezone="UTC"),
        input=tmp_path / "export.csv",
        ledger=ledger,
        output=tmp_path / "out" / "import.csv",
    )


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


# -- identity that survives mapping edits ------------------------------------------------


def _rename_stage(data: dict[str, Any], rng: random.Random) -> None:
    stage = rng.choice(data["stages"])
    stage["name"] = stage["name"] + "_renamed"


def _action_by_id(data: dict[str, Any], rng: random.Random) -> None:
    ids = {"CRM lead": "101", "CRM qualified": "102", "CRM won": "103"}
    for stage in data["stages"]:
        stage["conversion_action"] = ids.get(stage["conversion_action"], stage["conversion_action"])


def _action_by_resource(data: dict[str, Any], rng: random.Random) -> None:
    ids = {"CRM lead": "101", "CRM qualified": "102", "CRM won": "103", "101": "101"}
    stage = rng.choice(data["stages"])
    if stage["conversion_action"] in ids:
        number = ids[stage["conversion_action"]]
        stage["conversion_action"] = f"customers/{CUSTOMER}/conversionActions/{number}"


def _add_crm_value(data: dict[str, Any], rng: random.Random) -> None:
    rng.choice(data["stages"])["crm_values"].append("Some New CRM Value")


def _add_stage(data: dict[str, Any], rng: random.Random) -> None:
    if not any(s["conversion_action"] == "CRM meeting" for s in data["stages"]):
        stage = {"name": "meeting", "crm_values": ["Meeting Booked"]}
        # last, so no lead has skipped it (a stage in the middle is backfilled: new
        # conversions of a new action, which is right, but not what this test is about)
        data["stages"].append({**stage, "conversion_action": "CRM meeting", "value": 6000})


def _reorder(data: dict[str, Any], rng: random.Random) -> None:
    data["backfill_skipped_stages"] = False  # with backfill, the order is meaningful
    rng.shuffle(data["stages"])


EDITS = [_rename_stage, _action_by_id, _action_by_resource, _add_crm_value, _add_stage, _reorder]


@pytest.mark.parametrize("seed", range(4))
def test_mapping_edits_that_change_nothing_google_counts_resend_nothing(
    seed: int, tmp_path: Path, fake: FakeGoogleAds, use_fake_client: Callable[[], None]
) -> None:
    fake.actions[104] = ("CRM meeting", UPLOAD_CLICKS, ENABLED)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    write_export(tmp_path / "export.csv", funnel_rows(40, now))
    data = starter()
    mapping = write_mapping(tmp_path / "mapping.yaml", data)
    args = ["--input", "export.csv", "--mapping", str(mapping), "--destination", "google-ads"]
    code, output = cli("run", *args)
    assert code == 0, output
    accepted = dict(fake.accepted)
    assert len(accepted) == 40 + 20 + 4
    rng = random.Random(seed)
    for edit in rng.sample(EDITS, k=4):
        edit(data, rng)
        write_mapping(mapping, data)
        code, output = cli("preview", *args, "--json")
        assert code == 0, (edit.__name__, output)
        assert '"to_send": 0' in output, (edit.__name__, output)
        code, output = cli("run", *args, "--json")
        assert code == 0, (edit.__name__, output)
        assert '"sent": 0' in output, (edit.__name__, output)
    assert fake.accepted == accepted  # not one conversion more at Google


def test_moving_a_stage_to_another_action_is_shown_before_it_goes_out(
    tmp_path: Path, fake: FakeGoogleAds, use_fake_client: Callable[[], None]
) -> None:
    fake.actions[104] = ("CRM deal", UPLOAD_CLICKS, ENABLED)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    write_export(tmp_path / "export.csv", funnel_rows(20, now))
    data = starter()
    mapping = write_mapping(tmp_path / "mapping.yaml", data)
    args = ["--input", "export.csv", "--mapping", str(mapping), "--destination", "google-ads"]
    assert cli("run", *args)[0] == 0
    data["stages"][2]["conversion_action"] = "CRM deal"
    write_mapping(mapping, data)
    code, output = cli("preview", *args)
    assert code == 0
    assert "2 conversions of stage 'won' were sent under action 'CRM won' and would go out" in (
        " ".join(output.split())
    )
    assert fake.uploaded == 20 + 10 + 2  # the preview sent nothing


def test_a_ledger_from_before_stable_keys_keeps_every_order_id(
    tmp_path: Path, mapping_file: Callable[..., Path]
) -> None:
    """Rows keyed by labels (customer|action|lead|stage) are re-keyed, never re-sent."""
    now = pd.Timestamp.now(tz="UTC").floor("s")
    write_export(tmp_path / "export.csv", funnel_rows(10, now))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = csv_settings(tmp_path, mapping_file, url)
    first = pipeline.execute(settings, dry_run=False)
    assert first.summary()["sent"] == 10 + 5 + 1
    before = as_before_stable_keys(url)
    preview = pipeline.execute(settings, dry_run=True)
    assert preview.summary()["to_send"] == 0  # re-keyed in memory for the preview
    again = pipeline.execute(settings, dry_run=False)
    assert again.summary()["sent"] == 0
    with Ledger.open(url) as ledger:
        after = ledger.views.conversions_frame()
    assert dict(zip(after["lead_id"] + after["stage"], after["order_id"], strict=True)) == before
    assert after["key"].str.count(r"\|").eq(2).all()  # customer|action|lead


def test_a_conversion_sent_again_goes_under_the_order_id_the_ledger_has(
    tmp_path: Path, mapping_file: Callable[..., Path]
) -> None:
    """A pending row written before stable keys is sent again under its old order id, the
    one Google may already hold, never one computed from its new key."""
    now = pd.Timestamp.now(tz="UTC").floor("s")
    write_export(tmp_path / "export.csv", funnel_rows(10, now))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = csv_settings(tmp_path, mapping_file, url)
    pipeline.execute(settings, dry_run=False)
    before = as_before_stable_keys(url, status="pending")  # killed before it was recorded
    again = pipeline.execute(settings, dry_run=False)
    assert again.summary()["sent"] == 10 + 5 + 1
    sent = again.to_send
    assert dict(zip(sent["lead_id"] + sent["stage"], sent["order_id"], strict=True)) == before
    written = pd.read_csv(tmp_path / "out" / "import.csv", skiprows=1, dtype=str)
    assert set(written["Order ID"]) == set(before.values())


def as_before_stable_keys(url: str, status: str | None = None) -> dict[str, str]:
    """The ledger as the previous version wrote it (label keys customer|action|lead|stage,
    order ids hashed from them, no identity), optionally every row in ``status``: returns
    lead_id + stage -> order id."""
    engine = create_engine(url)
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT key, stage FROM conversions")).all()
        for key, stage in rows:
            old = f"{key}|{stage}"
            old_order = hashlib.sha256(old.encode()).hexdigest()[:24]
            conn.execute(
                text(
                    "UPDATE conversions SET key = :old, order_id = :order, action_identity = NULL, "
                    "status = coalesce(:status, status) WHERE key = :key"
                ),
                {"old": old, "order": old_order, "key": key, "status": status},
            )
        before = dict(
            conn.execute(text("SELECT lead_id || stage, order_id FROM conversions")).all()
        )
    engine.dispose()
    return before


# -- one run at a time ---------------------------------------------------------------------


def test_a_second_run_while_the_lock_is_held_exits_75(
    ledger_url: str, tmp_path: Path, mapping_file: Callable[..., Path]
) -> None:
    write_export(tmp_path / "export.csv", funnel_rows(5, pd.Timestamp.now(tz="UTC")))
    settings = csv_settings(tmp_path, mapping_file, ledger_url)
    holder = Ledger.open(ledger_url)
    try:
        run_id, _ = holder.runs.start("run", "csv:x", "csv:y", CUSTOMER)
        with holder.lock(CUSTOMER):
            with pytest.raises(LockedError, match=f"run #{run_id} started"):
                pipeline.execute(settings, dry_run=False)
            with holder.lock("9999999999"):  # another account is not blocked
                pass
        assert pipeline.execute(settings, dry_run=False).summary()["sent"] == 5 + 3 + 1
    finally:
        holder.close()


def project(tmp_path: Path, leads: int) -> list[str]:
    write_export(tmp_path / "export.csv", funnel_rows(leads, pd.Timestamp.now(tz="UTC")))
    (tmp_path / "mapping.yaml").write_text(STARTER.replace("Europe/Berlin", "UTC"))
    return ["run", "--input", "export.csv", "--mapping", "mapping.yaml", "--json"]


@pytest.mark.slow
def test_concurrent_runs_and_kill_9_while_holding_the_lock(tmp_path: Path) -> None:
    args = project(tmp_path, 30)
    marker = tmp_path / "uploading"
    first = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.stalling_run", *args, "--destination", "stall"],
        cwd=tmp_path,
        env=environment(STALL_MARKER=str(marker)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(marker, first)
    second = run_cli(tmp_path, args)
    assert second.returncode == 75, second.stderr
    assert "another run holds the lock for account 1234567890 (run #1" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    third = run_cli(tmp_path, args)
    assert third.returncode == 0, third.stderr  # the kernel dropped the dead run's lock
    assert '"sent": 48' in third.stdout


@pytest.mark.slow
def test_two_first_runs_on_a_new_ledger_do_not_race_the_migration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code = f"from funnelvalue.ledger import Ledger; Ledger.open({url!r}).close()"
    started = [
        subprocess.Popen([sys.executable, "-c", code], env=environment(), stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for process in started:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()


# -- signals -------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_mid_upload_records_what_was_acknowledged(tmp_path: Path) -> None:
    args = project(tmp_path, 40)  # 40 + 20 + 4 = 64 conversions, batches of 10
    marker = tmp_path / "accepted"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.stalling_run", *args, "--destination", "slow"],
        cwd=tmp_path,
        env=environment(STALL_MARKER=str(marker)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(marker, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM" in err
    acknowledged = set(marker.read_text().split())
    assert 10 <= len(acknowledged) < 64
    with Ledger.open(f"sqlite:///{tmp_path / 'state' / 'funnelvalue.db'}") as ledger:
        rows = ledger.views.conversions_frame()
        assert ledger.views.last_runs()[0].status == "interrupted"
    assert set(rows.loc[rows["status"] == "uploaded", "order_id"]) == acknowledged
    assert (rows["status"] == "pending").sum() == 64 - len(acknowledged)
    again = subprocess.run(
        [sys.executable, "-m", "tests.fakes.stalling_run", *args, "--destination", "slow"],
        cwd=tmp_path,
        env=environment(STALL_MARKER=str(marker)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert set(marker.read_text().split()).isdisjoint(acknowledged)  # only the rest went out


# -- exit codes ----------------------------------------------------------------------------


@pytest.fixture
def example(tmp_path: Path) -> Callable[[str], tuple[int, str]]:
    (tmp_path / "mapping.yaml").write_text(STARTER.replace("Europe/Berlin", "UTC"))

    def run(content: str, *extra: str) -> tuple[int, str]:
        (tmp_path / "export.csv").write_bytes(content.encode())
        return cli("run", "--input", "export.csv", "--mapping", "mapping.yaml", *extra)

    return run


HEAD = "lead_id,stage,stage_changed_at,gclid\n"


def test_every_row_invalid_is_exit_2_with_the_fix(example: Callable[..., Any]) -> None:
    code, output = example(HEAD + f"L1,New,28.10.2026 15:52,{gclid(1)}\n")
    assert code == 2
    assert "every row of the input is invalid" in output
    assert "set timestamp_format" in output


def test_a_header_without_rows_is_exit_2(example: Callable[..., Any]) -> None:
    code, output = example(HEAD)
    assert code == 2
    assert "has a header but no data rows" in output


def test_cr_only_line_ends_and_markup_in_stage_names_do_not_crash(
    example: Callable[..., Any],
) -> None:
    now = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(days=1)
    rows = f"L1,New,{now.isoformat()},{gclid(1)}\rL2,[/],{now.isoformat()},{gclid(2)}\r"
    code, output = example(HEAD.replace("\n", "\r") + rows)
    assert code == 1, output  # one sent, one unknown stage to fix
    assert "unknown CRM stage '[/]'" in " ".join(output.split())


def test_a_damaged_ledger_is_one_clear_error(example: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "funnelvalue.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    code, output = example(HEAD)
    assert code == 2
    assert ".recover" in output
    assert "Traceback" not in output


def test_an_internal_error_is_exit_70_with_a_crash_log(
    example: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "build", broken)
    code, output = example(HEAD + f"L1,New,2026-11-20 10:00:00,{gclid(1)}\n")
    assert code == 70
    logs = list((tmp_path / "state").glob("funnelvalue-crash-*.log"))
    assert len(logs) == 1
    assert "RuntimeError: a bug" in logs[0].read_text()
    assert str(logs[0].relative_to(tmp_path)) in " ".join(output.split())
    with Ledger.open(f"sqlite:///{tmp_path / 'state' / 'funnelvalue.db'}") as ledger:
        run = ledger.views.last_runs()[0]
    assert (run.status, run.exit_code) == ("failed", 70)


def test_outcomes_that_cannot_be_recorded_are_exit_3_not_nothing_sent(
    tmp_path: Path, mapping_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_export(tmp_path / "export.csv", funnel_rows(5, pd.Timestamp.now(tz="UTC")))
    settings = csv_settings(tmp_path, mapping_file, f"sqlite:///{tmp_path / 'l.db'}")

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise LedgerError("ledger write failed: database or disk is full", transient=True)

    monkeypatch.setattr(RunBook, "finish", disk_full)
    report = pipeline.execute(settings, dry_run=False)
    assert report.exit_code == 3
    assert report.error is not None
    assert report.error.startswith("sent, but the outcomes could not be recorded")
    monkeypatch.undo()
    again = pipeline.execute(settings, dry_run=False)  # pending: written again, same order ids
    assert again.summary()["sent"] == 5 + 3 + 1


def test_an_import_file_run_writes_each_ledger_row_once(
    tmp_path: Path, mapping_file: Callable[..., Path]
) -> None:
    """The import file's outcome is known before anything leaves: each row is inserted once
    as written, never inserted as pending and then updated (issue #15: 17% of a big run)."""
    write_export(tmp_path / "export.csv", funnel_rows(5, pd.Timestamp.now(tz="UTC")))
    settings = csv_settings(tmp_path, mapping_file, f"sqlite:///{tmp_path / 'l.db'}")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        statements.append(sql.split(None, 3)[0].upper() + " " + sql)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        report = pipeline.execute(settings, dry_run=False)
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert report.summary()["written"] == 9
    writes = [s for s in statements if " conversions" in s.lower()]
    assert [s.split()[0] for s in writes if s.startswith(("INSERT", "UPDATE"))] == ["INSERT"]
    with Ledger.open(settings.ledger) as ledger:
        rows = ledger.views.conversions_frame()
    assert set(rows["status"]) == {"written"}
    assert rows["sent_at"].notna().all()
    assert set(rows["attempts"]) == {1}
    assert rows["message"].str.startswith("written to ").all()


def test_an_import_file_written_but_not_published_is_still_recorded(
    tmp_path: Path, mapping_file: Callable[..., Path]
) -> None:
    """The run's own file went out; the fetched file could not be replaced (a symlink): the
    written rows are in the ledger all the same (nothing was marked pending for them), so the
    next run writes nothing twice and publishes them."""
    write_export(tmp_path / "export.csv", funnel_rows(3, pd.Timestamp.now(tz="UTC")))
    settings = csv_settings(tmp_path, mapping_file, f"sqlite:///{tmp_path / 'l.db'}")
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "elsewhere.csv").write_text("keep me")
    settings.output.symlink_to(tmp_path / "elsewhere.csv")
    report = pipeline.execute(settings, dry_run=False)
    assert report.exit_code == 2
    assert "symbolic link" in (report.error or "")
    with Ledger.open(settings.ledger) as ledger:
        assert ledger.views.status_counts() == {"written": 6}
    settings.output.unlink()
    again = pipeline.execute(settings, dry_run=False)
    assert again.exit_code == 0
    assert again.summary()["to_send"] == 0
    assert len(settings.output.read_text().splitlines()) == 2 + 6  # parameters, header, rows


# -- skipped is not invalid ----------------------------------------------------------------


def test_conversions_sent_young_never_come_back_as_problems(
    tmp_path: Path, mapping_file: Callable[..., Path]
) -> None:
    now = pd.Timestamp.now(tz="UTC").floor("s")
    write_export(tmp_path / "export.csv", funnel_rows(10, now))
    settings = csv_settings(tmp_path, mapping_file, f"sqlite:///{tmp_path / 'l.db'}")
    assert pipeline.execute(settings, dry_run=False, now=now).exit_code == 0
    later = pipeline.execute(settings, dry_run=False, now=now + pd.Timedelta(days=100))
    assert later.exit_code == 0
    assert later.summary()["aged_out"] == 16
    assert later.rejects.empty


def test_any_lead_id_works_and_an_absurd_one_is_one_invalid_row(
    ledger_url: str, tmp_path: Path, mapping_file: Callable[..., Path]
) -> None:
    now = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(days=1)
    long_id, absurd = "L" * 300, "X" * 5000
    rows = [
        {"lead_id": lead, "stage": "New", "stage_changed_at": now.isoformat(), "gclid": gclid(n)}
        for n, lead in enumerate([long_id, absurd, "L3"])
    ]
    write_export(tmp_path / "export.csv", rows)
    settings = csv_settings(tmp_path, mapping_file, ledger_url)
    report = pipeline.execute(settings, dry_run=False)
    assert report.summary()["sent"] == 2
    assert report.invalid["reason_code"].tolist() == ["lead_id_too_long"]
    assert report.exit_code == 1


def test_the_fetched_file_is_the_window_run_by_run_in_the_order_written(
    tmp_path: Path, mapping_file: Callable[..., Path]
) -> None:
    """Oldest run first, each run's rows as it wrote them; a rerun that writes nothing
    publishes the same bytes again."""
    now = pd.Timestamp.now(tz="UTC").floor("s")
    settings = csv_settings(tmp_path, mapping_file, f"sqlite:///{tmp_path / 'ledger.db'}")
    fetched = tmp_path / "out" / "import.csv"
    write_export(tmp_path / "export.csv", funnel_rows(6, now - pd.Timedelta(days=2)))
    first = pipeline.execute(settings, dry_run=False)
    write_export(tmp_path / "export.csv", funnel_rows(12, now - pd.Timedelta(days=2)))
    second = pipeline.execute(settings, dry_run=False)
    assert 0 < len(second.to_send) < len(first.to_send) + len(second.to_send)
    listed = pd.read_csv(fetched, skiprows=1, dtype=str)["Order ID"].tolist()
    assert listed == first.to_send["order_id"].tolist() + second.to_send["order_id"].tolist()
    published = fetched.read_bytes()
    assert pipeline.execute(settings, dry_run=False).summary()["written"] == 0
    assert fetched.read_bytes() == published
