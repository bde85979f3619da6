"""Output that reads well (issue #16): what happened first, tables within 80 columns, --json on
every command, `preview` taking every option of `run`, one readable --since format."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from funnelvalue.cli import app
from tests.test_cli import example_project, invoke

runner = CliRunner()
BOX = "┏┃┡│└┌├"  # the characters a table line starts with


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return example_project(tmp_path)


def table_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line[:1] in BOX]


def commands() -> dict[str, Any]:
    """Every command by its full name ("mapping check", "run", ...)."""
    root: Any = typer.main.get_command(app)  # Typer's own click: a group has .commands
    found: dict[str, Any] = {}
    for name, command in root.commands.items():
        if hasattr(command, "commands"):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


def options(command: Any) -> set[str]:
    return {flag for param in command.params for flag in getattr(param, "opts", [])}


# -- what happened first, then details -------------------------------------------------------


def test_the_run_summary_comes_first_with_its_exit_code_and_meaning(project: Path) -> None:
    code, output = invoke("run")
    assert code == 1
    lines = output.splitlines()
    assert lines[0].startswith("Run #1 → csv:out/google_ads_conversions.csv")
    verdict = "exit 1: sent; some rows hold invalid data to fix in the CRM"
    assert verdict in lines  # one line of its own, under the box
    assert lines.index(verdict) < next(i for i, line in enumerate(lines) if "Per stage" in line)
    assert output.index("Per stage") < output.index("Invalid rows to fix in the CRM")
    code, output = invoke("preview")
    assert code == 1
    assert "exit 1: preview: would send 0 conversions; 4 invalid rows to fix in the CRM" in output


def test_every_table_fits_80_columns_without_cutting_a_cell(project: Path) -> None:
    """Cron mails and pipes get 80 columns: whole columns go before any id, time or amount
    is cut (no ellipsis anywhere)."""
    invoke("run")
    for args in (
        ("preview", "--full-refresh", "--ledger", "sqlite:///state/other.db"),
        ("status",),
        ("advise",),
        ("mapping", "check"),
    ):
        code, output = invoke(*args)
        assert code in (0, 1), output
        lines = table_lines(output)
        assert lines, args
        assert max(len(line) for line in lines) <= 80, (args, output)
        assert "…" not in output, (args, output)


def test_columns_are_dropped_least_needed_first_only_when_too_narrow() -> None:
    from funnelvalue.report import fitted

    def table() -> Table:
        made = Table()
        made.add_column("lead", no_wrap=True)
        made.add_column("action", no_wrap=True)
        made.add_column("id", no_wrap=True)
        made.add_column("reason")
        made.add_row("D-10000000001", "CRM qualified lead", "gclid", "a reason in many words")
        return made

    def headers(width: int) -> list[str]:
        console = Console(width=width)
        return [str(c.header) for c in fitted(console, table(), "action", "id").columns]

    assert headers(120) == ["lead", "action", "id", "reason"]
    assert headers(50) == ["lead", "id", "reason"]  # the action goes first
    assert headers(30) == ["lead", "reason"]
    assert headers(10) == ["lead", "reason"]  # never the columns not named droppable


def test_times_in_the_preview_are_short_and_say_their_zone(project: Path) -> None:
    code, output = invoke("preview", "--limit", "3")
    assert code == 1
    assert "times in Europe/Berlin" in output
    rows = [line for line in table_lines(output) if "D-" in line and "EUR" in line]
    assert rows
    for line in rows:  # 2026-10-02 23:44, no seconds, no offset
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        times = [cell for cell in cells if cell[:2] == "20" and ":" in cell]
        assert len(times) == 1, line
        assert len(times[0]) == 16, line


def test_empty_tables_are_not_shown(project: Path) -> None:
    with (project / "state" / "crm_leads.csv").open() as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        assert header
        lost = [row for row in reader if row["Deal Stage"] == "Lost"]
    assert lost  # the example has leads in an ignored stage
    with (project / "state" / "crm_leads.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(lost)
    code, output = invoke("preview")
    assert code == 0, output
    assert "Per stage" not in output
    assert "Conversions (" not in output
    assert "Invalid rows" not in output
    assert "exit 0: preview: would send 0 conversions" in output


def test_logs_stay_off_the_terminal_without_verbose(project: Path) -> None:
    result = runner.invoke(app, ["run"])
    assert " INFO " not in result.output
    result = runner.invoke(app, ["run", "-v"])
    assert "INFO funnelvalue.pipeline: run 2 finished" in result.output


# -- --json everywhere ------------------------------------------------------------------------


def test_every_command_takes_json() -> None:
    found = commands()
    assert {"run", "preview", "status", "doctor", "advise", "report", "export"} <= set(found)
    for name, command in found.items():
        if name == "mapping schema":  # prints a JSON document and nothing else anyway
            continue
        assert "--json" in options(command), name


def test_run_json_gives_value_totals_per_stage_and_action(project: Path) -> None:
    code, output = invoke("run", "--json")
    assert code == 1
    summary = json.loads(output)
    with (project / "out" / "google_ads_conversions.csv").open() as handle:
        rows = [line for line in csv.reader(handle) if len(line) > 4][1:]  # past the header
    by_action: dict[str, float] = {}
    for row in rows:  # Google Click ID, Conversion Name, Conversion Time, Value, Currency
        by_action[row[1]] = by_action.get(row[1], 0.0) + float(row[3])
    totals = {t["conversion_action"]: t for t in summary["value_by_action"]}
    assert {k: v["value"] for k, v in totals.items()} == pytest.approx(by_action)
    assert sum(t["conversions"] for t in totals.values()) == len(rows) == summary["sent"]
    stages = {t["stage"]: t for t in summary["value_by_stage"]}
    assert list(stages) == ["lead", "qualified", "won"]  # the funnel's order
    assert {t["currency"] for t in stages.values()} == {"EUR"}
    assert stages["lead"]["value"] == 10.0 * stages["lead"]["conversions"]
    # A second run sends nothing, so its totals are empty; a preview counts what it would send.
    assert json.loads(invoke("run", "--json")[1])["value_by_stage"] == []
    other = ("--ledger", "sqlite:///state/other.db")
    preview = json.loads(invoke("preview", "--json", *other)[1])
    assert preview["value_by_stage"] == summary["value_by_stage"]


def test_mapping_check_json(project: Path) -> None:
    code, output = invoke("mapping", "check", "--json")
    assert code == 0
    found = json.loads(output)
    assert found["valid"] is True
    assert [s["name"] for s in found["stages"]] == ["lead", "qualified", "won"]
    assert found["stages"][0]["value"] == 10.0
    assert found["stages"][2]["value"] == {"from_column": "amount", "default": 1000.0}
    assert found["stages_by_action"] == {
        "CRM lead": ["lead"],
        "CRM qualified": ["qualified"],
        "CRM won": ["won"],
    }
    assert found["fixed_value_total"] is None  # the deal's value comes from a column
    broken = project / "config" / "broken.yaml"
    broken.write_text("currency: EUR\nstages:\n  - name: lead\n    value: ten\n")
    code, output = invoke("mapping", "check", "--json", "--mapping", str(broken))
    assert code == 2
    error = json.loads(output)
    assert error["exit_code"] == 2
    assert "line 4" in error["error"]


def test_the_other_commands_json(project: Path, tmp_path: Path) -> None:
    code, output = invoke("mapping", "init", str(tmp_path / "new" / "mapping.yaml"), "--json")
    assert code == 0
    assert json.loads(output) == {
        "mapping": str(tmp_path / "new" / "mapping.yaml"),
        "schema": str(tmp_path / "new" / "mapping.schema.json"),
    }
    code, output = invoke("mapping", "init", str(tmp_path / "new" / "mapping.yaml"), "--json")
    assert code == 2
    assert "exists; pass --force" in json.loads(output)["error"]
    invoke("run")
    code, output = invoke("export", "--since", "2020-01-01", "-o", "out/again.csv", "--json")
    assert code == 0
    exported = json.loads(output)
    assert exported["output"] == "out/again.csv"
    assert exported["conversions"] > 600
    code, output = invoke("report", "--html", "out/report.html", "--json")
    assert code == 0
    assert json.loads(output)["bytes"] == (project / "out" / "report.html").stat().st_size


# -- preview takes what run takes ------------------------------------------------------------


def test_preview_takes_every_option_of_run(project: Path) -> None:
    found = commands()
    assert options(found["run"]) <= options(found["preview"])
    cron_line = ["--output", "out/daily.csv", "--destination", "csv", "--full-refresh"]
    code, _ = invoke("preview", *cron_line)
    assert code == 1
    assert not (project / "out").exists()  # a preview writes nothing
    code, _ = invoke("run", *cron_line)
    assert code == 1
    assert (project / "out" / "daily.csv").exists()


# -- --since ---------------------------------------------------------------------------------


def test_since_help_shows_one_readable_format() -> None:
    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert "%Y" not in result.output
    assert "2026-11-01T06:00+01:00" in " ".join(result.output.split())


@pytest.mark.parametrize(
    "given", ["2026-11-01", "2026-11-01T06:00", "2026-11-01 06:00:00+01:00", "2026-11-01T05:00Z"]
)
def test_since_takes_days_and_times_with_or_without_offset(project: Path, given: str) -> None:
    from funnelvalue.cli import _when

    moment = _when(given)
    assert (moment.year, moment.month) == (2026, 11)
    code, output = invoke("preview", "--source", "csv", "--since", given, "--json")
    assert code in (0, 1, 2), output  # accepted as an option (a CSV export is read whole)


def test_a_since_that_is_not_a_time_is_a_usage_error(project: Path) -> None:
    result = runner.invoke(app, ["preview", "--since", "last tuesday"])
    assert result.exit_code == 2
    assert "'last tuesday' is not a day or time: write 2026-11-01" in result.output
