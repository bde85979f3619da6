"""SQL source against a real SQLite database and, where configured, PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from funnelvalue.cli import app
from funnelvalue.errors import EXIT_CONFIG, EXIT_TRY_LATER, ConfigError, SourceError
from funnelvalue.mapping import load_mapping
from funnelvalue.settings import load_settings
from funnelvalue.sources.sql import SqlSource
from tests.conftest import gclid, postgres_url

TABLE = "crm_stage_changes"
COLUMNS = {"Deal ID": "lead_id", "Deal Stage": "stage", "changed_at": "stage_changed_at"}


@pytest.fixture(params=["sqlite", "postgresql"])
def crm_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A CRM table in a warehouse: SQLite file, and PostgreSQL where one is configured."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'crm.db'}"
    else:
        found = postgres_url()
        if found is None:
            pytest.skip("FUNNELVALUE_TEST_POSTGRES_URL is not set")
        url = found
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
        conn.execute(
            text(
                f'CREATE TABLE {TABLE} ("Deal ID" VARCHAR(20), "Deal Stage" VARCHAR(40), '
                "changed_at TIMESTAMP, updated_at TIMESTAMP, gclid VARCHAR(100), "
                "email VARCHAR(100), amount NUMERIC(12, 2))"
            )
        )
    engine.dispose()
    return url


def insert(url: str, rows: list[dict[str, Any]]) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                f'INSERT INTO {TABLE} ("Deal ID", "Deal Stage", changed_at, updated_at, gclid, '
                "email, amount) VALUES (:lead, :stage, :changed, :updated, :gclid, :email, "
                ":amount)"
            ),
            rows,
        )
    engine.dispose()


def row(
    lead: int, stage: str, changed: pd.Timestamp, amount: float | None = None
) -> dict[str, Any]:
    """Times are naive local (Europe/Berlin), as many warehouses store them."""
    local = changed.tz_convert("Europe/Berlin").tz_localize(None).to_pydatetime()
    return {
        "lead": f"D{lead}",
        "stage": stage,
        "changed": local,
        "updated": local,
        "gclid": gclid(lead),
        "email": f"buyer{lead}@example.com",
        "amount": amount,
    }


@pytest.fixture
def sql_mapping(mapping_file: Callable[..., Path]) -> Path:
    return mapping_file(timezone="Europe/Berlin", columns=COLUMNS)


def sql_source(mapping: Path, **sql: Any) -> SqlSource:
    return SqlSource.from_settings(load_settings(source="sql", sql=sql), load_mapping(mapping))


def test_table_rows_become_canonical_leads_in_utc(
    crm_url: str, sql_mapping: Path, now: pd.Timestamp
) -> None:
    insert(
        crm_url,
        [
            row(1, "New", now - pd.Timedelta(days=9)),
            row(1, "Closed Won", now - pd.Timedelta(days=2), amount=1234.5),
        ],
    )
    source = sql_source(sql_mapping, url=crm_url, table=TABLE, watermark_column="updated_at")
    fetched = source.fetch(None)
    leads = fetched.leads

    assert leads["lead_id"].tolist() == ["D1", "D1"]
    assert leads["stage_changed_at"].tolist() == [
        now - pd.Timedelta(days=9),
        now - pd.Timedelta(days=2),
    ]
    assert pd.to_numeric(leads["amount"]).tolist()[1] == 1234.5
    assert fetched.high_water == now - pd.Timedelta(days=2)


def test_only_rows_changed_since_are_read(
    crm_url: str, sql_mapping: Path, now: pd.Timestamp
) -> None:
    insert(crm_url, [row(n, "New", now - pd.Timedelta(days=n)) for n in range(1, 6)])
    source = sql_source(sql_mapping, url=crm_url, table=TABLE, watermark_column="updated_at")
    leads = source.fetch((now - pd.Timedelta(days=3, hours=1)).to_pydatetime()).leads
    assert sorted(leads["lead_id"]) == ["D1", "D2", "D3"]


def test_chunks_give_the_same_frame_as_one_read(
    crm_url: str, sql_mapping: Path, now: pd.Timestamp
) -> None:
    insert(crm_url, [row(n, "New", now - pd.Timedelta(hours=n)) for n in range(7)])
    whole = sql_source(sql_mapping, url=crm_url, table=TABLE).fetch(None).leads
    chunked_source = sql_source(sql_mapping, url=crm_url, table=TABLE, chunk_size=2)
    chunked_read = chunked_source.fetch(None)
    chunked = chunked_read.leads
    pd.testing.assert_frame_equal(whole, chunked)
    assert chunked["source_row"].tolist() == list(range(1, 8))
    assert chunked_read.high_water == now


def test_query_file_receives_since_as_a_bound_parameter(
    crm_url: str, sql_mapping: Path, now: pd.Timestamp, tmp_path: Path
) -> None:
    insert(crm_url, [row(n, "New", now - pd.Timedelta(days=n)) for n in range(1, 4)])
    query = tmp_path / "leads.sql"
    query.write_text(
        f'SELECT "Deal ID", "Deal Stage", changed_at, gclid FROM {TABLE}\n'
        "WHERE changed_at >= :since AND \"Deal Stage\" <> 'Spam';\n"
    )
    source = sql_source(sql_mapping, url=crm_url, query_file=str(query))
    assert sorted(
        source.fetch((now - pd.Timedelta(days=2, hours=1)).to_pydatetime()).leads["lead_id"]
    ) == [
        "D1",
        "D2",
    ]
    assert len(source.fetch(None).leads) == 3  # a full refresh binds 1970-01-01


def test_query_without_since_reads_everything_and_says_so(
    crm_url: str, sql_mapping: Path, now: pd.Timestamp, tmp_path: Path
) -> None:
    insert(crm_url, [row(1, "New", now)])
    query = tmp_path / "all.sql"
    query.write_text(f"SELECT * FROM {TABLE}")
    source = sql_source(sql_mapping, url=crm_url, query_file=str(query))
    fetched = source.fetch(now.to_pydatetime())
    assert len(fetched.leads) == 1
    assert ":since" in fetched.warnings[0]


def test_bad_query_is_a_configuration_error_with_the_database_message(
    crm_url: str, sql_mapping: Path, tmp_path: Path
) -> None:
    query = tmp_path / "typo.sql"
    query.write_text("SELECT * FROM crm_stage_chnges WHERE changed_at >= :since")
    with pytest.raises(ConfigError, match="crm_stage_chnges") as caught:
        sql_source(sql_mapping, url=crm_url, query_file=str(query)).fetch(None)
    assert caught.value.exit_code == EXIT_CONFIG


def test_missing_column_names_the_mapping_fix(
    crm_url: str, mapping_file: Callable[..., Path]
) -> None:
    mapping = mapping_file(timezone="UTC")  # no `columns:` renames
    with pytest.raises(ConfigError, match="watermark_column 'stage_changed_at'"):
        sql_source(mapping, url=crm_url, table=TABLE).fetch(None)
    with pytest.raises(SourceError, match="columns:"):  # filter fine, columns still unmapped
        sql_source(mapping, url=crm_url, table=TABLE, watermark_column="updated_at").fetch(None)


def test_unreachable_database_is_retried_then_transient(
    sql_mapping: Path, waits: list[float]
) -> None:
    url = "postgresql+psycopg://crm:s3cret-password@127.0.0.1:9/crm?connect_timeout=1"
    source = sql_source(sql_mapping, url=url, table=TABLE)
    assert "s3cret-password" not in source.name
    with pytest.raises(SourceError, match="unavailable after retries") as caught:
        source.fetch(None)
    assert caught.value.exit_code == EXIT_TRY_LATER
    assert len(waits) >= 2
    assert "s3cret-password" not in str(caught.value)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ({}, "sql.url"),
        ({"url": "sqlite:///x.db"}, "exactly one of"),
        ({"url": "sqlite:///x.db", "table": "t; DROP TABLE x"}, "not a table name"),
        ({"url": "nosuchdb://x", "table": "t"}, "not a usable database URL"),
        ({"url": "sqlite:///x.db", "query_file": "missing.sql"}, "cannot be read"),
    ],
)
def test_incomplete_settings_stop_before_reading(
    sql_mapping: Path, sql: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        sql_source(sql_mapping, **sql)


def test_daily_runs_from_a_warehouse_table(
    crm_url: str, sql_mapping: Path, now: pd.Timestamp, tmp_path: Path
) -> None:
    insert(crm_url, [row(n, "New", now - pd.Timedelta(days=5)) for n in range(3)])
    insert(crm_url, [row(3, "New", now - pd.Timedelta(hours=3))])  # the watermark
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "funnelvalue.yaml").write_text(
        f"source: sql\nsql:\n  url: {crm_url}\n  table: {TABLE}\n  watermark_column: updated_at\n"
        f"mapping: {sql_mapping}\nledger: sqlite:///{tmp_path / 'ledger.db'}\n"
    )

    def run(*extra: str) -> dict[str, Any]:
        result = CliRunner().invoke(app, ["run", "--json", *extra])
        assert result.exit_code == 0, result.output
        summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return summary

    assert run()["sent"] == 4
    insert(
        crm_url,
        [
            row(0, "Sales Qualified Lead", now - pd.Timedelta(hours=2)),
            row(9, "New", now - pd.Timedelta(hours=1)),
        ],
    )
    second = run()
    assert second["sent"] == 2
    # Read: what changed since the watermark minus the 24 h overlap. Recognised as sent: the
    # row read again within the overlap, and D0's 'lead' stage backfilled under its new row.
    assert second["rows_read"] == 3
    assert second["already_sent"] == 2
    assert run("--since", (now - pd.Timedelta(days=30)).strftime("%Y-%m-%d"))["sent"] == 0


def test_nothing_changed_is_an_empty_frame(crm_url: str, sql_mapping: Path) -> None:
    source = sql_source(sql_mapping, url=crm_url, table=TABLE, watermark_column="updated_at")
    fetched = source.fetch(pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime())
    assert fetched.leads.empty
    assert fetched.high_water is None
