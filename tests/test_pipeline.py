from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from funnelvalue.destinations import registry as destinations
from funnelvalue.errors import EXIT_INVALID_ROWS, EXIT_OK, EXIT_TRY_LATER, ConfigError
from funnelvalue.ledger import Ledger
from funnelvalue.pipeline import execute
from funnelvalue.settings import Settings, load_settings
from funnelvalue.sources import registry as sources
from funnelvalue.sources.base import Fetched
from funnelvalue.vocabulary import State as states
from tests.conftest import HEADER, funnel_rows, gclid, ts, write_export
from tests.fakes.destinations import FakeDestination


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDestination]:
    destination = FakeDestination()
    monkeypatch.setitem(destinations.DESTINATIONS, "fake", lambda context: destination)
    return destination


@pytest.fixture
def settings(tmp_path: Path, mapping_file: Callable[..., Path], ledger_url: str) -> Settings:
    return load_settings(
        mapping=mapping_file(timezone="UTC"),
        input=tmp_path / "export.csv",
        destination="fake",
        ledger=ledger_url,
        output=tmp_path / "out" / "import.csv",
    )


def test_second_run_on_the_same_input_sends_nothing(
    open_ledger: Callable[..., Ledger], settings: Settings, fake: FakeDestination, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(30, now))  # type: ignore[arg-type]
    first = execute(settings, dry_run=False)
    assert first.exit_code == EXIT_OK
    assert first.summary()["sent"] == 30 + 15 + 3
    second = execute(settings, dry_run=False)
    assert second.summary()["sent"] == 0
    assert second.summary()["already_sent"] == 48
    assert len(fake.sent_keys) == len(set(fake.sent_keys)) == 48
    ledger = open_ledger(settings.ledger)
    assert ledger.views.status_counts() == {"uploaded": 48}
    assert [r.status for r in ledger.views.last_runs()] == ["finished", "finished"]
    assert ledger.runs.watermark(f"csv:{settings.input}") is None  # an export is always read whole
    assert second.since is None


def test_preview_writes_nothing_and_knows_the_ledger(
    open_ledger: Callable[..., Ledger],
    settings: Settings,
    fake: FakeDestination,
    now: pd.Timestamp,
    tmp_path: Path,
) -> None:
    write_export(settings.input, funnel_rows(4, now))  # type: ignore[arg-type]
    report = execute(settings, dry_run=True)
    assert set(report.conversions["state"]) == {states.NEW}
    assert len(report.to_send) == 7
    assert not (tmp_path / "state").exists()
    assert fake.received == []
    execute(settings, dry_run=False)
    rows = funnel_rows(4, now)
    won = next(r for r in rows if r["stage"] == "Closed Won")
    won["amount"] = "5000"  # L0's won deal grew after it was sent
    rows.append({"lead_id": "L9", "stage": "New", "stage_changed_at": ts(now), "gclid": gclid(9)})
    write_export(settings.input, rows)  # type: ignore[arg-type]
    ledger = open_ledger(settings.ledger)
    before = (ledger.views.conversions_frame(), ledger.views.last_runs())
    report = execute(settings, dry_run=True)
    state = report.conversions.set_index(["lead_id", "stage"])["state"]
    assert state[("L9", "lead")] == states.NEW
    assert state[("L0", "won")] == states.CHANGED
    assert state[("L1", "lead")] == states.SENT
    assert ledger.views.conversions_frame().equals(before[0])
    assert ledger.views.last_runs() == before[1]


def test_changed_values_are_not_re_uploaded(
    settings: Settings, fake: FakeDestination, now: pd.Timestamp
) -> None:
    rows = funnel_rows(1, now)
    write_export(settings.input, rows)  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    rows[-1]["amount"] = "9999"
    write_export(settings.input, rows)  # type: ignore[arg-type]
    report = execute(settings, dry_run=False)
    assert report.summary()["value_changed"] == 1
    assert report.summary()["sent"] == 0
    assert len(fake.sent_keys) == 3


def test_unavailable_destination_keeps_rows_pending_then_sends_them_once(
    open_ledger: Callable[..., Ledger], settings: Settings, fake: FakeDestination, now: pd.Timestamp
) -> None:
    bad = {"lead_id": "BAD", "stage": "Mystery", "stage_changed_at": ts(now), "gclid": gclid(1)}
    write_export(settings.input, [*funnel_rows(10, now), bad])  # type: ignore[arg-type]
    fake.unavailable = True
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_TRY_LATER
    kept = open_ledger(settings.ledger).views.rejected_rows(report.run_id or 0)
    assert kept["lead_id"].tolist() == ["BAD"]  # rejected rows are recorded even so
    assert report.summary()["pending"] == 16
    ledger = open_ledger(settings.ledger)
    assert ledger.views.status_counts() == {"pending": 16}
    assert ledger.views.last_runs()[0].status == "failed"
    assert ledger.views.last_runs()[0].exit_code == EXIT_TRY_LATER
    fake.unavailable = False
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_INVALID_ROWS
    assert report.summary()["sent"] == 16
    assert ledger.views.status_counts() == {"uploaded": 16}
    assert len(fake.sent_keys) == len(set(fake.sent_keys)) == 16


def test_rows_the_destination_says_failed_stay_pending_and_go_out_next_run(
    open_ledger: Callable[..., Ledger], settings: Settings, fake: FakeDestination, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(4, now))  # type: ignore[arg-type]
    fake.verdicts = {"L0": ("failed", "FAKE_TIMEOUT", None)}  # L0: lead, qualified, won
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_TRY_LATER  # not "all sent": the next run must finish it
    assert "3 conversions could not be sent now" in (report.error or "")
    assert (report.summary()["sent"], report.pending, report.summary()["pending"]) == (4, 3, 3)
    assert open_ledger(settings.ledger).views.status_counts() == {"failed": 3, "uploaded": 4}
    fake.verdicts = {}
    again = execute(settings, dry_run=False)
    assert again.exit_code == EXIT_OK
    assert again.summary()["sent"] == 3
    assert again.pending == 0
    assert open_ledger(settings.ledger).views.status_counts() == {"uploaded": 7}
    assert len(fake.sent_keys) == 7 + 3


def test_retry_after_and_rejected_rows_come_back_only_when_due_or_fixed(
    settings: Settings, fake: FakeDestination, now: pd.Timestamp
) -> None:
    rows = funnel_rows(3, now)
    write_export(settings.input, rows)  # type: ignore[arg-type]
    retry_at = now + pd.Timedelta(hours=6)
    fake.verdicts = {
        "L1": ("retry_after", "TOO_RECENT_EVENT", retry_at),
        "L2": ("rejected", "UNPARSEABLE_GCLID", None),
    }
    report = execute(settings, dry_run=False, now=now)
    assert report.exit_code == EXIT_INVALID_ROWS
    assert report.summary()["retry_after"] == 1
    fake.verdicts = {}
    later = execute(settings, dry_run=False, now=now + pd.Timedelta(hours=1))
    assert later.summary()["retry_later"] == 1
    assert later.summary()["rejected_before"] == 2  # L2's lead + qualified conversions
    assert later.summary()["sent"] == 0
    for row in rows:
        if row["lead_id"] == "L2":
            row["gclid"] = gclid("L2-fixed")
    write_export(settings.input, rows)  # type: ignore[arg-type]
    due = execute(settings, dry_run=False, now=now + pd.Timedelta(hours=7))
    resent = fake.received[-1].set_index("lead_id")
    assert sorted(resent.index) == ["L1", "L2", "L2"]
    assert due.summary()["sent"] == 3


def test_pending_rows_missing_from_the_input_are_still_sent(
    settings: Settings, fake: FakeDestination, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(4, now))  # type: ignore[arg-type]
    fake.unavailable = True
    execute(settings, dry_run=False)
    fake.unavailable = False
    write_export(settings.input, funnel_rows(2, now, start=2))  # type: ignore[arg-type]
    report = execute(settings, dry_run=False)
    assert report.summary()["sent"] == 7
    assert sorted(set(fake.received[-1]["lead_id"])) == ["L0", "L1", "L2", "L3"]


def test_a_run_needs_a_customer_id(
    settings: Settings, fake: FakeDestination, mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(1, now))  # type: ignore[arg-type]
    no_customer = settings.model_copy(update={"mapping": mapping_file(customer_id=None)})
    with pytest.raises(ConfigError, match="customer id"):
        execute(no_customer, dry_run=False)
    with_env = no_customer.model_copy(update={"customer_id": "111-222-3333"})
    report = execute(with_env, dry_run=True)
    assert report.conversions["key"].str.startswith("1112223333|").all()


def test_unknown_destination_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="unknown destination 'nope'"):
        execute(settings.model_copy(update={"destination": "nope"}), dry_run=True)


class IncrementalSource:
    """A CRM that reports what it was asked for and a chosen high-water mark."""

    name = "fake:crm"
    incremental = True

    def __init__(self, rows: list[dict[str, object]], high_water: pd.Timestamp) -> None:
        self.rows, self.high_water = rows, high_water
        self.asked: list[object] = []

    def fetch(self, since: object) -> Fetched:
        from funnelvalue.leads import normalise

        self.asked.append(since)
        frame = pd.DataFrame(self.rows, columns=HEADER).astype("string")
        return Fetched(normalise(frame, timezone="UTC"), self.high_water)


def test_watermark_minus_overlap_is_asked_for_and_never_moves_back(
    settings: Settings,
    fake: FakeDestination,
    now: pd.Timestamp,
    monkeypatch: pytest.MonkeyPatch,
    open_ledger: Callable[..., Ledger],
) -> None:
    crm = IncrementalSource(funnel_rows(2, now), high_water=now - pd.Timedelta(hours=1))
    monkeypatch.setitem(sources.SOURCES, "fake", lambda s, m: crm)
    incremental = Settings(**{**settings.model_dump(), "source": "fake"})

    execute(incremental, dry_run=False)
    crm.high_water = now - pd.Timedelta(days=3)  # an older mark (e.g. after --since)
    second = execute(incremental, dry_run=False)
    execute(incremental, dry_run=False, full_refresh=True)
    execute(incremental, dry_run=False, since=pd.Timestamp("2026-01-01").to_pydatetime())

    assert crm.asked[0] is None  # the first run reads everything
    assert crm.asked[1] == second.since == now - pd.Timedelta(hours=25)
    assert crm.asked[2] is None
    assert crm.asked[3] == pd.Timestamp("2026-01-01", tz="UTC")
    assert open_ledger(settings.ledger).runs.watermark("fake:crm") == now - pd.Timedelta(hours=1)
    assert len(fake.sent_keys) == len(set(fake.sent_keys))


def test_a_run_takes_arrow_memory_from_an_allocator_that_gives_it_back(
    settings: Settings,
    fake: FakeDestination,
    now: pd.Timestamp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mimalloc (pyarrow's default) keeps what a phase freed: ~290 MB more peak at 1M rows.
    An operator's ARROW_DEFAULT_MEMORY_POOL still decides."""
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow is built without jemalloc")
    write_export(settings.input, funnel_rows(4, now))  # type: ignore[arg-type]
    before = pa.default_memory_pool()
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    try:
        pa.set_memory_pool(pa.mimalloc_memory_pool())  # as pyarrow starts
        execute(settings, dry_run=True)
        assert pa.default_memory_pool().backend_name == "jemalloc"
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        execute(settings, dry_run=True)
        assert pa.default_memory_pool().backend_name == "mimalloc"
    finally:
        pa.set_memory_pool(before)


def test_outcome_counts_follow_the_outcomes_the_report_holds() -> None:
    """Counted once per outcome frame (a summary asks a dozen times), never a stale count
    when the frame is replaced (a stop keeps what went through)."""
    from funnelvalue.conversions import Built
    from funnelvalue.destinations.base import outcomes
    from funnelvalue.pipeline import RunReport
    from funnelvalue.vocabulary import Outcome

    to_send = pd.DataFrame({"key": ["a", "b", "c"]})
    report = RunReport(
        dry_run=False,
        source="csv:x",
        destination="fake",
        built=Built(conversions=to_send, rejects=pd.DataFrame(), rows_read=3),
        conversions=to_send,
        to_send=to_send,
    )
    assert report.outcome_count(Outcome.UPLOADED) == 0  # nothing sent yet
    first = pd.concat(
        [outcomes(to_send["key"][:2], Outcome.UPLOADED), outcomes(to_send["key"][2:], "failed")],
        ignore_index=True,
    )
    report.outcomes = first
    assert report.outcome_count(Outcome.UPLOADED) == 2
    assert report.outcome_count(Outcome.UPLOADED, Outcome.UPLOADED) == 2  # a status once
    assert report.outcome_count(Outcome.UPLOADED, Outcome.FAILED) == 3
    assert report.sent_with(Outcome.UPLOADED)["key"].tolist() == ["a", "b"]
    assert report.sent_with(Outcome.UPLOADED, Outcome.FAILED) is to_send  # every row: as is
    report.outcomes = outcomes(to_send["key"][:1], Outcome.REJECTED)
    assert report.outcome_count(Outcome.UPLOADED) == 0
    assert report.outcome_count(Outcome.REJECTED) == 1
    assert report.sent_with(Outcome.REJECTED)["key"].tolist() == ["a"]


def test_a_first_run_has_its_ids_hashed_ahead_later_runs_only_the_new(
    settings: Settings, fake: FakeDestination, monkeypatch: pytest.MonkeyPatch, now: pd.Timestamp
) -> None:
    """The worker hashes a first run's ids (the account has nothing in the ledger); a later
    run hashes its few new ones here; every id sent is the key's, whichever way."""
    import hashlib

    from funnelvalue import order_ids as ids

    monkeypatch.setattr(ids, "AHEAD_FROM", 1)
    monkeypatch.setattr(ids, "_cores", lambda: 2)
    started: list[int] = []
    real = ids.order_ids_ahead

    def spy(values: pd.Series) -> ids.OrderIdsAhead:
        started.append(len(values))
        return real(values)

    monkeypatch.setattr("funnelvalue.conversions.order_ids_ahead", spy)
    write_export(settings.input, funnel_rows(20, now))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    assert started == [20 + 10 + 2]
    write_export(settings.input, funnel_rows(25, now))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    assert started == [32]  # the account has a ledger now: its 5 new leads hashed here
    sent = pd.concat(fake.received, ignore_index=True)
    assert len(sent) == 32 + 5 + 3 + 1  # leads, and the qualified and won among them
    assert sent["order_id"].tolist() == [
        hashlib.sha256(k.encode()).hexdigest()[:24] for k in sent["key"]
    ]
    assert sent["order_id"].is_unique
    assert pa.array(sent["order_id"].array).null_count == 0
