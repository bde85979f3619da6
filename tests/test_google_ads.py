"""The Google Ads destination against the fake API: the real client, real gRPC, TLS, no internet."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import responses
from google.ads.googleads.v26.enums.types.consent_status import ConsentStatusEnum
from google.ads.googleads.v26.enums.types.conversion_action_status import (
    ConversionActionStatusEnum,
)

from funnelvalue.destinations.google_ads import GoogleAdsUpload
from funnelvalue.errors import EXIT_INVALID_ROWS, EXIT_OK, EXIT_TRY_LATER, ConfigError
from funnelvalue.ledger import Ledger
from funnelvalue.pipeline import execute
from funnelvalue.settings import Settings, load_settings
from tests.conftest import funnel_rows, gclid, ts, write_export
from tests.fakes.google_ads_server import UPLOAD, UPLOAD_CLICKS, FakeGoogleAds

REMOVED = ConversionActionStatusEnum.ConversionActionStatus.REMOVED
GRANTED = ConsentStatusEnum.ConsentStatus.GRANTED


@pytest.fixture
def google_ads_yaml(tmp_path: Path, google_ads_endpoint: str) -> Iterator[Path]:
    """A google-ads.yaml pointing at the fake, with Google's OAuth token endpoint mocked."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as oauth:
        oauth.add(
            responses.POST,
            "https://accounts.google.com/o/oauth2/token",
            json={"access_token": "fresh", "expires_in": 3600, "token_type": "Bearer"},
        )
        config = tmp_path / "google-ads.yaml"
        config.write_text(
            "developer_token: dev-token\nclient_id: id.apps.googleusercontent.com\n"
            "client_secret: shh-secret\nrefresh_token: 1//refresh-secret\n"
            f"use_proto_plus: true\nendpoint: {google_ads_endpoint}\n"
        )
        yield config


@pytest.fixture
def settings(
    tmp_path: Path, mapping_file: Callable[..., Path], use_fake_client: Callable[[], None]
) -> Settings:
    return load_settings(
        mapping=mapping_file(timezone="UTC"),
        input=tmp_path / "export.csv",
        destination="google-ads",
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
    )


def statuses(settings: Settings) -> dict[str, int]:
    with Ledger.open(settings.ledger) as ledger:
        return ledger.views.status_counts()


def test_happy_path_uploads_each_conversion_once(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    contact = {
        "lead_id": "MAIL",
        "stage": "New",
        "stage_changed_at": now.isoformat(),
        "email": " Jane.Doe@example.com",
        "consent_ad_user_data": "GRANTED",
    }
    write_export(settings.input, [*funnel_rows(10, now), contact])  # type: ignore[arg-type]
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_OK
    assert statuses(settings) == {"uploaded": 17}
    enhanced = next(c for c in fake.upload_requests[0].conversions if not c.gclid)
    expected = hashlib.sha256(b"jane.doe@example.com").hexdigest()
    assert [i.hashed_email for i in enhanced.user_identifiers] == [expected]
    assert enhanced.consent.ad_user_data == GRANTED
    request = fake.upload_requests[0]
    assert request.partial_failure is True
    assert request.job_id == report.run_id
    assert request.customer_id == "1234567890"
    first = request.conversions[0]
    assert first.conversion_action == "customers/1234567890/conversionActions/101"
    assert first.conversion_date_time.endswith("+00:00")
    assert len(first.order_id) == 24
    again = execute(settings, dry_run=False)
    assert again.summary()["sent"] == 0
    assert len(fake.upload_requests) == 1  # nothing re-sent


def test_partial_failure_maps_each_error_to_its_row(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    rows = funnel_rows(4, now)  # leads L0..L3; L0 and L2 also qualified, L0 won
    write_export(settings.input, rows)  # type: ignore[arg-type]
    fake.row_errors = {
        gclid(1): UPLOAD.UNPARSEABLE_GCLID,
        gclid(3): UPLOAD.TOO_RECENT_EVENT,
        gclid(2): UPLOAD.CLICK_CONVERSION_ALREADY_EXISTS,
    }
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_INVALID_ROWS
    with Ledger.open(settings.ledger) as ledger:
        rows_by_lead = ledger.views.conversions_frame().set_index("lead_id")
    assert rows_by_lead.loc["L0", "status"].tolist() == ["uploaded"] * 3
    assert rows_by_lead.loc["L1", "status"] == "rejected"
    assert rows_by_lead.loc["L1", "error_code"] == "UNPARSEABLE_GCLID"
    assert "cannot read this gclid" in rows_by_lead.loc["L1", "message"]
    assert rows_by_lead.loc["L2", "status"].tolist() == ["duplicate", "duplicate"]
    assert rows_by_lead.loc["L3", "status"] == "retry_after"
    assert rows_by_lead.loc["L3", "retry_at"] is not None
    # a later run, once the 6 hours have passed, sends the too-recent one again
    fake.row_errors = {}
    later = execute(settings, dry_run=False, now=pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=7))
    assert later.summary()["sent"] == 1
    assert [c.gclid for c in fake.upload_requests[-1].conversions] == [gclid(3)]


def test_transient_unavailable_is_retried(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    fake.unavailable_times = 2
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_OK
    assert len(fake.upload_requests) == 3
    assert statuses(settings) == {"uploaded": 4}


def test_quota_exhausted_stops_and_keeps_rows_pending(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    fake.quota_exhausted = True
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_TRY_LATER
    assert "quota" in (report.error or "")
    assert len(fake.upload_requests) == 1  # never hot-retried
    assert statuses(settings) == {"pending": 4}


def test_unknown_action_stops_before_anything_is_sent(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp, mapping_file: Callable[..., Path]
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    del fake.actions[102]
    with pytest.raises(ConfigError) as caught:
        execute(settings, dry_run=False)
    assert "conversion action 'CRM qualified' does not exist" in str(caught.value)
    assert "actions in the account: 'CRM lead' (UPLOAD_CLICKS, ENABLED)" in str(caught.value)
    assert fake.upload_requests == []
    with Ledger.open(settings.ledger) as ledger:
        assert ledger.views.status_counts() == {}  # nothing even marked pending
        assert ledger.views.last_runs()[0].status == "failed"


def test_large_runs_go_in_batches_of_2000(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    rows = [{**row, "stage": "New"} for row in funnel_rows(5001, now) if row["stage"] == "New"]
    write_export(settings.input, rows)  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    assert sorted(len(r.conversions) for r in fake.upload_requests) == [1001, 2000, 2000]
    assert statuses(settings) == {"uploaded": 5001}


def test_connection_lost_mid_upload_then_rerun_accepts_each_once(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    rows = [row for row in funnel_rows(4500, now) if row["stage"] == "New"]
    write_export(settings.input, rows)  # type: ignore[arg-type]
    fake.outage_after = 1  # the first batch to arrive goes through, then the connection is gone
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_TRY_LATER
    counts = statuses(settings)
    assert counts["uploaded"] == len(fake.accepted)  # what Google took, whichever batch it was
    assert counts["uploaded"] in (500, 2000)
    assert counts["uploaded"] + counts["pending"] == 4500
    fake.outage_after = None
    again = execute(settings, dry_run=False)
    assert again.exit_code == EXIT_OK
    assert statuses(settings) == {"uploaded": 4500}
    assert len(fake.accepted) == 4500  # every conversion accepted exactly once


def test_cli_with_google_ads_yaml_and_oauth(
    tmp_path: Path,
    fake: FakeGoogleAds,
    google_ads_yaml: Path,
    mapping_file: Callable[..., Path],
    now: pd.Timestamp,
) -> None:
    from typer.testing import CliRunner

    from funnelvalue.cli import app

    config = google_ads_yaml
    write_export(tmp_path / "export.csv", funnel_rows(3, now))
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--destination",
            "google-ads",
            "--google-ads-config",
            str(config),
            "--input",
            "export.csv",
            "--mapping",
            str(mapping_file(timezone="UTC")),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"sent": 6' in result.stdout
    assert "secret" not in result.output
    assert len(fake.accepted) == 6
    status = CliRunner().invoke(
        app,
        [
            "status",
            "--google-ads-config",
            str(config),
            "--mapping",
            str(mapping_file(timezone="UTC")),
        ],
    )
    assert status.exit_code == 0, status.output
    assert "Google's view (upload diagnostics)" in status.output
    assert "GOOGLE_ADS_API" in status.output
    assert "EXCELLENT" in status.output
    assert "CRM won" in status.output
    assert "uploaded 6" in status.output


@responses.activate
def test_revoked_refresh_token_is_a_clear_config_error(
    tmp_path: Path, fake: FakeGoogleAds, google_ads_endpoint: str
) -> None:
    responses.add(
        responses.POST,
        "https://accounts.google.com/o/oauth2/token",
        status=400,
        json={"error": "invalid_grant", "error_description": "Token has been expired"},
    )
    config = tmp_path / "google-ads.yaml"
    config.write_text(
        "developer_token: dev-token\nclient_id: id\nclient_secret: shh-secret\n"
        f"refresh_token: 1//refresh-secret\nuse_proto_plus: true\nendpoint: {google_ads_endpoint}\n"
    )
    with pytest.raises(ConfigError, match="invalid_grant") as caught:
        GoogleAdsUpload.from_settings(config, "1234567890", 1)
    assert "secret" not in str(caught.value)


def test_missing_credentials_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Google Ads credentials"):
        GoogleAdsUpload.from_settings(tmp_path / "none.yaml", "1234567890", 1)
    partial = tmp_path / "google-ads.yaml"
    partial.write_text("developer_token: x\nuse_proto_plus: true\n")
    with pytest.raises(ConfigError, match="incomplete"):
        GoogleAdsUpload.from_settings(partial, "1234567890", 1)


def test_transient_error_in_the_failure_is_retried(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(1, now))  # type: ignore[arg-type]
    fake.transient_errors = 1
    assert execute(settings, dry_run=False).exit_code == EXIT_OK
    assert len(fake.upload_requests) == 2


def test_not_allowlisted_token_says_what_to_do(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(1, now))  # type: ignore[arg-type]
    fake.not_allowlisted = True
    report = execute(settings, dry_run=False)
    assert report.exit_code == 2
    assert "Data Manager API" in (report.error or "")
    assert "--destination data-manager" in (report.error or "")
    assert statuses(settings) == {"pending": 3}


def test_preview_validate_only_shows_googles_verdict_and_records_nothing(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp, tmp_path: Path
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    fake.row_errors = {gclid(1): UPLOAD.EVENT_NOT_FOUND}
    report = execute(settings, dry_run=True, validate_only=True)
    assert report.exit_code == EXIT_INVALID_ROWS
    assert fake.upload_requests[0].validate_only is True
    assert fake.accepted == {}
    assert not (tmp_path / "ledger.db").exists()
    verdicts = report.outcomes.set_index("key")["status"]  # type: ignore[union-attr]
    assert sorted(verdicts) == ["rejected", "uploaded", "uploaded", "uploaded"]
    assert report.summary()["validated_ok"] == 3
    assert report.summary()["sent"] == 0


def test_validate_only_needs_the_api_destination(settings: Settings, now: pd.Timestamp) -> None:
    write_export(settings.input, funnel_rows(1, now))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="use --destination google-ads"):
        execute(
            settings.model_copy(update={"destination": "csv"}), dry_run=True, validate_only=True
        )


def test_mapping_check_remote_lists_each_action(
    fake: FakeGoogleAds, google_ads_yaml: Path, mapping_file: Callable[..., Path]
) -> None:
    from typer.testing import CliRunner

    from funnelvalue.cli import app

    config = google_ads_yaml
    args = [
        "mapping",
        "check",
        "--remote",
        "--google-ads-config",
        str(config),
        "--mapping",
        str(mapping_file()),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "customers/1234567890/conversionActions/103" in result.output
    fake.actions[103] = ("CRM won", UPLOAD_CLICKS, REMOVED)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "conversion action 'CRM won' is REMOVED" in result.output


@pytest.mark.parametrize(
    ("knob", "code", "says"),
    [
        ("quota", 3, "daily quota is used up"),
        ("unknown_action", 2, "conversion action 'CRM won' does not exist"),
        ("bad_gclid", 1, "cannot read this gclid"),
        ("none", 0, '"sent"'),
    ],
)
def test_cli_exit_codes_against_the_fake(
    knob: str,
    code: int,
    says: str,
    tmp_path: Path,
    fake: FakeGoogleAds,
    use_fake_client: Callable[[], None],
    mapping_file: Callable[..., Path],
    now: pd.Timestamp,
) -> None:
    from typer.testing import CliRunner

    from funnelvalue.cli import app

    write_export(tmp_path / "export.csv", funnel_rows(3, now))
    fake.quota_exhausted = knob == "quota"
    if knob == "unknown_action":
        del fake.actions[103]
    if knob == "bad_gclid":
        fake.row_errors = {gclid(1): UPLOAD.UNPARSEABLE_GCLID}
    args = [
        "run",
        "--destination",
        "google-ads",
        "--input",
        "export.csv",
        "--mapping",
        str(mapping_file(timezone="UTC")),
    ]
    result = CliRunner().invoke(app, [*args, "--json"] if knob == "none" else args)
    assert result.exit_code == code, result.output
    assert says in result.output
    assert "Traceback" not in result.output


def test_an_action_removed_mid_run_holds_its_rows_and_sends_the_rest(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    """NO_CONVERSION_ACTION_FOUND arrives per row: the batch's other rows stand, later
    batches hold that action's rows back, the run says what to fix (exit 2)."""
    write_export(settings.input, funnel_rows(2500, now))  # type: ignore[arg-type]
    fake.refused_actions = {101}  # listed by the lookup, gone when the upload arrives
    # One request at a time: a batch already in flight when the lesson arrives cannot
    # hold its rows back (it is refused and held all the same).
    settings = settings.model_copy(update={"requests_in_flight": 1})
    report = execute(settings, dry_run=False)  # 4,000 conversions: 2,000 leads, then the rest
    assert report.exit_code == 2
    assert "2,500 conversions held: 'CRM lead': Google Ads no longer finds" in (report.error or "")
    assert statuses(settings) == {"uploaded": 1500, "held": 2500}
    refused = "customers/1234567890/conversionActions/101"
    carrying = [
        n
        for n, r in enumerate(fake.upload_requests)
        if any(c.conversion_action == refused for c in r.conversions)
    ]
    assert carrying == [0]  # learnt from the first batch; never sent again this run
    assert len(fake.upload_requests[1].conversions) == 1500  # its 500 leads held back
    with Ledger.open(settings.ledger) as ledger:
        held = ledger.views.conversions_frame().query("status == 'held'")
    assert set(held["error_code"]) == {"NO_CONVERSION_ACTION_FOUND"}
    fake.refused_actions = set()
    again = execute(settings, dry_run=False)  # fixed: the held rows go, nothing else
    assert again.exit_code == EXIT_OK
    assert again.summary()["sent"] == 2500
    assert statuses(settings) == {"uploaded": 4000}


def test_data_terms_not_accepted_hold_email_rows_and_send_click_ids(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    """CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS comes per e-mail/phone row: the click-id rows
    of every batch still go, the e-mail rows wait for the terms, the run says where."""
    clicks = [r for r in funnel_rows(3000, now) if r["stage"] == "New"]
    mails = [
        {
            "lead_id": f"M{n}",
            "stage": "New",
            "stage_changed_at": ts(now - pd.Timedelta(days=2, minutes=n)),
            "email": f"person{n}@example.com",
        }
        for n in range(1500)
    ]
    write_export(settings.input, clicks + mails)  # type: ignore[arg-type]
    fake.data_terms_accepted = False
    report = execute(settings, dry_run=False)
    assert report.exit_code == 2
    assert "1,500 conversions held: the Google Ads account has not accepted the customer data" in (
        report.error or ""
    )
    assert statuses(settings) == {"uploaded": 3000, "held": 1500}
    sent_mail_rows = sum(1 for r in fake.upload_requests for c in r.conversions if not c.gclid)
    assert 0 < sent_mail_rows <= 2000  # only the batch that taught us carried any
    fake.data_terms_accepted = True
    again = execute(settings, dry_run=False)
    assert again.exit_code == EXIT_OK
    assert statuses(settings) == {"uploaded": 4500}
    assert len(fake.accepted) == 4500


def test_a_replayed_order_id_is_a_duplicate_not_a_second_conversion(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp, tmp_path: Path
) -> None:
    """A lost ledger: Google answers ORDER_ID_ALREADY_IN_USE and the run counts it as done."""
    write_export(settings.input, funnel_rows(3, now))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    fresh = settings.model_copy(update={"ledger": f"sqlite:///{tmp_path / 'other.db'}"})
    report = execute(fresh, dry_run=False)
    assert report.exit_code == EXIT_OK
    assert statuses(fresh) == {"duplicate": 6}
    assert len(fake.accepted) == 6
    with Ledger.open(fresh.ledger) as ledger:
        assert set(ledger.views.conversions_frame()["error_code"]) == {"ORDER_ID_ALREADY_IN_USE"}


def test_aborted_calls_are_retried(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    fake.aborted_times = 2
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_OK
    assert statuses(settings) == {"uploaded": 4}


def test_the_action_lookup_is_retried(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel_rows(2, now))  # type: ignore[arg-type]
    fake.search_unavailable_times = 1
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_OK
    assert fake.search_calls >= 2


def test_a_changed_value_is_restated_not_re_uploaded(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    rows = funnel_rows(1, now)  # L0: lead, qualified, won (10 days ago, amount 1000)
    write_export(settings.input, rows)  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    won = next(r for r in rows if r["stage"] == "Closed Won")
    won["amount"] = "4200"
    write_export(settings.input, rows)  # type: ignore[arg-type]
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_OK
    assert report.summary()["restated"] == 1
    assert len(fake.upload_requests) == 1  # never uploaded twice
    [adjustments] = fake.adjustment_requests
    [adjustment] = adjustments.conversion_adjustments
    assert adjustment.restatement_value.adjusted_value == 4200
    assert adjustment.order_id in fake.accepted
    assert list(fake.restated.values()) == [4200]
    with Ledger.open(settings.ledger) as ledger:
        values = ledger.views.conversions_frame().set_index("stage")["value"]
    assert values["won"] == 4200
    again = execute(settings, dry_run=False)  # the ledger has the new value: nothing to do
    assert again.summary()["restated"] == 0
    assert again.summary()["value_changed"] == 0
    assert len(fake.adjustment_requests) == 1


def test_a_value_changed_right_after_the_upload_is_restated_at_once(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    """No 24-hour wait since September 2024: the next run restates a two-hour-old conversion."""
    row = {
        "lead_id": "NEW",
        "stage": "Closed Won",
        "amount": "100",
        "stage_changed_at": (now - pd.Timedelta(hours=2)).isoformat(),
        "gclid": gclid(7),
    }
    write_export(settings.input, [row])  # type: ignore[arg-type]
    execute(settings, dry_run=False, now=now)
    write_export(settings.input, [{**row, "amount": "150"}])  # type: ignore[arg-type]
    report = execute(settings, dry_run=False, now=now + pd.Timedelta(minutes=5))
    assert report.exit_code == EXIT_OK
    assert report.summary()["restated"] == 1
    [adjustments] = fake.adjustment_requests
    assert [a.restatement_value.adjusted_value for a in adjustments.conversion_adjustments] == [150]


def test_a_stop_during_restatements_keeps_what_was_uploaded(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    """The uploads went through, the adjustments hit the quota: the uploads are recorded
    (not pending, never sent again) and the value change waits for the next run."""
    rows = funnel_rows(1, now)
    write_export(settings.input, rows)  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    won = next(r for r in rows if r["stage"] == "Closed Won")
    won["amount"] = "4200"
    write_export(settings.input, [*rows, *funnel_rows(2, now, start=1)])  # type: ignore[arg-type]
    fake.adjustments_quota_exhausted = True
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_TRY_LATER
    assert "quota" in (report.error or "")
    assert statuses(settings) == {"uploaded": 6}  # L1 and L2 recorded, not pending
    fake.adjustments_quota_exhausted = False
    again = execute(settings, dry_run=False)
    assert again.exit_code == EXIT_OK
    assert again.summary()["restated"] == 1
    assert again.summary()["sent"] == 0
    assert len(fake.upload_requests) == 2


def test_wbraid_conversions_are_never_restated(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    """Google takes no adjustments for wbraid conversions: report it, send nothing."""
    won = {"stage": "Closed Won", "stage_changed_at": ts(now - pd.Timedelta(days=3))}
    rows = [
        {**won, "lead_id": "WB", "amount": "100", "wbraid": gclid("wb")},
        {**won, "lead_id": "GB", "amount": "100", "gbraid": gclid("gb")},
        {**won, "lead_id": "GC", "amount": "100", "gclid": gclid("gc")},
    ]
    write_export(settings.input, rows)  # type: ignore[arg-type]
    assert execute(settings, dry_run=False).summary()["sent"] == 3 * 3  # lead, qualified backfilled
    write_export(settings.input, [{**r, "amount": "250"} for r in rows])  # type: ignore[arg-type]
    report = execute(settings, dry_run=False)
    assert report.summary()["value_changed"] == 3
    assert report.summary()["restated"] == 2
    [adjustments] = fake.adjustment_requests
    with Ledger.open(settings.ledger) as ledger:
        frame = ledger.views.conversions_frame()
    ledger_rows = frame[frame["stage"] == "won"].set_index("lead_id")
    restated = {a.order_id for a in adjustments.conversion_adjustments}
    assert restated == {ledger_rows.loc["GB", "order_id"], ledger_rows.loc["GC", "order_id"]}
    assert ledger_rows.loc["WB", "value"] == 100  # the old value stands, and says why
    assert ledger_rows.loc["WB", "error_code"] == "NOT_ADJUSTABLE"
    assert list(ledger_rows.loc[["GB", "GC"], "value"]) == [250, 250]


def test_requests_in_flight_overlap_and_a_quota_stop_loses_nothing(
    settings: Settings, fake: FakeGoogleAds, now: pd.Timestamp
) -> None:
    """Four requests at once (the default): the network waits overlap; when the quota runs
    out mid-way the requests in flight are recorded, and the next run sends the rest, each
    conversion once."""
    rows = [row for row in funnel_rows(9000, now) if row["stage"] == "New"]
    write_export(settings.input, rows)  # type: ignore[arg-type]
    fake.latency = 0.2
    fake.quota_after = 2
    report = execute(settings, dry_run=False)
    assert report.exit_code == EXIT_TRY_LATER
    assert fake.most_in_flight >= 2
    counts = statuses(settings)
    assert counts["uploaded"] == len(fake.accepted) == 4000  # exactly what Google took
    assert counts["uploaded"] + counts["pending"] == 9000
    fake.quota_after, fake.quota_exhausted, fake.latency = None, False, 0.0
    again = execute(settings, dry_run=False)
    assert again.exit_code == EXIT_OK
    assert statuses(settings) == {"uploaded": 9000}
    assert len(fake.accepted) == 9000
    assert fake.failed_rows == 0  # nothing was sent twice (a replay would be refused)
