"""Data Manager destination against a fake IngestionService (tests/fakes/data_manager_server.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from funnelvalue.cli import app
from funnelvalue.destinations.data_manager import DataManagerUpload
from funnelvalue.errors import EXIT_OK, EXIT_TRY_LATER, ConfigError
from funnelvalue.ledger import Ledger
from funnelvalue.pipeline import execute
from funnelvalue.settings import DataManagerSettings, Settings, load_settings
from tests.conftest import CUSTOMER, REPO, funnel_rows, gclid, write_export
from tests.fakes.data_manager_server import FakeDataManager
from tests.test_crash import wait_for

STALL = ["--destination", "data-manager-stall"]
ACTION_IDS = {"CRM lead": "101", "CRM qualified": "102", "CRM won": "103"}


@pytest.fixture
def settings(
    tmp_path: Path,
    mapping_file: Callable[..., Path],
    use_fake_data_manager: Callable[[], None],
) -> Settings:
    return load_settings(
        mapping=mapping_file(timezone="UTC", customer_id=CUSTOMER),
        input=tmp_path / "export.csv",
        destination="data-manager",
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
        data_manager={"action_ids": ACTION_IDS},
        # The fake's knobs name "the next request": one at a time keeps that meaning here;
        # requests in flight at once are tested in test_sending, the contracts and below.
        requests_in_flight=1,
    )


def statuses(settings: Settings) -> dict[str, int]:
    with Ledger.open(settings.ledger) as ledger:
        return ledger.views.status_counts()


def test_a_run_submits_and_later_runs_confirm(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(30, now))  # type: ignore[arg-type]
    data_manager.polls_until_done = 1

    first = execute(settings, dry_run=False)
    assert first.exit_code == EXIT_OK
    assert first.summary()["submitted"] == 48
    assert first.summary()["sent"] == 0
    assert statuses(settings) == {"submitted": 48}
    assert len(data_manager.requests) == 3  # one request per conversion action

    second = execute(settings, dry_run=False)  # Google is still processing
    assert second.confirmed == {"processing": 3}
    assert second.summary()["to_send"] == 0
    assert statuses(settings) == {"submitted": 48}

    third = execute(settings, dry_run=False)
    assert third.confirmed == {"success": 3}
    assert statuses(settings) == {"uploaded": 48}
    assert data_manager.accepted == 48
    assert data_manager.ingest_calls == 3


def test_events_carry_what_google_needs(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    rows = funnel_rows(1, now)
    rows.append(
        {
            "lead_id": "E1",
            "stage": "New",
            "stage_changed_at": rows[0]["stage_changed_at"],
            "email": "  Jane.Doe@Example.com ",
            "consent_ad_user_data": "granted",
        }
    )
    write_export(settings.input, rows)  # type: ignore[arg-type]
    execute(settings, dry_run=False)

    with Ledger.open(settings.ledger) as ledger:
        sent = ledger.views.conversions_frame().query("stage == 'lead'").set_index("lead_id")
    request = next(iter(data_manager.requests.values()))
    assert request.destination.operating_account.account_id == CUSTOMER
    assert request.destination.product_destination_id == "101"
    by_transaction = {e.transaction_id: e for e in request.events}
    click = by_transaction[sent.loc["L0", "order_id"]]
    assert click.ad_identifiers.gclid == gclid(0)
    assert click.conversion_value == 10
    assert click.currency == "EUR"
    assert (
        click.event_timestamp.timestamp() == pd.Timestamp(rows[0]["stage_changed_at"]).timestamp()
    )
    email = by_transaction[sent.loc["E1", "order_id"]]
    assert not email.ad_identifiers.gclid
    assert email.user_data.user_identifiers[0].email_address == sent.loc["E1", "hashed_email"]
    assert "jane" not in str(email).lower()
    assert email.consent.ad_user_data.name == "CONSENT_GRANTED"


def test_unspecified_consent_is_left_unset_not_a_crash(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    rows = [{**r, "consent_ad_user_data": "UNSPECIFIED"} for r in funnel_rows(1, now)]
    write_export(settings.input, rows)  # type: ignore[arg-type]
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_OK
    events = [e for request in data_manager.requests.values() for e in request.events]
    assert len(events) == 3
    assert all("consent" not in e for e in events)  # proto-plus: field presence


def test_large_runs_go_in_requests_of_2000(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(5001, now)[::1])  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    sizes = sorted(len(r.events) for r in data_manager.requests.values())
    assert max(sizes) == 2000
    assert sum(sizes) == statuses(settings)["submitted"]


def test_partial_failure_is_recorded_as_counts_with_reasons(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp, tmp_path: Path
) -> None:
    write_export(settings.input, funnel_rows(10, now))  # type: ignore[arg-type]
    data_manager.partial = {"CLICK_NOT_FOUND": 2}  # the first request (10 'lead' events)
    execute(settings, dry_run=False)
    confirming = execute(settings, dry_run=False)
    assert confirming.confirmed == {"partial": 1, "success": 2}
    counts = statuses(settings)
    assert counts == {"partial": 10, "uploaded": 5 + 1}
    with Ledger.open(settings.ledger) as ledger:
        summary = ledger.requests.summary()
        partial = ledger.views.conversions_frame().query("status == 'partial'")
    assert summary["failure_reasons"] == {"CLICK_NOT_FOUND": 2}
    assert "CLICK_NOT_FOUND 2" in partial["message"].iloc[0]
    assert "not which rows" in partial["message"].iloc[0]

    shown = CliRunner().invoke(app, ["status", "--no-google", "--ledger", settings.ledger])
    assert "CLICK_NOT_FOUND" in shown.output


def test_a_request_that_fails_whole_is_sent_again(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(4, now))  # type: ignore[arg-type]
    data_manager.fail_requests = {1}
    execute(settings, dry_run=False)
    assert data_manager.accepted == 2 + 1  # request 1 (the 4 "lead" events) failed whole

    retrying = execute(settings, dry_run=False)
    assert retrying.confirmed == {"failed": 1, "success": 2}
    assert retrying.summary()["submitted"] == 4  # back to pending, out again in this run
    final = execute(settings, dry_run=False)
    assert final.confirmed == {"success": 1}
    assert statuses(settings) == {"uploaded": 7}
    assert data_manager.accepted == 7


def test_transient_unavailability_is_retried(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp, waits: list[float]
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    data_manager.unavailable_times = 2
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_OK
    assert len(waits) == 2
    assert statuses(settings) == {"submitted": 4}


def test_outage_after_retries_keeps_rows_pending(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    data_manager.unavailable_times = 100
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_TRY_LATER
    assert statuses(settings) == {"pending": 4}
    data_manager.unavailable_times = 0
    execute(settings, dry_run=False)
    assert statuses(settings) == {"submitted": 4}


def test_names_without_ids_stop_before_anything_is_pending(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    unmapped = Settings(
        **{**settings.model_dump(), "data_manager": {"action_ids": {"CRM lead": "101"}}}
    )
    with pytest.raises(ConfigError, match="ctId=") as caught:
        execute(unmapped, dry_run=False)
    assert "'CRM won' has no id" in str(caught.value)
    assert statuses(settings) == {}
    assert data_manager.ingest_calls == 0


def test_preview_validate_only_records_nothing(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(3, now))  # type: ignore[arg-type]
    report = execute(settings, dry_run=True, validate_only=True)
    assert report.summary()["validated_ok"] == 6
    assert data_manager.validate_calls == 3  # one request per action
    assert data_manager.requests == {}
    assert statuses(settings) == {}


def test_credentials_missing_or_broken_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="no Google Cloud credentials"):
        DataManagerUpload.from_settings(DataManagerSettings(), CUSTOMER)
    broken = tmp_path / "key.json"
    broken.write_text("{}")
    with pytest.raises(ConfigError, match="not a usable service-account key"):
        DataManagerUpload.from_settings(DataManagerSettings(credentials_file=broken), CUSTOMER)


def test_a_service_account_key_file_builds_the_official_client(
    tmp_path: Path, google_ads_endpoint: str
) -> None:
    """(google_ads_endpoint: gRPC reads its TLS roots once per process, at the first secure
    channel; this test opens one, so the fake Google Ads CA must be in place first.)"""
    import trustme

    key = trustme.CA().private_key_pem.bytes().decode()
    path = tmp_path / "sa.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "funnelvalue-test",
                "private_key_id": "k1",
                "private_key": key,
                "client_email": "uploader@funnelvalue-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    upload = DataManagerUpload.from_settings(
        DataManagerSettings(credentials_file=path, login_customer_id="111-222-3333"), CUSTOMER
    )
    assert upload.login_customer_id == "1112223333"
    assert upload.name == f"data-manager:{CUSTOMER}"
    upload.close()


def test_status_shows_and_confirms_open_requests(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp, tmp_path: Path
) -> None:
    write_export(settings.input, funnel_rows(3, now))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "funnelvalue.yaml").write_text(
        f"mapping: {settings.mapping}\nledger: {settings.ledger}\ndestination: data-manager\n"
        f"data_manager:\n  action_ids: {json.dumps(ACTION_IDS)}\n"
    )
    data_manager.polls_until_done = 1
    shown = CliRunner().invoke(app, ["status", "--no-google"])
    assert shown.exit_code == 0, shown.output
    assert "submitted, not yet confirmed: 6 conversions in 3 requests" in shown.output
    shown = CliRunner().invoke(app, ["status", "--no-google", "--json"])
    assert json.loads(shown.stdout)["requests"]["requests"]["success"]["events"] == 6
    assert statuses(settings) == {"uploaded": 6}


def test_killed_after_submitting_then_rerun_ingests_each_once(
    settings: Settings,
    data_manager: FakeDataManager,
    data_manager_address: str,
    now: pd.Timestamp,
    tmp_path: Path,
) -> None:
    """kill -9 after Google accepted the request but before the ledger heard of it."""
    write_export(settings.input, funnel_rows(20, now))  # type: ignore[arg-type]
    marker = tmp_path / "submitted"
    config = tmp_path / "funnelvalue.yaml"
    config.write_text(
        f"mapping: {settings.mapping}\ninput: {settings.input}\nledger: {settings.ledger}\n"
        f"data_manager:\n  action_ids: {json.dumps(ACTION_IDS)}\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FUNNELVALUE_")},
        "PYTHONPATH": str(REPO),
        "STALL_MARKER": str(marker),
        "FAKE_DATA_MANAGER": data_manager_address,
    }
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.stalling_run",
                "run",
                "--config",
                str(config),
                *STALL,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    wait_for(marker, process, seconds=120)
    assert marker.exists(), log.read_text()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    total = data_manager.accepted  # Google has every event...
    assert statuses(settings) == {"pending": total}  # ...the ledger never heard back

    rerun = execute(settings, dry_run=False)
    assert rerun.interrupted_runs == [1]
    assert rerun.summary()["submitted"] == total  # again: harmless, same transaction ids
    execute(settings, dry_run=False)
    assert statuses(settings) == {"duplicate": total}
    assert data_manager.accepted == total  # each conversion once in Google


def test_events_google_already_has_count_as_done_not_as_failures(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    """A request whose only failures are DUPLICATE_TRANSACTION_ID: Google has every event. As
    a partial success it is a success; as a whole failure, every row is a duplicate (done)."""
    write_export(settings.input, funnel_rows(4, now))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    execute(settings, dry_run=False)  # confirmed: 4 lead, 2 qualified, 1 won uploaded
    with Ledger.open(settings.ledger) as ledger, ledger.db.tx() as conn:
        # as after a restore from an old backup: the ledger forgot the lead and won rows
        conn.execute(text("UPDATE conversions SET status = 'pending' WHERE stage != 'qualified'"))
    write_export(settings.input, funnel_rows(6, now))  # type: ignore[arg-type]  # L4, L5 new
    replay = execute(settings, dry_run=False)
    assert replay.summary()["submitted"] == 4 + 2 + 1 + 1  # old lead/won, new lead, new qualified
    confirming = execute(settings, dry_run=False)
    assert confirming.confirmed == {"success": 2, "duplicate": 1}
    assert statuses(settings) == {"uploaded": 9, "duplicate": 1}
    assert data_manager.accepted == 10
    with Ledger.open(settings.ledger) as ledger:
        won = ledger.views.conversions_frame().set_index("stage").loc["won"]
    assert won["message"] == "already in Google Ads"


def test_quota_exhausted_is_try_later_and_the_rows_stay_pending(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    """RESOURCE_EXHAUSTED (HTTP 429): the project's per-minute or daily quota."""
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    data_manager.exhausted_times = 1
    settings = settings.model_copy(update={"requests_in_flight": 4})  # three requests at once
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_TRY_LATER
    assert "quota" in (report.error or "")
    first = statuses(settings)  # the requests already in flight went through and are kept
    assert first.get("pending", 0) >= 1
    assert first.get("pending", 0) + first.get("submitted", 0) == 4
    assert execute(settings, dry_run=False).exit_code == EXIT_OK
    assert statuses(settings).get("submitted", 0) + statuses(settings).get("uploaded", 0) == 4
    assert data_manager.accepted == 4


def test_a_status_check_that_fails_leaves_requests_open_and_says_so(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    data_manager.retrieve_unavailable = True
    write_export(settings.input, funnel_rows(3, now))  # type: ignore[arg-type]  # L2 new
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_OK  # the new rows went out; the old ones are not lost
    assert report.summary()["submitted"] == 2
    assert report.confirmed == {}
    assert any("could not check 3 submitted requests" in w for w in report.warnings)
    assert statuses(settings) == {"submitted": 6}
    with Ledger.open(settings.ledger) as ledger:
        assert len(ledger.requests.open("data-manager:" + CUSTOMER)) == 3 + 2
    data_manager.retrieve_unavailable = False
    assert execute(settings, dry_run=False).confirmed == {"success": 5}
    assert statuses(settings) == {"uploaded": 6}


def test_a_request_google_does_not_know_is_sent_again_and_the_others_confirmed(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    execute(settings, dry_run=False)  # 3 requests: lead (2 events), qualified, won
    forgotten = next(rid for rid, r in data_manager.requests.items() if len(r.events) == 2)
    del data_manager.requests[forgotten]  # expired on Google's side
    report = execute(settings, dry_run=False)
    assert report.confirmed == {"failed": 1, "success": 2}  # the poll went on past it
    assert report.warnings == []
    assert report.summary()["submitted"] == 2  # its events went out again
    assert execute(settings, dry_run=False).confirmed == {"duplicate": 1}  # Google had them
    assert statuses(settings) == {"uploaded": 2, "duplicate": 2}
    assert data_manager.accepted == 4  # the replay was recognised, nothing counted twice


# -- what Google's fast-fail model, quotas and statuses really do ---------------------------


def test_one_bad_event_is_set_aside_and_the_rest_of_its_request_goes(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    """Google refuses a whole request for one bad event and names it in a BadRequest: that
    event is rejected with Google's words, the other events go in the same run."""
    write_export(settings.input, funnel_rows(10, now))  # type: ignore[arg-type]
    data_manager.bad_gclids = {gclid(3)}
    report = execute(settings, dry_run=False)
    assert report.exit_code == 1  # sent; one row to fix in the CRM
    assert statuses(settings) == {"submitted": 15, "rejected": 1}
    with Ledger.open(settings.ledger) as ledger:
        rejected = ledger.views.conversions_frame().query("status == 'rejected'").iloc[0]
    assert rejected["lead_id"] == "L3"
    assert rejected["error_code"] == "INVALID_FORMAT"
    assert (
        rejected["message"] == "Google refused this event: fake: bad gclid (ad_identifiers.gclid)"
    )
    again = execute(settings, dry_run=False)  # the same bad row is not sent every day
    assert again.summary()["to_send"] == 0
    assert data_manager.refused_calls == 1


def test_a_refusal_that_names_no_event_is_narrowed_down_by_halves(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    rows = [r for r in funnel_rows(64, now) if r["stage"] == "New"]
    write_export(settings.input, rows)  # type: ignore[arg-type]
    data_manager.refused_unnamed = {gclid(37)}
    report = execute(settings, dry_run=False)
    assert report.exit_code == 1
    assert statuses(settings) == {"submitted": 63, "rejected": 1}
    with Ledger.open(settings.ledger) as ledger:
        rejected = ledger.views.conversions_frame().query("status == 'rejected'")
    assert rejected["lead_id"].tolist() == ["L37"]
    assert data_manager.refused_calls <= 2 * 6 + 1  # about two requests per halving


def test_a_refusal_of_the_request_itself_stops_with_rows_pending(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    """Both halves refused without a named event: the request is at fault, not an event."""
    rows = [r for r in funnel_rows(8, now) if r["stage"] == "New"]
    write_export(settings.input, rows)  # type: ignore[arg-type]
    data_manager.refused_unnamed = {gclid(n) for n in range(8)}
    report = execute(settings, dry_run=False)
    assert report.exit_code == 2
    assert "refused the request" in (report.error or "")
    assert statuses(settings) == {"pending": 8}
    assert data_manager.refused_calls == 3  # the request, then its two halves


def test_unsigned_terms_hold_email_events_and_click_events_still_go(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    rows = [r for r in funnel_rows(3, now) if r["stage"] == "New"]
    rows += [
        {
            "lead_id": f"M{n}",
            "stage": "New",
            "stage_changed_at": rows[0]["stage_changed_at"],
            "email": f"p{n}@example.com",
        }
        for n in range(2)
    ]
    write_export(settings.input, rows)  # type: ignore[arg-type]
    data_manager.terms_signed = False
    report = execute(settings, dry_run=False)
    assert report.exit_code == 2
    assert "2 conversions held: the Google Ads account has not accepted the enhanced" in (
        report.error or ""
    )
    assert statuses(settings) == {"submitted": 3, "held": 2}
    data_manager.terms_signed = True
    assert execute(settings, dry_run=False).exit_code == EXIT_OK
    assert statuses(settings) == {"uploaded": 3, "submitted": 2}


def test_too_recent_clicks_in_a_partial_success_are_sent_again_later(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    """PARTIAL_SUCCESS with TOO_RECENT_CLICK: Google does not say which events; all of the
    request's events go again after 6 hours and the ones it had come back as duplicates."""
    rows = [r for r in funnel_rows(4, now) if r["stage"] == "New"]
    write_export(settings.input, rows)  # type: ignore[arg-type]
    data_manager.partial = {"TOO_RECENT_CLICK": 1}
    execute(settings, dry_run=False)
    confirming = execute(settings, dry_run=False)
    assert confirming.confirmed == {"retry": 1}
    assert confirming.summary()["to_send"] == 0  # not before the 6 hours
    assert statuses(settings) == {"retry_after": 4}
    later = pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=7)
    resent = execute(settings, dry_run=False, now=later)
    assert resent.summary()["submitted"] == 4
    done = execute(settings, dry_run=False, now=later)
    assert done.confirmed == {"success": 1}  # 3 duplicates + the one now old enough
    assert statuses(settings) == {"uploaded": 4}
    assert data_manager.accepted == 4  # each conversion once at Google


def test_a_status_google_never_knows_is_given_up_on_after_two_days(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(1, now))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    data_manager.unknown_polls = 100
    assert execute(settings, dry_run=False).confirmed == {"unknown": 3}
    assert statuses(settings) == {"submitted": 3}  # still waited on
    with Ledger.open(settings.ledger) as ledger, ledger.db.tx() as conn:
        conn.execute(text("UPDATE requests SET submitted_at = '2020-01-01 00:00:00'"))
    gave_up = execute(settings, dry_run=False)
    assert gave_up.confirmed == {"failed": 3}
    assert gave_up.summary()["submitted"] == 3  # sent again: Google dedupes what it has
    with Ledger.open(settings.ledger) as ledger:
        assert len(ledger.requests.open("data-manager:" + CUSTOMER)) == 3


def test_field_warnings_are_logged_and_kept_on_the_rows(
    settings: Settings,
    data_manager: FakeDataManager,
    now: pd.Timestamp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    data_manager.warn_gclids = {gclid(1)}
    assert execute(settings, dry_run=False).exit_code == EXIT_OK
    assert "Data Manager warned about 1 of 2 events: GENERIC 1" in caplog.text
    with Ledger.open(settings.ledger) as ledger:
        lead = ledger.views.conversions_frame().query("stage == 'lead'")
    assert lead["message"].str.contains("Google warned: GENERIC 1").all()


def test_event_source_is_unset_unless_configured(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(1, now))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    sent = [e for r in data_manager.requests.values() for e in r.events]
    assert all(e.event_source == 0 for e in sent)
    data_manager.reset()
    other = settings.model_copy(
        update={"data_manager": DataManagerSettings(action_ids=ACTION_IDS, event_source="OTHER")}
    )
    write_export(settings.input, funnel_rows(2, now, start=5))  # type: ignore[arg-type]
    execute(other, dry_run=False)
    sent = [e for r in data_manager.requests.values() for e in r.events]
    assert len(sent) == 3 + 3  # L5, L6, and L0's again (the reset fake forgot its requests)
    assert all(e.event_source.name == "OTHER" for e in sent)


def test_the_per_minute_quota_is_waited_out_the_daily_one_stops(
    settings: Settings, data_manager: FakeDataManager, now: pd.Timestamp, waits: list[float]
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    data_manager.quota_limit = "IngestionMutateRequestsPerMinutePerProject"
    data_manager.exhausted_times = 2
    assert execute(settings, dry_run=False).exit_code == EXIT_OK
    assert len(waits) == 2
    assert statuses(settings) == {"submitted": 4}
    data_manager.quota_limit = "IngestionMutateRequestsPerDayPerProject"
    data_manager.exhausted_times = 1
    write_export(settings.input, funnel_rows(3, now))  # type: ignore[arg-type]
    stopped = execute(settings, dry_run=False)
    assert stopped.exit_code == EXIT_TRY_LATER
    assert "daily request quota" in (stopped.error or "")
    assert len(waits) == 2  # never hot-retried
