"""Salesforce source against a fake org served through `responses` (tests/fakes/salesforce.py)."""

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
from funnelvalue.mapping import load_mapping
from funnelvalue.pipeline import execute
from funnelvalue.settings import load_settings
from funnelvalue.sources.salesforce import SalesforceSource
from tests.conftest import gclid
from tests.fakes.salesforce import INSTANCE, PASSWORD, SESSION, FakeSalesforce

STAGES = [
    {
        "name": "lead",
        "crm_values": ["Open - Not Contacted", "Working - Contacted"],
        "conversion_action": "CRM lead",
        "value": 10,
    },
    {
        "name": "qualified",
        "crm_values": ["Qualified", "Prospecting"],
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
IGNORE = ["Closed Lost", "Closed - Not Converted", "Negotiation/Review"]
TOKEN_ENV = {
    "FUNNELVALUE_SALESFORCE__INSTANCE_URL": INSTANCE,
    "FUNNELVALUE_SALESFORCE__ACCESS_TOKEN": SESSION,
}


@pytest.fixture
def org(now: pd.Timestamp, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSalesforce]:
    for name, value in TOKEN_ENV.items():
        monkeypatch.setenv(name, value)
    fake = FakeSalesforce(clock=now - pd.Timedelta(days=30))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        yield fake


@pytest.fixture
def sf_mapping(mapping_file: Callable[..., Path]) -> Path:
    return mapping_file(timezone="UTC", stages=STAGES, ignore=IGNORE)


def source(mapping: Path, **salesforce: Any) -> SalesforceSource:
    settings = load_settings(source="salesforce", salesforce=salesforce)
    return SalesforceSource.from_settings(settings, load_mapping(mapping))


def day(now: pd.Timestamp, n: float) -> pd.Timestamp:
    return now - pd.Timedelta(days=n)


def converted_lead(org: FakeSalesforce, now: pd.Timestamp, n: int) -> tuple[str, str]:
    lead = org.add_lead(day(now, 20), gclid=gclid(n), email=f"buyer{n}@example.com")
    org.set_status(lead, "Working - Contacted", day(now, 18))
    opportunity = org.convert(lead, "Prospecting", day(now, 15), amount=5000.0)
    org.move(opportunity, "Closed Won", day(now, 4), Amount=6200.0)
    return lead, opportunity


def test_converted_lead_and_its_opportunity_are_one_funnel(
    org: FakeSalesforce, sf_mapping: Path, now: pd.Timestamp
) -> None:
    lead, _ = converted_lead(org, now, 1)
    leads = source(sf_mapping).fetch(None).leads

    assert set(leads["lead_id"]) == {lead}
    assert leads.sort_values("stage_changed_at")["stage"].tolist() == [
        "Open - Not Contacted",
        "Working - Contacted",
        "Qualified",
        "Prospecting",
        "Closed Won",
    ]
    won = leads[leads["stage"] == "Closed Won"].iloc[0]
    assert won["stage_changed_at"] == day(now, 4)
    assert won["gclid"] == gclid(1)  # the Lead's click id, on the Opportunity's rows
    assert won["email"] == "buyer1@example.com"
    assert float(won["amount"]) == 6200.0
    assert won["currency"] == "EUR"


def test_pages_are_followed_with_query_more(
    org: FakeSalesforce, sf_mapping: Path, now: pd.Timestamp
) -> None:
    org.page_size = 2
    leads = {org.add_lead(day(now, 5), gclid=gclid(n)) for n in range(7)}
    frame = source(sf_mapping).fetch(None).leads
    assert set(frame["lead_id"]) == leads


def test_incremental_read_brings_the_lead_behind_a_changed_opportunity(
    org: FakeSalesforce, sf_mapping: Path, now: pd.Timestamp
) -> None:
    lead = org.add_lead(day(now, 20), gclid=gclid(2))
    opportunity = org.convert(lead, "Prospecting", day(now, 15), amount=900.0)
    quiet = org.add_lead(day(now, 19), gclid=gclid(3))
    since = org.tick()
    org.move(opportunity, "Closed Won", day(now, 1))
    reader = source(sf_mapping)
    fetched = reader.fetch(since.to_pydatetime())
    leads = fetched.leads

    assert quiet not in set(leads["lead_id"])
    won = leads[leads["stage"] == "Closed Won"]
    assert won["lead_id"].tolist() == [lead]
    assert won["gclid"].tolist() == [gclid(2)]
    assert fetched.high_water == pd.Timestamp(
        org.records["Opportunity"][opportunity]["SystemModstamp"]
    )
    assert any("SystemModstamp >= " in q for q in org.queries)


def test_opportunity_without_a_lead_uses_its_own_click_id_field(
    org: FakeSalesforce, sf_mapping: Path, now: pd.Timestamp
) -> None:
    org.opportunity_fields = ["Opportunity_GCLID__c"]
    opportunity = org.add_opportunity(
        "Prospecting", day(now, 3), amount=100.0, Opportunity_GCLID__c=gclid(9)
    )
    leads = source(sf_mapping, opportunity_click_id_field="Opportunity_GCLID__c").fetch(None).leads
    assert leads["lead_id"].tolist() == [opportunity]
    assert leads["gclid"].tolist() == [gclid(9)]


def test_missing_click_id_field_suggests_the_ones_that_look_like_it(
    org: FakeSalesforce, sf_mapping: Path
) -> None:
    org.click_field = "Google_Click_ID__c"
    with pytest.raises(ConfigError, match="Google_Click_ID__c") as caught:
        source(sf_mapping).fetch(None)
    assert "GCLID__c" in str(caught.value)


def test_leads_without_status_history_are_timed_at_their_last_change(
    org: FakeSalesforce, sf_mapping: Path, now: pd.Timestamp
) -> None:
    lead = org.add_lead(day(now, 6), gclid=gclid(4), status="Working - Contacted")
    reader = source(sf_mapping, objects=["Lead"])
    fetched = reader.fetch(None)
    leads = fetched.leads
    assert leads["stage_changed_at"].tolist() == [
        pd.Timestamp(org.records["Lead"][lead]["LastModifiedDate"])
    ]
    assert "Field History Tracking" in fetched.warnings[0]


def test_expired_session_is_a_configuration_error(
    org: FakeSalesforce, sf_mapping: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNELVALUE_SALESFORCE__ACCESS_TOKEN", "00Dexpired-secret")
    with pytest.raises(ConfigError, match="ACCESS_TOKEN") as caught:
        source(sf_mapping).fetch(None)
    assert caught.value.exit_code == EXIT_CONFIG
    assert "expired-secret" not in str(caught.value)


def test_server_errors_are_retried(
    org: FakeSalesforce, sf_mapping: Path, now: pd.Timestamp, waits: list[float]
) -> None:
    converted_lead(org, now, 1)
    unavailable = json.dumps([{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}])
    org.failures += [(503, {}, unavailable), (503, {}, unavailable)]
    assert len(source(sf_mapping).fetch(None).leads) == 5
    assert len(waits) == 2


def test_daily_request_limit_stops_with_exit_3(org: FakeSalesforce, sf_mapping: Path) -> None:
    limit = json.dumps(
        [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    )
    org.failures.append((403, {}, limit))
    with pytest.raises(SourceError, match="limit") as caught:
        source(sf_mapping).fetch(None)
    assert caught.value.exit_code == EXIT_TRY_LATER


def test_api_usage_is_watched(org: FakeSalesforce, sf_mapping: Path, now: pd.Timestamp) -> None:
    converted_lead(org, now, 1)
    org.api_used = 12_500  # 83 %
    reader = source(sf_mapping)
    assert "API usage" in reader.fetch(None).warnings[0]
    org.api_used = 14_600  # 97 %: leave the rest of the day to the org's other integrations
    with pytest.raises(SourceError, match="API usage") as caught:
        source(sf_mapping).fetch(None)
    assert caught.value.transient


def test_username_password_login(
    org: FakeSalesforce, sf_mapping: Path, now: pd.Timestamp, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in TOKEN_ENV:
        monkeypatch.delenv(name)
    converted_lead(org, now, 1)
    monkeypatch.setenv("FUNNELVALUE_SALESFORCE__USERNAME", "ops@example.com")
    monkeypatch.setenv("FUNNELVALUE_SALESFORCE__PASSWORD", PASSWORD)
    monkeypatch.setenv("FUNNELVALUE_SALESFORCE__SECURITY_TOKEN", "tok-secret")
    assert len(source(sf_mapping).fetch(None).leads) == 5

    monkeypatch.setenv("FUNNELVALUE_SALESFORCE__PASSWORD", "wrong-secret")
    with pytest.raises(ConfigError, match="INVALID_LOGIN") as caught:
        source(sf_mapping).fetch(None)
    assert "secret" not in str(caught.value)


def test_missing_credentials_list_the_ways_to_log_in(
    sf_mapping: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="needs credentials") as caught:
        source(sf_mapping)
    assert "__CONSUMER_KEY" in str(caught.value)


def test_daily_runs_send_only_new_stages(
    org: FakeSalesforce, sf_mapping: Path, now: pd.Timestamp, tmp_path: Path
) -> None:
    lead = org.add_lead(day(now, 20), gclid=gclid(1))
    opportunity = org.convert(lead, "Prospecting", day(now, 15), amount=3000.0)
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"

    def run() -> dict[str, Any]:
        args = ["run", "--source", "salesforce", "-m", str(sf_mapping), "--ledger", ledger]
        result = CliRunner().invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return summary

    assert run()["sent"] == 2  # lead, qualified
    org.tick(3600)
    org.move(opportunity, "Closed Won", day(now, 1), Amount=4100.0)
    assert run()["sent"] == 1
    with Ledger.open(ledger) as opened:
        sent = opened.views.conversions_frame()
    assert sent.loc[sent["stage"] == "won", "value"].tolist() == [4100.0]


def test_an_empty_org_is_an_empty_frame(org: FakeSalesforce, sf_mapping: Path) -> None:
    assert source(sf_mapping).fetch(None).leads.empty


def test_a_lead_without_a_click_id_is_rejected_with_its_reason(
    org: FakeSalesforce, sf_mapping: Path, now: pd.Timestamp, tmp_path: Path
) -> None:
    lead = org.add_lead(day(now, 3), gclid=None)
    settings = load_settings(
        source="salesforce", mapping=sf_mapping, ledger=f"sqlite:///{tmp_path / 'l.db'}"
    )
    report = execute(settings, dry_run=True)
    assert report.rejects["lead_id"].tolist() == [lead]
    assert "click id" in report.rejects["reason"].iloc[0]
