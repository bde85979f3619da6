"""Progress for a person at a terminal; nothing for cron, pipes or --json."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from rich.console import Console
from typer.testing import CliRunner

from funnelvalue import progress
from funnelvalue.cli import app
from funnelvalue.pipeline import execute
from funnelvalue.settings import Settings, load_settings
from tests.conftest import funnel_rows, write_export


class Notes:
    def __init__(self) -> None:
        self.phases: list[tuple[str, int | None]] = []
        self.steps = 0
        self.closed = False

    def phase(self, name: str, total: int | None) -> None:
        self.phases.append((name, total))

    def advance(self, steps: int) -> None:
        self.steps += steps

    def close(self) -> None:
        self.closed = True


def settings_for(tmp_path: Path, mapping_file: Callable[..., Path], **more: object) -> Settings:
    return load_settings(
        mapping=mapping_file(timezone="UTC"),
        input=tmp_path / "export.csv",
        output=tmp_path / "out" / "import.csv",
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
        **more,
    )


def test_a_run_reports_its_phases_and_counts_what_it_sends(
    tmp_path: Path,
    mapping_file: Callable[..., Path],
    now: pd.Timestamp,
    use_fake_client: Callable[[], None],
) -> None:
    write_export(
        tmp_path / "export.csv", [r for r in funnel_rows(5000, now) if r["stage"] == "New"]
    )
    notes = Notes()
    with progress.listening(notes):
        report = execute(
            settings_for(tmp_path, mapping_file, destination="google-ads"), dry_run=False
        )
    names = [name.split()[0] for name, _ in notes.phases]
    assert names == ["reading", "building", "checking", "sending"]
    assert notes.phases[-1][1] == len(report.to_send) == 5000
    assert notes.steps == 5000  # advanced per batch as each came back
    assert notes.closed


def test_the_bar_shows_only_after_its_delay_and_leaves_nothing_behind() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=80)
    quick = progress.Bar(console, delay=5.0)
    quick.phase("reading", None)
    quick.close()
    assert stream.getvalue() == ""  # a quick run flashes nothing
    slow = progress.Bar(console, delay=0.0)
    time.sleep(0.2)
    slow.phase("sending to google-ads:1", 10)
    slow.advance(4)
    slow.close()
    assert "sending to google-ads:1" in stream.getvalue()


def test_no_bar_in_json_or_a_pipe(
    tmp_path: Path, mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    write_export(tmp_path / "export.csv", funnel_rows(3, now))
    mapping = str(mapping_file(timezone="UTC"))
    args = ["run", "--input", str(tmp_path / "export.csv"), "--mapping", mapping]
    args += ["--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--output", str(tmp_path / "o.csv")]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("{")  # the JSON object and nothing else
    assert "sending to" not in result.output
