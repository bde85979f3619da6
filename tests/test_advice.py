"""Funnel statistics, suggested values and warnings on generated funnels with known rates."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from sqlalchemy import create_engine, text
from typer.testing import CliRunner, Result

from funnelvalue import advice
from funnelvalue.cli import app
from funnelvalue.inspection import study
from funnelvalue.ledger import Ledger
from funnelvalue.mapping import Mapping, load_mapping
from funnelvalue.pipeline import execute
from funnelvalue.settings import Settings, load_settings
from tests.conftest import gclid, ts, write_export

EXTRA = ["score_band"]


def funnel(
    now: pd.Timestamp,
    leads: int,
    qualified: int,
    won: int,
    *,
    amount: float = 1000.0,
    qualify_after: float = 2,
    win_after: float = 10,
    spread_days: float = 15,
    with_click: float = 1.0,
) -> list[dict[str, Any]]:
    """Leads 0..n-1 created over ``spread_days``; the first ``qualified`` qualify after
    ``qualify_after`` days, the first ``won`` of those win ``win_after`` days after creation."""
    assert won <= qualified <= leads
    rows = []
    for n in range(leads):
        created = now - pd.Timedelta(days=win_after + 1 + spread_days * n / max(leads, 1))
        base = {
            "lead_id": f"L{n}",
            "created_at": ts(created),
            "gclid": gclid(n) if n < leads * with_click else None,
            "email": None,
        }
        rows.append({**base, "stage": "New", "stage_changed_at": ts(created)})
        if n < qualified:
            at = created + pd.Timedelta(days=qualify_after)
            rows.append({**base, "stage": "Sales Qualified Lead", "stage_changed_at": ts(at)})
        if n < won:
            at = created + pd.Timedelta(days=win_after)
            rows.append(
                {**base, "stage": "Closed Won", "stage_changed_at": ts(at), "amount": amount}
            )
    return rows


def stages_worth(lead: float, qualified: float) -> list[dict[str, Any]]:
    """The funnel's three stages (New, Sales Qualified Lead, Closed Won), lead and qualified
    at these values, won at the deal's amount (default 1000)."""
    return [
        {"name": "lead", "crm_values": ["New"], "conversion_action": "CRM lead", "value": lead},
        {
            "name": "qualified",
            "crm_values": ["Sales Qualified Lead"],
            "conversion_action": "CRM qualified",
            "value": qualified,
        },
        {
            "name": "won",
            "crm_values": ["Closed Won"],
            "conversion_action": "CRM won",
            "value": {"from_column": "amount", "default": 1000},
        },
    ]


@pytest.fixture
def settings(tmp_path: Path, mapping_file: Callable[..., Path]) -> Settings:
    return load_settings(
        mapping=mapping_file(timezone="UTC"),
        input=tmp_path / "export.csv",
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
        output=tmp_path / "out" / "import.csv",
    )


def cli(settings: Settings, command: str, *args: str) -> Result:
    where = ["-m", str(settings.mapping), "-i", str(settings.input), "--ledger", settings.ledger]
    return CliRunner().invoke(app, [command, *where, *args])


def advise(settings: Settings, now: pd.Timestamp, **options: Any) -> advice.Advice:
    return study(settings, load_mapping(settings.mapping), now=now, **options).advice


def by_name(found: advice.Advice) -> dict[str, advice.StageStats]:
    return {s.name: s for s in found.stages}


def test_known_rates_give_exact_suggestions_and_the_rules_of_thumb(
    settings: Settings, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel(now, 100, 40, 10))  # type: ignore[arg-type]
    found = advise(settings, now)
    stages = by_name(found)

    assert found.average_last_value == 1000
    assert (stages["lead"].leads, stages["lead"].to_last, stages["lead"].rate) == (100, 10, 0.1)
    assert stages["qualified"].rate == 0.25
    assert stages["lead"].suggested == 100
    assert stages["qualified"].suggested == 250
    assert stages["won"].suggested == 1000
    assert stages["qualified"].median_lag_days == 2
    assert stages["won"].median_lag_days == 10
    assert stages["lead"].rate_low is not None
    assert stages["lead"].rate_low < 0.1 < stages["lead"].rate_high  # type: ignore[operator]
    text = "\n".join(found.warnings)
    assert "only 10 'won' conversions in the last 30 days" in text  # < 30: full funnel
    assert "median 10 days after the lead" in text  # > 5 days: an earlier stage instead
    assert "make 'qualified' (median 2 days, 25% reach 'won')" in text
    assert "stage 'lead' is configured at 10.00, 10.0x lower" in text
    assert "stage 'qualified'" not in text  # 150 vs 250: within 2x


def test_enough_fast_wins_raise_no_full_funnel_warning(
    settings: Settings, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel(now, 200, 100, 50, win_after=3))  # type: ignore[arg-type]
    text = "\n".join(advise(settings, now).warnings)
    assert "too few for value-based bidding" not in text
    assert "learns too late" not in text


def test_small_samples_are_not_turned_into_values(settings: Settings, now: pd.Timestamp) -> None:
    write_export(settings.input, funnel(now, 12, 5, 2))  # type: ignore[arg-type]
    stages = by_name(advise(settings, now))
    assert stages["lead"].suggested is None
    assert "only 12 leads reached it (fewer than 20)" in stages["lead"].note
    assert stages["won"].suggested == 1000  # the average of what was won is still known


def test_no_won_deals_yet(settings: Settings, now: pd.Timestamp) -> None:
    write_export(settings.input, funnel(now, 50, 20, 0))  # type: ignore[arg-type]
    found = advise(settings, now)
    assert found.average_last_value is None
    assert all(s.suggested is None for s in found.stages)
    assert any("no lead has reached 'won' yet" in w for w in found.warnings)
    assert any("no conversions for stage 'won'" in w for w in found.warnings)


def test_a_single_lead_and_an_empty_stage(settings: Settings, now: pd.Timestamp) -> None:
    write_export(settings.input, funnel(now, 1, 0, 0))  # type: ignore[arg-type]
    found = advise(settings, now)
    stages = by_name(found)
    assert stages["lead"].reached == 1
    assert stages["qualified"].reached == 0
    assert stages["qualified"].rate is None
    assert any("no conversions for stage 'qualified'" in w for w in found.warnings)


def test_all_leads_in_one_day(settings: Settings, now: pd.Timestamp) -> None:
    write_export(settings.input, funnel(now, 40, 40, 40, spread_days=0, win_after=0))  # type: ignore[arg-type]
    stages = by_name(advise(settings, now))
    assert stages["won"].median_lag_days == 0
    assert stages["lead"].rate == 1.0
    assert stages["lead"].suggested == 1000


def test_low_click_id_match_rate_is_flagged(settings: Settings, now: pd.Timestamp) -> None:
    write_export(settings.input, funnel(now, 50, 20, 5, with_click=0.3))  # type: ignore[arg-type]
    found = advise(settings, now)
    assert found.match_rate == pytest.approx(0.3)
    assert any("only 30% of leads carry a click id" in w for w in found.warnings)


def test_recent_value_changes_ask_for_patience(
    settings: Settings, now: pd.Timestamp, mapping_file: Callable[..., Path]
) -> None:
    write_export(settings.input, funnel(now, 30, 10, 3))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    found = advise(settings, now)
    assert any("first sent values 0 days ago" in w for w in found.warnings)

    engine = create_engine(settings.ledger)  # as if the first values went out long ago, at 8
    with engine.begin() as conn:
        naive = now.tz_localize(None).to_pydatetime()
        conn.execute(
            text("UPDATE conversions SET sent_at = :at"), {"at": naive - timedelta(days=60)}
        )
        conn.execute(
            text("UPDATE conversions SET value = 8, sent_at = :at WHERE stage = 'lead'"),
            {"at": naive - timedelta(days=6)},
        )
    engine.dispose()
    warnings = "\n".join(advise(settings, now).warnings)
    assert "stage 'lead' was sent at 8 until 6 days ago and is 10 now" in warnings


def test_ledger_history_counts_leads_the_source_no_longer_returns(
    settings: Settings, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel(now, 40, 20, 10))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    write_export(settings.input, funnel(now, 40, 20, 10)[:5])  # type: ignore[arg-type]
    stages = by_name(advise(settings, now))
    assert stages["lead"].leads == 40
    assert stages["qualified"].rate == 0.5


def test_write_mapping_keeps_names_and_actions(
    settings: Settings, now: pd.Timestamp, tmp_path: Path
) -> None:
    write_export(settings.input, funnel(now, 100, 40, 10))  # type: ignore[arg-type]
    target = tmp_path / "suggested.yaml"
    result = cli(settings, "advise", "--write-mapping", str(target))
    assert result.exit_code == 0, result.output
    assert "lead: 10 -> 100; qualified: 150 -> 250" in result.output
    written = load_mapping(target)
    original = load_mapping(settings.mapping)
    assert [s.value for s in written.stages[:2]] == [100, 250]
    assert written.stages[2].value == original.stages[2].value  # from_column kept
    assert [s.conversion_action for s in written.stages] == [
        s.conversion_action for s in original.stages
    ]
    assert target.read_text().startswith("# Written by `funnelvalue advise --write-mapping`")


def test_advise_json(settings: Settings, now: pd.Timestamp) -> None:
    write_export(settings.input, funnel(now, 100, 40, 10))  # type: ignore[arg-type]
    result = cli(settings, "advise", "--json", "--window-days", "60")
    data = json.loads(result.stdout)
    assert data["window_days"] == 60
    assert [s["suggested"] for s in data["stages"]] == [100, 250, 1000]


# -- value strategies in the daily job ------------------------------------------------------


def strategy_mapping(mapping_file: Callable[..., Path], **lead: Any) -> Path:
    base: Mapping = load_mapping(mapping_file("base.yaml", timezone="UTC"))
    stages = [s.model_dump(exclude_none=True) for s in base.stages]
    stages[0] = {**stages[0], **lead}
    stages[1]["value"] = {"expected": {"default": 150, "window_days": 60, "min_sample": 10}}
    return mapping_file("strategy.yaml", timezone="UTC", stages=stages)


def test_expected_values_are_computed_each_run_and_frozen_once_sent(
    settings: Settings, now: pd.Timestamp, mapping_file: Callable[..., Path]
) -> None:
    mapped = Settings(**{**settings.model_dump(), "mapping": strategy_mapping(mapping_file)})
    write_export(settings.input, funnel(now, 100, 40, 10))  # type: ignore[arg-type]
    first = execute(mapped, dry_run=False)
    assert first.summary()["expected_values"] == {"qualified": 250.0}
    with Ledger.open(settings.ledger) as ledger:
        sent = ledger.views.conversions_frame()
    assert set(sent.loc[sent["stage"] == "qualified", "value"]) == {250.0}

    # More wins: the estimate moves, what was sent stays as sent (no restatement, no resend).
    write_export(settings.input, funnel(now, 100, 40, 20))  # type: ignore[arg-type]
    second = execute(mapped, dry_run=False)
    assert second.summary()["expected_values"] == {"qualified": 500.0}
    assert second.summary()["value_changed"] == 0
    assert second.summary()["sent"] == 10  # the new wins only


def test_expected_value_falls_back_to_its_default_below_min_sample(
    settings: Settings, now: pd.Timestamp, mapping_file: Callable[..., Path]
) -> None:
    mapped = Settings(**{**settings.model_dump(), "mapping": strategy_mapping(mapping_file)})
    write_export(settings.input, funnel(now, 20, 5, 1))  # type: ignore[arg-type]
    report = execute(mapped, dry_run=True)
    assert report.summary()["expected_values"] == {"qualified": 150.0}
    assert "default" in report.expected_values["qualified"][1]


def test_multiply_by_scales_values_by_a_lead_column(
    settings: Settings, now: pd.Timestamp, mapping_file: Callable[..., Path]
) -> None:
    scaled = strategy_mapping(
        mapping_file,
        multiply_by={"column": "score_band", "values": {"high": 1.5, "low": 0.5}},
    )
    mapped = Settings(**{**settings.model_dump(), "mapping": scaled})
    rows = funnel(now, 4, 0, 0)
    for row, band in zip(rows, ["High", " low ", "unknown", None], strict=True):
        row["score_band"] = band
    write_export(settings.input, rows, header=[*rows[0].keys()])  # type: ignore[arg-type]
    report = execute(mapped, dry_run=True)
    values = report.conversions.set_index("lead_id")["value"].to_dict()
    assert values == {"L0": 15.0, "L1": 5.0, "L2": 10.0, "L3": 10.0}
    assert any("2 rows have a score_band not in multiply_by" in w for w in report.warnings)


# -- the HTML report ------------------------------------------------------------------------


CHARTS = {"credited-vs-revenue", "funnel", "value-per-day", "lag", "outcomes"}


@pytest.fixture
def html_report(settings: Settings, now: pd.Timestamp, tmp_path: Path) -> Path:
    write_export(settings.input, funnel(now, 100, 40, 10))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    target = tmp_path / "report" / "funnel.html"
    result = cli(settings, "report", "--html", str(target))
    assert result.exit_code == 0, result.output
    return target


def test_the_report_is_one_self_contained_file_with_every_chart(html_report: Path) -> None:
    page = html_report.read_text()
    for chart in CHARTS:
        assert f"<figure data-chart='{chart}'><svg" in page
    assert re.findall(r"(?:src|href)=[\"'](?:https?:)?//", page) == []  # nothing to fetch
    assert "<script" not in page
    assert "<link" not in page
    assert "make &#x27;qualified&#x27;" in page  # the advice, escaped


def figure(page: str, name: str) -> str:
    start = page.index(f"<figure data-chart='{name}'>")
    return page[start : page.index("</figure>", start)]


def html_table(page: str, name: str) -> list[list[str]]:
    start = page.index(f"<table data-table='{name}'>")
    table = page[start : page.index("</table>", start)]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    return [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in rows]


def test_the_report_opens_with_what_was_sent_in_the_window(
    html_report: Path, settings: Settings
) -> None:
    page = html_report.read_text()
    with Ledger.open(settings.ledger) as ledger:
        sent = ledger.views.conversions_frame()
    by_stage = sent.groupby("stage")["value"].agg(["size", "sum"])
    head, *rows = html_table(page, "sent-by-stage")
    assert head == ["stage", "conversions", "value", "currency"]
    assert [row[0] for row in rows] == ["lead", "qualified", "won"]  # the funnel's order
    for stage, count, value, currency in rows:
        assert int(count.replace(",", "")) == by_stage.loc[stage, "size"]
        assert float(value.replace(",", "")) == pytest.approx(by_stage.loc[stage, "sum"])
        assert currency == "EUR"
    assert f"<b>{len(sent):,}</b>conversions sent" in page
    assert f"<b>{sent['value'].sum():,.2f} EUR</b>value sent" in page
    # The section a marketer reads first comes first; the window is stated.
    assert page.index("Sent to Google in the last 30 days") < page.index("<h2>Advice</h2>")


def test_the_report_counts_only_the_window(
    settings: Settings, now: pd.Timestamp, tmp_path: Path
) -> None:
    from funnelvalue.inspection import write_report

    write_export(settings.input, funnel(now, 20, 8, 2))  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    later = tmp_path / "later.html"
    mapping = load_mapping(settings.mapping)
    write_report(settings, mapping, later, now=pd.Timestamp.now("UTC") + pd.Timedelta(days=31))
    page = later.read_text()
    assert "Nothing was sent in this window." in page
    assert "data-table='sent-by-stage'" not in page
    assert "nothing sent in EUR from" in figure(page, "value-per-day")


def test_every_axis_names_its_unit_and_the_currency(html_report: Path) -> None:
    page = html_report.read_text()
    assert "value sent (EUR)" in figure(page, "value-per-day")
    assert "day sent (UTC)" in figure(page, "value-per-day")
    assert "value (EUR)" in figure(page, "credited-vs-revenue")
    assert "days after the lead" in figure(page, "lag")
    assert "conversions" in figure(page, "lag")
    assert "run (number, day started UTC)" in figure(page, "outcomes")
    assert ", count" in figure(page, "funnel")


def test_the_credited_chart_says_when_the_mapping_over_counts(
    html_report: Path, settings: Settings, mapping_file: Callable[..., Path], tmp_path: Path
) -> None:
    """The test mapping credits lead 10 + qualified 150 + the deal: more than the deal."""
    chart = figure(html_report.read_text(), "credited-vs-revenue")
    found = advice_of(settings)
    assert found.credited_per_won_deal is not None
    assert found.average_last_value is not None
    assert f"{found.credited_per_won_deal:,.2f}" in chart  # the bars carry their values
    assert f"{found.average_last_value:,.2f}" in chart
    assert "the mapping over-counts" in chart
    data = yaml.safe_load(settings.mapping.read_text())
    data["value_strategy"] = "incremental"
    incremental = tmp_path / "incremental.yaml"
    incremental.write_text(yaml.safe_dump(data))
    target = tmp_path / "incremental.html"
    result = CliRunner().invoke(
        app,
        [
            "report",
            "-m",
            str(incremental),
            "-i",
            str(settings.input),
            "--ledger",
            settings.ledger,
            "--html",
            str(target),
        ],
    )
    assert result.exit_code == 0, result.output
    chart = figure(target.read_text(), "credited-vs-revenue")
    assert "the values add up" in chart
    assert "over-counts" not in chart


def test_the_report_lists_the_rows_to_fix_with_lead_and_line(
    settings: Settings, now: pd.Timestamp, tmp_path: Path
) -> None:
    rows = funnel(now, 10, 4, 1)
    bad = {**rows[0], "lead_id": "BAD-1", "gclid": "short", "stage": "New"}
    rows.insert(3, bad)  # line 5 of the file: the header is line 1
    write_export(settings.input, rows)  # type: ignore[arg-type]
    target = tmp_path / "fix.html"
    result = cli(settings, "report", "--html", str(target))
    assert result.exit_code == 0, result.output
    page = target.read_text()
    head, *listed = html_table(page, "invalid")
    assert head == ["line", "lead", "CRM stage", "reason"]
    assert listed == [["5", "BAD-1", "New", listed[0][3]]]
    assert "gclid is malformed" in listed[0][3]
    assert "1 row of the CRM holds invalid data" in page  # said at the top, with a link
    write_export(settings.input, funnel(now, 10, 4, 1))  # type: ignore[arg-type]
    result = cli(settings, "report", "--html", str(target))
    assert "data-table='invalid'" not in target.read_text()  # nothing to fix: no table


def advice_of(settings: Settings) -> advice.Advice:
    return study(settings, load_mapping(settings.mapping)).advice


@pytest.mark.browser
def test_the_report_renders_in_headless_chromium(html_report: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    url = html_report.as_uri()
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    for chart in CHARTS:
        assert f'data-chart="{chart}"><svg' in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, "--window-size=1200,3000", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.std() > 0.05  # drawn, not a blank page


def test_no_leads_at_all_says_so_once(settings: Settings, now: pd.Timestamp) -> None:
    write_export(settings.input, [])  # type: ignore[arg-type]
    found = advise(settings, now)
    assert found.leads == 0
    assert found.warnings == [
        "no leads in the data: nothing to analyse (check the source and the mapping)"
    ]


def test_write_mapping_never_overwrites_the_mapping_in_use(
    settings: Settings, now: pd.Timestamp
) -> None:
    write_export(settings.input, funnel(now, 10, 2, 1))  # type: ignore[arg-type]
    before = settings.mapping.read_text()
    result = cli(settings, "advise", "--write-mapping", str(settings.mapping))
    assert result.exit_code == 2
    assert "would overwrite the mapping file in use" in result.output
    assert settings.mapping.read_text() == before


# -- values that add up (issue #16) -----------------------------------------------------------


def test_incremental_suggestions_add_up_to_the_deal(settings: Settings, now: pd.Timestamp) -> None:
    """10% of leads and 25% of qualified leads win 1000: full expected values 100 / 250 /
    1000; each stage's increase 100 / 150 / 750, whose sum is the deal."""
    write_export(settings.input, funnel(now, 100, 40, 10))  # type: ignore[arg-type]
    stages = by_name(advise(settings, now))
    increments = [stages[n].suggested_incremental for n in ("lead", "qualified", "won")]
    assert increments == [100, 150, 750]
    assert sum(increments) == 1000  # type: ignore[arg-type]
    # per deepest stage: what Google is credited is the expected value there
    assert stages["lead"].suggested_incremental == stages["lead"].suggested
    assert sum(increments[:2]) == stages["qualified"].suggested  # type: ignore[arg-type]


def test_the_over_count_warning_fires_on_the_example_mapping_only(
    settings: Settings, now: pd.Timestamp, mapping_file: Callable[..., Path]
) -> None:
    write_export(settings.input, funnel(now, 100, 40, 10))  # type: ignore[arg-type]
    found = advise(settings, now)  # lead 10, qualified 150, won = the deal (1000)
    assert found.credited_per_won_deal == 10 + 150 + 1000
    assert found.average_last_value == 1000
    warning = next(w for w in found.warnings if "adds their values up" in w)
    assert "credited 1,160.00 EUR, 1.16x the average deal of 1,000.00" in warning
    assert "lead 100.00, qualified 150.00, won 750.00" in warning
    assert "keep only one conversion action primary" in warning
    assert found.credited_per_lead == pytest.approx((100 * 10 + 40 * 150 + 10 * 1000) / 100)
    assert found.revenue_per_lead == 100

    # Only the deal counts (the earlier stages worth nothing in the goal): it adds up.
    stages = stages_worth(0, 0)
    adding_up = settings.model_copy(
        update={"mapping": mapping_file("adds-up.yaml", timezone="UTC", stages=stages)}
    )
    fine = advise(adding_up, now)
    assert fine.credited_per_won_deal == 1000
    assert not any("adds their values up" in w for w in fine.warnings)
    # ... and fixed values that overshoot the deal are flagged (100 + 150 + 1000 > 1000)
    stages[0]["value"], stages[1]["value"] = 100, 150
    over = settings.model_copy(
        update={"mapping": mapping_file("over.yaml", timezone="UTC", stages=stages)}
    )
    assert any("adds their values up" in w for w in advise(over, now).warnings)


def test_the_funnel_is_a_cohort_and_never_rises(settings: Settings, now: pd.Timestamp) -> None:
    """Old leads qualifying inside the window make more 'qualified' events than 'lead' events
    there; the cohort (leads first seen in the window) never rises down the funnel."""
    old = funnel(now - pd.Timedelta(days=35), 40, 40, 0, qualify_after=30, spread_days=1)
    young = funnel(now, 10, 3, 1, spread_days=5)
    young = [{**r, "lead_id": "Y" + r["lead_id"]} for r in young]
    write_export(settings.input, old + young)  # type: ignore[arg-type]
    stages = advise(settings, now).stages
    assert stages[1].conversions > stages[0].conversions  # events in the window can rise
    reached = [s.reached for s in stages]
    assert reached == sorted(reached, reverse=True)  # the cohort never does
    assert reached == [10, 3, 1]


def test_advise_json_has_the_documented_fields(settings: Settings, now: pd.Timestamp) -> None:
    write_export(settings.input, funnel(now, 100, 40, 10))  # type: ignore[arg-type]
    data = json.loads(cli(settings, "advise", "--json").stdout)
    for stage in data["stages"]:
        assert {
            "name",
            "reached",
            "close_rate",
            "median_lag_days",
            "configured_value",
            "suggested_value",
            "suggested_incremental_value",
        } <= set(stage)
    assert data["credited_per_won_deal"] == 1160
    assert data["average_deal_value"] == 1000
    assert isinstance(data["warnings"], list)
    assert [s["suggested_incremental_value"] for s in data["stages"]] == [100, 150, 750]


# -- the incremental value strategy in the daily job (issue #16) ------------------------------


def incremental_mapping(
    mapping_file: Callable[..., Path], name: str = "inc.yaml", **more: Any
) -> Path:
    stages = stages_worth(100, 250)
    return mapping_file(name, timezone="UTC", stages=stages, value_strategy="incremental", **more)


def sent_values(settings: Settings) -> dict[tuple[str, str], float]:
    with Ledger.open(settings.ledger) as ledger:
        rows = ledger.views.conversions_frame()
    return {(r.lead_id, r.stage): float(r.value) for r in rows.itertuples()}


def test_incremental_values_sum_to_the_worth_of_the_deepest_stage(
    settings: Settings, now: pd.Timestamp, mapping_file: Callable[..., Path]
) -> None:
    mapped = settings.model_copy(update={"mapping": incremental_mapping(mapping_file)})
    rows = funnel(now, 3, 2, 1, amount=1000)  # L0 won, L1 qualified, L2 a lead
    skipper = [r for r in funnel(now, 1, 1, 1, amount=600) if r["stage"] != "Sales Qualified Lead"]
    rows += [{**r, "lead_id": "SKIP"} for r in skipper]  # lead -> won, no qualified stage
    write_export(mapped.input, rows)  # type: ignore[arg-type]
    assert execute(mapped, dry_run=False).exit_code == 0
    sent = sent_values(mapped)
    assert [sent[("L0", s)] for s in ("lead", "qualified", "won")] == [100, 150, 750]
    assert sent[("L1", "lead")] + sent[("L1", "qualified")] == 250  # worth at its deepest
    assert sent[("L2", "lead")] == 100
    skipped = {stage: v for (lead, stage), v in sent.items() if lead == "SKIP"}
    assert skipped == {"lead": 100, "qualified": 150, "won": 350}  # backfilled: still the deal
    plain = settings.model_copy(
        update={
            "mapping": incremental_mapping(
                mapping_file, "plain.yaml", backfill_skipped_stages=False
            ),
            "ledger": settings.ledger.replace("ledger.db", "plain.db"),
        }
    )
    execute(plain, dry_run=False)
    skipped = {stage: v for (lead, stage), v in sent_values(plain).items() if lead == "SKIP"}
    assert skipped == {"lead": 100, "won": 500}  # not backfilled: the deal all the same
    found = advise(mapped, now)
    assert not any("adds their values up" in w for w in found.warnings)


def test_a_deal_change_is_restated_as_a_new_increment_and_estimates_stay_frozen(
    settings: Settings, now: pd.Timestamp, mapping_file: Callable[..., Path]
) -> None:
    mapped = settings.model_copy(update={"mapping": incremental_mapping(mapping_file)})
    rows = funnel(now, 1, 1, 1, amount=1000)
    write_export(mapped.input, rows)  # type: ignore[arg-type]
    execute(mapped, dry_run=False)
    # the deal grew, and the marketer raised the lead's worth: only the deal is a correction
    grown = [{**r, "amount": 1200} if r["stage"] == "Closed Won" else r for r in rows]
    write_export(mapped.input, grown)  # type: ignore[arg-type]
    edited = settings.model_copy(update={"mapping": incremental_mapping(mapping_file, "inc2.yaml")})
    text = Path(edited.mapping).read_text().replace("value: 100", "value: 120")
    Path(edited.mapping).write_text(text)
    preview = execute(edited, dry_run=True)
    values = preview.conversions.set_index("stage")
    assert values.loc["won", "value"] == 1200 - 250  # the deal minus what was credited
    assert values.loc["won", "state"] == "value changed"
    assert values.loc["lead", "value"] == 100  # what Google has; not re-estimated
    assert values.loc["lead", "state"] == "already sent"
    assert values.loc["qualified", "state"] == "already sent"


def test_an_export_of_current_stages_only_still_subtracts_what_was_credited(
    settings: Settings, now: pd.Timestamp, mapping_file: Callable[..., Path]
) -> None:
    mapped = settings.model_copy(update={"mapping": incremental_mapping(mapping_file)})
    rows = funnel(now, 1, 1, 1, amount=1000)
    write_export(mapped.input, [r for r in rows if r["stage"] != "Closed Won"])  # type: ignore[arg-type]
    execute(mapped, dry_run=False)
    write_export(mapped.input, [r for r in rows if r["stage"] == "Closed Won"])  # type: ignore[arg-type]
    execute(mapped, dry_run=False)  # today's export has the won row only
    assert sent_values(mapped)[("L0", "won")] == 1000 - 100 - 150


def test_a_deal_smaller_than_what_was_credited_is_sent_at_zero_and_said(
    settings: Settings, now: pd.Timestamp, mapping_file: Callable[..., Path]
) -> None:
    mapped = settings.model_copy(update={"mapping": incremental_mapping(mapping_file)})
    write_export(mapped.input, funnel(now, 1, 1, 1, amount=200))  # type: ignore[arg-type]
    report = execute(mapped, dry_run=False)
    assert sent_values(mapped)[("L0", "won")] == 0
    assert any("sent at 0, never negative" in w for w in report.warnings)
