"""HubSpot source against a fake portal served through `responses` (tests/fakes/hubspot.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import responses
from typer.testing import CliRunner

from funnelvalue.cli import app
from funnelvalue.errors import EXIT_CONFIG, EXIT_TRY_LATER, ConfigError, SourceError
from funnelvalue.ledger import Ledger
from funnelvalue.mapping import Mapping, load_mapping
from funnelvalue.pipeline import execute
from funnelvalue.settings import load_settings
from funnelvalue.sources.hubspot import SCOPES, HubSpotSource
from tests.conftest import gclid
from tests.fakes.google_ads_server import FakeGoogleAds
from tests.fakes.hubspot import TOKEN, FakeHubSpot, iso

STAGES = [
    {
        "name": "lead",
        "crm_values": ["Appointment Scheduled"],
        "conversion_action": "CRM lead",
        "value": 10,
    },
    {
        "name": "qualified",
        "crm_values": ["Qualified To Buy"],
        "conversion_action": "CRM qualified",
        "value": 150,
    },
    {
        "name": "won",
        "crm_values": ["Closed Won"],
        "conversion_action": "CRM won",
        "value": {"from_column": "amount", "default": 1000},
    },
]
IGNORE = ["Contract Sent", "Closed Lost"]


@pytest.fixture
def portal(now: pd.Timestamp, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHubSpot]:
    monkeypatch.setenv("FUNNELVALUE_HUBSPOT__ACCESS_TOKEN", TOKEN)
    fake = FakeHubSpot(clock=now - pd.Timedelta(days=30))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        yield fake


@pytest.fixture
def hubspot_mapping(mapping_file: Callable[..., Path]) -> Path:
    return mapping_file(timezone="UTC", stages=STAGES, ignore=IGNORE)


def source(mapping: Path, **hubspot: Any) -> HubSpotSource:
    settings = load_settings(source="hubspot", hubspot=hubspot) if hubspot else load_settings()
    return HubSpotSource.from_settings(settings, load_mapping(mapping))


def day(now: pd.Timestamp, n: float) -> pd.Timestamp:
    return now - pd.Timedelta(days=n)


def won_deal(portal: FakeHubSpot, now: pd.Timestamp, n: int, amount: str = "4200") -> str:
    contact = portal.add_contact(gclid=gclid(n), email=f"Person{n}@Example.com", phone="+4930123")
    return portal.add_deal(
        [
            ("appointmentscheduled", day(now, 12)),
            ("qualifiedtobuy", day(now, 9)),
            ("closedwon", day(now, 3)),
        ],
        amount=amount,
        currency="EUR",
        contact=contact,
    )


def test_each_stage_entered_becomes_a_row_with_its_own_time(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp
) -> None:
    deal = won_deal(portal, now, 1)
    leads = source(hubspot_mapping).fetch(None).leads

    assert leads["stage"].tolist() == ["Appointment Scheduled", "Qualified To Buy", "Closed Won"]
    assert leads["stage_changed_at"].tolist() == [day(now, 12), day(now, 9), day(now, 3)]
    assert set(leads["lead_id"]) == {deal}
    assert set(leads["gclid"]) == {gclid(1)}
    assert set(leads["amount"]) == {"4200"}
    assert set(leads["currency"]) == {"EUR"}
    # A first run pages the list API: no search, no 10,000 cap.
    assert ("POST", "/crm/v3/objects/deals/search") not in portal.requests


def test_changed_deals_only_are_read_after_the_watermark(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp
) -> None:
    old = won_deal(portal, now, 1)
    cutoff = portal.tick()
    fresh = won_deal(portal, now, 2)
    reader = source(hubspot_mapping)
    fetched = reader.fetch(cutoff.to_pydatetime())
    leads = fetched.leads

    assert set(leads["lead_id"]) == {fresh} != {old}
    assert fetched.high_water == pd.Timestamp(portal.objects["deals"][fresh]["hs_lastmodifieddate"])


def test_more_than_10000_changes_are_read_in_windows(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp
) -> None:
    since = portal.tick()
    deals = [
        portal.add_deal([("appointmentscheduled", day(now, 5))], contact=None)
        for _ in range(10_250)
    ]
    leads = source(hubspot_mapping).fetch(since.to_pydatetime()).leads

    assert sorted(leads["lead_id"]) == sorted(deals)  # each exactly once
    searches = [r for r in portal.requests if r[1].endswith("/search")]
    assert len(searches) > 10_000 // 200  # a second window was needed


def test_more_than_10000_changes_at_one_time_stop_with_the_way_out(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp
) -> None:
    """A search window cannot move past a timestamp 10,000 records share (a bulk import):
    say so and point at the list API, never search the same window forever."""
    since = portal.tick()
    for _ in range(10_050):
        portal.add_deal([("appointmentscheduled", day(now, 5))], contact=None)
    same = iso(portal.tick())
    for deal in portal.objects["deals"].values():
        deal["hs_lastmodifieddate"] = same
    portal.max_searches = 200
    with pytest.raises(SourceError, match="share the modification time") as caught:
        source(hubspot_mapping).fetch(since.to_pydatetime())
    assert "--full-refresh" in str(caught.value)
    searches = sum(path.endswith("/search") for _, path in portal.requests)
    assert searches == 2 * 10_000 // 200  # from the watermark, then once at the shared time


def test_rate_limit_is_retried_after_the_wait_hubspot_asks_for(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp, waits: list[float]
) -> None:
    won_deal(portal, now, 1)
    limited = {
        "status": "error",
        "message": "You have reached your secondly limit.",
        "errorType": "RATE_LIMIT",
        "policyName": "SECONDLY",
    }
    portal.failures += [
        (429, {"Retry-After": "3"}, json.dumps(limited)),
        (502, {}, "<html>Bad Gateway</html>"),
    ]
    leads = source(hubspot_mapping).fetch(None).leads

    assert len(leads) == 3
    assert waits[0] == 3.0
    assert len(waits) == 2


def test_outage_after_retries_is_transient(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp
) -> None:
    won_deal(portal, now, 1)
    portal.failures += [(503, {}, "")] * 10
    with pytest.raises(SourceError, match="unavailable after retries") as caught:
        source(hubspot_mapping).fetch(None)
    assert caught.value.exit_code == EXIT_TRY_LATER


def test_refused_token_is_a_configuration_error_that_names_the_setting(
    portal: FakeHubSpot, hubspot_mapping: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNELVALUE_HUBSPOT__ACCESS_TOKEN", "pat-na1-expired-secret")
    with pytest.raises(ConfigError, match="FUNNELVALUE_HUBSPOT__ACCESS_TOKEN") as caught:
        source(hubspot_mapping).fetch(None)
    assert caught.value.exit_code == EXIT_CONFIG
    assert "expired-secret" not in str(caught.value)


def test_missing_token_stops_before_any_request(
    portal: FakeHubSpot, hubspot_mapping: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUNNELVALUE_HUBSPOT__ACCESS_TOKEN")
    with pytest.raises(ConfigError, match="create a Service Key in HubSpot") as caught:
        source(hubspot_mapping)
    assert "crm.objects.deals.read, crm.schemas.deals.read" in str(caught.value)
    assert portal.requests == []


def test_unknown_pipeline_is_named_with_the_ones_that_exist(
    portal: FakeHubSpot, hubspot_mapping: Path
) -> None:
    with pytest.raises(ConfigError, match="Sales Pipeline"):
        source(hubspot_mapping, pipelines=["Renewals"]).fetch(None)


def test_pipeline_filter_is_sent_to_search(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp
) -> None:
    since = portal.tick()
    won_deal(portal, now, 1)
    other = portal.add_deal([("appointmentscheduled", day(now, 2))], pipeline="renewals")
    leads = source(hubspot_mapping, pipelines=["Sales Pipeline"]).fetch(since.to_pydatetime()).leads
    assert other not in set(leads["lead_id"])
    assert portal.pipeline_filter_used


def test_legacy_date_properties_and_undated_current_stage(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp
) -> None:
    legacy = portal.add_deal([("qualifiedtobuy", day(now, 4))], legacy_dates=True)
    undated = portal.add_deal([])
    portal.touch("deals", undated, dealstage="closedwon", amount="900")
    reader = source(hubspot_mapping)
    fetched = reader.fetch(None)
    leads = fetched.leads.set_index("lead_id")

    assert leads.loc[legacy, "stage"] == "Qualified To Buy"
    assert leads.loc[legacy, "stage_changed_at"] == day(now, 4)
    assert leads.loc[undated, "stage"] == "Closed Won"
    assert leads.loc[undated, "stage_changed_at"] == pd.Timestamp(
        portal.objects["deals"][undated]["hs_lastmodifieddate"]
    )
    assert "1 HubSpot deals have no 'date entered'" in fetched.warnings[0]


def test_deal_contact_with_a_click_id_is_preferred(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp
) -> None:
    without = portal.add_contact(gclid=None, email="assistant@example.com")
    with_click = portal.add_contact(gclid=gclid(7), email="buyer@example.com")
    deal = portal.add_deal([("appointmentscheduled", day(now, 2))])
    portal.links[deal] = [without, with_click]
    leads = source(hubspot_mapping).fetch(None).leads
    assert leads["gclid"].tolist() == [gclid(7)]
    assert leads["email"].tolist() == ["buyer@example.com"]


def test_lifecycle_stages_of_contacts(
    portal: FakeHubSpot, mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    stages = [
        {"name": "lead", "crm_values": ["Lead"], "conversion_action": "CRM lead", "value": 10},
        {"name": "sql", "crm_values": ["Sales Qualified Lead"], "conversion_action": "SQL"}
        | {"value": 200},
        {"name": "customer", "crm_values": ["Customer"], "conversion_action": "Won", "value": 900},
    ]
    mapping = mapping_file(timezone="UTC", stages=stages)
    contact = portal.add_contact(
        gclid=gclid(3),
        lifecyclestage="salesqualifiedlead",
        hs_v2_date_entered_lead=day(now, 6).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        hs_lifecyclestage_salesqualifiedlead_date=day(now, 2).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    )
    leads = source(mapping, object="contacts").fetch(None).leads
    assert leads["lead_id"].tolist() == [contact, contact]
    assert leads["stage"].tolist() == ["Lead", "Sales Qualified Lead"]
    assert leads["stage_changed_at"].tolist() == [day(now, 6), day(now, 2)]


def test_secrets_in_the_config_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "funnelvalue.yaml").write_text(
        "source: hubspot\nhubspot:\n  access_token: pat-na1-committed-secret\n"
    )
    with pytest.raises(ConfigError, match="FUNNELVALUE_HUBSPOT__ACCESS_TOKEN") as caught:
        load_settings()
    assert "committed-secret" not in str(caught.value)


def test_config_file_and_env_token_combine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "funnelvalue.yaml").write_text(
        "source: hubspot\nhubspot:\n  object: contacts\n  click_id_property: gclid__c\n"
    )
    (tmp_path / ".env").write_text("FUNNELVALUE_HUBSPOT__ACCESS_TOKEN=pat-from-dotenv\n")
    settings = load_settings()
    assert settings.hubspot.object == "contacts"
    assert settings.hubspot.click_id_property == "gclid__c"
    assert settings.hubspot.access_token is not None
    assert settings.hubspot.access_token.get_secret_value() == "pat-from-dotenv"


# -- end to end: the daily job against the fake portal --------------------------------------


def run(tmp_path: Path, mapping: Path, *extra: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--source",
            "hubspot",
            "--mapping",
            str(mapping),
            "--ledger",
            f"sqlite:///{tmp_path / 'ledger.db'}",
            "--json",
            *extra,
        ],
    )
    assert result.exit_code in (0, 1), result.output
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def test_daily_runs_send_only_the_stages_reached_since_the_last_run(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp, tmp_path: Path
) -> None:
    deals = []
    for n in range(6):
        contact = portal.add_contact(gclid=gclid(n))
        deals.append(portal.add_deal([("appointmentscheduled", day(now, 10))], contact=contact))
    first = run(tmp_path, hubspot_mapping)
    assert first["since"] is None
    assert first["sent"] == 6

    portal.tick(3600)
    portal.move_deal(deals[0], "qualifiedtobuy", day(now, 1))
    portal.move_deal(deals[1], "closedwon", day(now, 1))  # skips qualified: backfilled
    portal.objects["deals"][deals[1]]["amount"] = "5000"
    second = run(tmp_path, hubspot_mapping)

    assert second["sent"] == 3  # qualified for deal 0; qualified + won for deal 1
    assert second["since"] is not None
    assert pd.Timestamp(second["since"]) < pd.Timestamp(
        portal.objects["deals"][deals[0]]["hs_lastmodifieddate"]
    )
    with Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        sent = ledger.views.conversions_frame()
    won = sent[sent["stage"] == "won"]
    assert won["value"].tolist() == [5000.0]
    assert len(sent) == 9
    assert sent["order_id"].is_unique

    assert run(tmp_path, hubspot_mapping)["sent"] == 0
    assert run(tmp_path, hubspot_mapping, "--full-refresh")["sent"] == 0

    status = CliRunner().invoke(
        app, ["status", "--no-google", "--ledger", f"sqlite:///{tmp_path / 'ledger.db'}"]
    )
    assert "Watermark hubspot:deals" in status.output
    assert "next run reads changes since" in status.output

    contradicting = ["--since", "2026-11-01", "--full-refresh"]
    both = CliRunner().invoke(
        app, ["run", "-s", "hubspot", "-m", str(hubspot_mapping), *contradicting]
    )
    assert both.exit_code == EXIT_CONFIG
    assert "contradict" in both.output


def test_deal_without_click_id_is_rejected_with_its_reason(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp, tmp_path: Path
) -> None:
    deal = portal.add_deal([("appointmentscheduled", day(now, 3))])
    settings = load_settings(
        source="hubspot", mapping=hubspot_mapping, ledger=f"sqlite:///{tmp_path / 'l.db'}"
    )
    report = execute(settings, dry_run=True)
    assert report.rejects["lead_id"].tolist() == [deal]
    assert "click id" in report.rejects["reason"].iloc[0]


def test_source_failure_records_nothing_and_keeps_the_watermark(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp, tmp_path: Path
) -> None:
    won_deal(portal, now, 1)
    run(tmp_path, hubspot_mapping)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger.open(ledger_url) as ledger:
        before = ledger.runs.watermark("hubspot:deals")
    portal.failures += [(503, {}, "")] * 10
    result = CliRunner().invoke(
        app, ["run", "--source", "hubspot", "-m", str(hubspot_mapping), "--ledger", ledger_url]
    )
    assert result.exit_code == EXIT_TRY_LATER
    assert "HubSpot is unavailable" in result.output
    with Ledger.open(ledger_url) as ledger:
        assert ledger.runs.watermark("hubspot:deals") == before


def test_hubspot_to_google_ads_end_to_end(
    portal: FakeHubSpot,
    hubspot_mapping: Path,
    now: pd.Timestamp,
    tmp_path: Path,
    fake: FakeGoogleAds,
    use_fake_client: Callable[[], None],
) -> None:
    for n in range(3):
        won_deal(portal, now, n)
    summary = run(tmp_path, hubspot_mapping, "--destination", "google-ads")
    assert summary["sent"] == 9
    assert fake.uploaded == 9
    deal = next(iter(portal.objects["deals"]))
    portal.touch("deals", deal)  # modified, nothing new
    assert run(tmp_path, hubspot_mapping, "--destination", "google-ads")["sent"] == 0
    assert fake.uploaded == 9


def test_mapping_value_columns_are_read_as_deal_properties(
    portal: FakeHubSpot, mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    stages = [dict(s) for s in STAGES]
    stages[2] = {**stages[2], "value": {"from_column": "hs_projected_amount", "default": 1}}
    mapping = mapping_file(timezone="UTC", stages=stages, ignore=IGNORE)
    deal = won_deal(portal, now, 1)
    portal.objects["deals"][deal]["hs_projected_amount"] = "777.5"
    loaded: Mapping = load_mapping(mapping)
    leads = HubSpotSource.from_settings(load_settings(source="hubspot"), loaded).fetch(None).leads
    assert set(leads["hs_projected_amount"]) == {"777.5"}


def test_an_empty_portal_is_an_empty_frame(portal: FakeHubSpot, hubspot_mapping: Path) -> None:
    assert source(hubspot_mapping).fetch(None).leads.empty
    since = pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime()
    assert source(hubspot_mapping).fetch(since).leads.empty


def test_the_client_keeps_under_hubspots_limits(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp, waits: list[float]
) -> None:
    since = portal.tick()
    for _ in range(450):  # three search pages
        portal.add_deal([("appointmentscheduled", day(now, 2))], contact=None)
    source(hubspot_mapping).fetch(since.to_pydatetime())
    assert len([w for w in waits if w > 0]) == 2  # pages 2 and 3 waited: 5 searches a second

    waits.clear()
    portal.burst_remaining = 1  # the burst window is nearly used up: wait it out (10 s)
    source(hubspot_mapping).fetch(None)
    assert 10.0 in waits


def test_the_documented_scopes_are_enough_for_each_mode(
    portal: FakeHubSpot, hubspot_mapping: Path, mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    """A Service Key with exactly the scopes the README lists reads every endpoint used."""
    portal.scopes = set(SCOPES["deals"])
    won_deal(portal, now, 1)
    assert len(source(hubspot_mapping).fetch(None).leads) == 3
    since = portal.tick().to_pydatetime()
    won_deal(portal, now, 2)
    assert len(source(hubspot_mapping).fetch(since).leads) == 3  # search and associations too
    portal.scopes = set(SCOPES["contacts"])  # contacts mode needs no deal scope
    lifecycle = mapping_file(
        timezone="UTC",
        stages=[{"name": "lead", "crm_values": ["Lead"], "conversion_action": "L", "value": 1}],
    )
    portal.add_contact(gclid=gclid(3), lifecyclestage="lead")
    assert len(source(lifecycle, object="contacts").fetch(None).leads) >= 1


def test_a_missing_scope_is_named_in_the_error(
    portal: FakeHubSpot, mapping_file: Callable[..., Path]
) -> None:
    """Contacts mode reads the lifecycle property's options: crm.schemas.contacts.read."""
    portal.scopes = {"crm.objects.contacts.read"}
    lifecycle = mapping_file(
        timezone="UTC",
        stages=[{"name": "lead", "crm_values": ["Lead"], "conversion_action": "L", "value": 1}],
    )
    with pytest.raises(ConfigError, match=r"it lacks crm\.schemas\.contacts\.read") as caught:
        source(lifecycle, object="contacts").fetch(None)
    assert caught.value.exit_code == EXIT_CONFIG


def test_a_deal_with_more_contacts_than_a_page_is_read_to_the_end(
    portal: FakeHubSpot, hubspot_mapping: Path, now: pd.Timestamp
) -> None:
    """The batch associations read pages per deal (paging.next.after on that result)."""
    portal.association_page = 3
    people = [portal.add_contact(gclid=None, email=f"p{n}@example.com") for n in range(6)]
    buyer = portal.add_contact(gclid=gclid(9), email="buyer@example.com")
    deal = portal.add_deal([("appointmentscheduled", day(now, 2))])
    portal.links[deal] = [*people, buyer]  # the one with the click id is on the third page
    leads = source(hubspot_mapping).fetch(None).leads
    assert leads["gclid"].tolist() == [gclid(9)]
    reads = [p for m, p in portal.requests if p.endswith("/associations/deals/contacts/batch/read")]
    assert len(reads) == 3
