"""Planted e-mails, phones and tokens never come out: not on stdout or stderr, not in the
ledger (every table dumped), not in the run summary, the HTML report or a crash log."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import responses
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from funnelvalue.cli import app
from funnelvalue.ledger.engine import database_error
from tests.conftest import gclid, ts, write_export
from tests.fakes.hubspot import TOKEN, FakeHubSpot

EMAIL = "anna.mueller@example.com"
PHONE = "+49 151 98765432"
SECRET = "pat-na1-0badc0de-feed-4bad-beef-123456789abc"
PLANTED = (EMAIL, "anna.mueller", "151 9876", "98765432", SECRET, "0badc0de")


def ledger_dump(url: str) -> str:
    engine = create_engine(url)
    with engine.connect() as conn:
        text = "\n".join(
            repr(conn.exec_driver_sql(f"SELECT * FROM {name}").fetchall())
            for name in inspect(engine).get_table_names()
        )
    engine.dispose()
    return text


def assert_nothing_planted(*texts: str) -> None:
    for text in texts:
        for planted in PLANTED:
            at = text.find(planted)
            assert at < 0, f"{planted!r} leaked: …{text[max(0, at - 80) : at + 40]}…"


@pytest.fixture
def project(
    tmp_path: Path, mapping_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.chdir(tmp_path)
    mapping_file(name="mapping.yaml", timezone="UTC")
    (tmp_path / "funnelvalue.yaml").write_text(
        f"mapping: {tmp_path / 'mapping.yaml'}\ninput: {tmp_path / 'export.csv'}\n"
        f"ledger: sqlite:///{tmp_path / 'ledger.db'}\noutput: {tmp_path / 'out' / 'import.csv'}\n"
    )
    monkeypatch.setenv("FUNNELVALUE_CONFIG", str(tmp_path / "funnelvalue.yaml"))
    return tmp_path


def test_personal_data_in_the_wrong_places_stays_out_of_everything(
    project: Path, now: pd.Timestamp
) -> None:
    t = ts(now - pd.Timedelta(days=2))
    rows = [
        {"lead_id": "OK", "stage": "New", "stage_changed_at": t, "gclid": gclid(1)},
        {"lead_id": "B", "stage": f"access {SECRET}", "stage_changed_at": t, "gclid": gclid(8)},
        {"lead_id": "S", "stage": EMAIL, "stage_changed_at": t, "gclid": gclid(2)},  # shifted
        {
            "lead_id": "C",
            "stage": "New",
            "stage_changed_at": t,
            "gclid": gclid(3),
            "currency": PHONE,
        },
        {"lead_id": "T", "stage": "New", "stage_changed_at": EMAIL, "gclid": gclid(4)},
        {"lead_id": "G", "stage": "New", "stage_changed_at": t, "gclid": EMAIL},
        {
            "lead_id": "V",
            "stage": "Closed Won",
            "stage_changed_at": t,
            "gclid": gclid(5),
            "amount": PHONE,
        },
        {
            "lead_id": "K",
            "stage": "New",
            "stage_changed_at": t,
            "gclid": gclid(6),
            "consent_ad_user_data": EMAIL,
        },
    ]
    export = write_export(project / "export.csv", rows)
    with export.open("a") as handle:  # a ragged row: the CRM user typed a comma in a cell
        handle.write(f"X1,New,{t},{EMAIL},{PHONE},extra,fields,here,too,many,now,yes\n")
    runner = CliRunner()
    outputs = []
    for command in (
        ["preview", "--limit", "0"],
        ["preview", "--json"],
        ["run", "--limit", "0"],
        ["run", "--json"],
        ["status", "--no-google"],
        ["status", "--json", "--no-google"],
        ["report", "--html", str(project / "report.html")],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code in (0, 1), (command, result.output)
        outputs += [result.stdout, result.stderr]
    summary = json.loads(outputs[6].strip().splitlines()[-1])
    assert summary["invalid"] == 8  # every planted row is left out, with a reason
    assert_nothing_planted(
        *outputs,
        ledger_dump(f"sqlite:///{project / 'ledger.db'}"),
        (project / "report.html").read_text(),
        *(p.read_text() for p in (project / "out").rglob("*.csv")),
    )


def test_a_token_a_crm_echoes_back_is_never_shown_or_stored(
    tmp_path: Path,
    mapping_file: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    now: pd.Timestamp,
) -> None:
    monkeypatch.setenv("FUNNELVALUE_HUBSPOT__ACCESS_TOKEN", TOKEN)
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    portal = FakeHubSpot(clock=now - pd.Timedelta(days=30))
    echo = json.dumps(
        {
            "status": "error",
            "category": "VALIDATION_ERROR",
            "message": f"bad request for Authorization: Bearer {TOKEN} (contact {EMAIL})",
        }
    )
    portal.failures = [(400, {}, echo)]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        portal.install(rsps)
        result = CliRunner().invoke(
            app,
            [
                "run",
                "--source",
                "hubspot",
                "--mapping",
                str(mapping_file(timezone="UTC")),
                "--ledger",
                ledger,
                "--json",
            ],
        )
    assert result.exit_code == 2, result.output
    assert "HubSpot answered HTTP 400" in result.output
    for leaked in (TOKEN, EMAIL):
        assert leaked not in result.stdout
        assert leaked not in result.stderr
        assert leaked not in ledger_dump(ledger)


def test_a_password_in_the_committed_config_is_refused_with_the_variable_to_use(
    tmp_path: Path,
) -> None:
    config = tmp_path / "funnelvalue.yaml"
    config.write_text("source: sql\nsql:\n  url: postgresql+psycopg://crm:Sup3rSecret@db/crm\n")
    result = CliRunner().invoke(app, ["preview", "--config", str(config)])
    assert result.exit_code == 2
    assert "sql.url -> FUNNELVALUE_SQL__URL" in result.output
    assert "Sup3rSecret" not in result.output


def test_database_errors_are_one_line_without_the_sql_or_its_parameters() -> None:
    from sqlalchemy.exc import IntegrityError

    original = Exception("UNIQUE constraint failed: conversions.key")
    exc = IntegrityError(
        "INSERT INTO conversions (key, click_id) VALUES (?, ?)", (f"k|{EMAIL}", gclid(9)), original
    )
    message = str(database_error(exc, "sqlite:///state/funnelvalue.db", "ledger write failed"))
    assert "\n" not in message
    assert "INSERT" not in message
    assert gclid(9) not in message
    assert EMAIL not in message
