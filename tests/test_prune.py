"""`funnelvalue ledger prune`: forgets only what Google can no longer take."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from funnelvalue.cli import app
from funnelvalue.errors import ConfigError
from funnelvalue.inspection import prune_ledger
from funnelvalue.ledger import Ledger
from funnelvalue.pipeline import execute
from funnelvalue.settings import Settings, load_settings
from tests.conftest import funnel_rows, write_export

REAL_NOW = pd.Timestamp.now(tz="UTC")
LONG_AGO = REAL_NOW - pd.Timedelta(days=200)


@pytest.fixture
def settings(tmp_path: Path, mapping_file: Callable[..., Path], ledger_url: str) -> Settings:
    return load_settings(
        mapping=mapping_file(timezone="UTC"),
        input=tmp_path / "export.csv",
        output=tmp_path / "out" / "import.csv",
        ledger=ledger_url,
    )


def statuses(settings: Settings) -> dict[str, int]:
    with Ledger.open(settings.ledger) as ledger:
        return ledger.views.status_counts()


def test_only_finished_conversions_older_than_googles_window_are_forgotten(
    settings: Settings,
) -> None:
    write_export(settings.input, funnel_rows(4, LONG_AGO))  # sent 200 days ago
    execute(settings, dry_run=False, now=LONG_AGO)
    write_export(settings.input, funnel_rows(2, REAL_NOW, start=10))  # and lately
    execute(settings, dry_run=False)
    with Ledger.open(settings.ledger) as ledger, ledger.db.tx() as conn:  # one old row unsent
        conn.execute(
            text("UPDATE conversions SET status = 'held' WHERE lead_id = 'L0' AND stage = 'lead'")
        )
    assert statuses(settings) == {"written": 7 + 4 - 1, "held": 1}

    counted = prune_ledger(settings, 120, dry_run=True)
    assert (counted.conversions, counted.dry_run) == (6, True)
    assert statuses(settings) == {"written": 10, "held": 1}  # a dry run deletes nothing

    pruned = prune_ledger(settings, 120, dry_run=False)
    assert pruned.conversions == 6
    assert statuses(settings) == {"written": 4, "held": 1}  # the recent ones, the unsent one
    with Ledger.open(settings.ledger) as ledger:
        assert len(ledger.views.last_runs()) == 2  # runs are kept


def test_a_pruned_ledger_never_sends_an_old_conversion_again(settings: Settings) -> None:
    write_export(settings.input, funnel_rows(3, LONG_AGO))
    execute(settings, dry_run=False, now=LONG_AGO)
    prune_ledger(settings, 120, dry_run=False)
    assert statuses(settings) == {}
    again = execute(settings, dry_run=False)  # the same old export, read today
    assert again.summary()["to_send"] == 0
    assert again.summary()["skipped_reasons"] == {"expired": len(again.skipped)}
    assert again.exit_code == 0


def test_googles_window_cannot_be_pruned(settings: Settings, tmp_path: Path) -> None:
    write_export(settings.input, funnel_rows(1, REAL_NOW))
    execute(settings, dry_run=False)
    with pytest.raises(ConfigError, match="more than 90 days"):
        prune_ledger(settings, 90, dry_run=False)
    result = CliRunner().invoke(
        app, ["ledger", "prune", "--older-than", "30", "--ledger", settings.ledger]
    )
    assert result.exit_code == 2
    assert "Google takes conversions up to 90 days" in result.output
    fine = CliRunner().invoke(
        app, ["ledger", "prune", "--older-than", "365", "--dry-run", "--ledger", settings.ledger]
    )
    assert fine.exit_code == 0, fine.output
    assert "would forget 0 finished conversions" in fine.stdout
