"""The CLI end to end: Typer's CliRunner for most, a real subprocess for the rest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from funnelvalue.cli import app
from funnelvalue.ledger import Ledger
from tests.conftest import REPO

runner = CliRunner()
BAD_ROWS = {
    "D-90001": "gclid is malformed (12 characters;",
    "D-90002": "unknown CRM stage 'Negotiation'",
    "D-90003": "stage_changed_at is empty",
    "D-90004": "amount is not a number",
}
SKIPPED = "no click id (gclid, gbraid, wbraid) and no email or phone (1)"  # D-90005


def example_project(folder: Path) -> Path:
    """The bundled example project (examples/config/ and a freshly dated copy of its export in
    state/), copied to ``folder`` as a user has it after `make example`."""
    shutil.copytree(REPO / "examples" / "config", folder / "config")
    subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "make_example.py"),
            "--output",
            str(folder / "state" / "crm_leads.csv"),
        ],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return example_project(tmp_path)


def invoke(*args: str) -> tuple[int, str]:
    """Exit code and output; with --json, the output is stdout alone (it must parse)."""
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout if "--json" in args else result.output


def test_run_reports_rejects_and_a_second_run_sends_nothing(project: Path) -> None:
    code, output = invoke("run")
    assert code == 1  # the example has bad rows on purpose
    for lead, reason in BAD_ROWS.items():
        assert lead in output
        assert reason in output
    assert "D-90005" not in output  # not attributable: counted, not listed as a problem
    assert f"skipped, not attributable to an ad click: {SKIPPED}" in output
    assert "Unknown CRM stages: 'Negotiation' (1)" in output
    exported = (project / "out" / "google_ads_conversions.csv").read_text()
    assert exported.startswith("Parameters:TimeZone=Europe/Berlin\nGoogle Click ID,")
    code, output = invoke("run", "--json")
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["sent"] == 0
    assert summary["rejected"] == 5
    assert (summary["invalid"], summary["skipped"]) == (4, 1)
    assert summary["skipped_reasons"] == {"no_identifier": 1}
    assert code == 1
    assert summary["already_sent"] == summary["conversions_built"] > 600
    assert summary["output"] == "out/google_ads_conversions.csv"
    code, output = invoke("status")
    assert code == 0
    assert "Last runs" in output
    assert "written" in output


def test_json_summary_has_the_documented_counts(project: Path) -> None:
    code, output = invoke("run", "--json", "--output", "out/import.csv")
    summary = json.loads(output)
    assert code == 1
    for key in ("rows_read", "conversions_built", "rejected", "already_sent", "sent", "output"):
        assert key in summary
    assert summary["sent"] == summary["written"] == summary["conversions_built"]
    assert summary["output"] == "out/import.csv"
    assert summary["ledger"] == "sqlite:///state/funnelvalue.db"
    assert summary["ledger_created"] is True
    assert (project / "out" / "import.csv").exists()
    assert len(list((project / "out" / "runs").glob("import-*-run1.csv"))) == 1


def test_an_output_name_that_changes_per_run_is_refused(project: Path) -> None:
    """The fetched file must keep its name; a template like x{y}.csv used to crash."""
    for template in ("out/x{y}.csv", "out/run-{run_id}.csv"):
        code, output = invoke("run", "--output", template)
        assert code == 2, output
        assert "has placeholders" in output
    assert not (project / "out").exists()


def test_preview_shows_everything_and_writes_nothing(project: Path) -> None:
    code, output = invoke("preview", "--limit", "0")
    assert code == 1
    assert "Preview (nothing sent, nothing written)" in output
    assert "Conversions (" in output
    assert "would be sent" in output
    for reason in BAD_ROWS.values():
        assert reason in output
    assert "new" in output
    assert not (project / "state" / "funnelvalue.db").exists()  # no ledger: nothing written
    assert not (project / "out").exists()
    invoke("run")
    code, output = invoke("preview", "--json")
    summary = json.loads(output)
    assert summary["to_send"] == 0
    assert summary["already_sent"] > 600


def test_broken_mapping_stops_before_anything_is_written(project: Path) -> None:
    mapping = project / "config" / "mapping.yaml"
    mapping.write_text(
        mapping.read_text()
        .replace("currency: EUR", "currency: Euro")
        .replace("value: 150", "value: lots")
    )
    code, output = invoke("run")
    assert code == 2
    assert "2 problems" in output
    assert "line 6, currency: 'Euro' is not an ISO 4217 currency code" in output
    assert "line 24, stage 'qualified' → value: value 'lots' is not a number" in output
    assert not (project / "state" / "funnelvalue.db").exists()
    assert not (project / "out").exists()
    code, output = invoke("mapping", "check")
    assert code == 2
    assert "2 problems" in output


def test_user_errors_are_one_line_with_exit_2(project: Path) -> None:
    code, output = invoke("run", "--input", "missing.csv")
    assert code == 2
    assert "CRM export missing.csv does not exist" in output
    code, output = invoke("run", "--destination", "carrier-pigeon")
    assert code == 2
    assert (
        "unknown destination 'carrier-pigeon' (available: csv, data-manager, google-ads)" in output
    )
    code, output = invoke("run", "--json", "--ledger", "not a url")
    assert code == 2
    assert json.loads(output.splitlines()[0])["exit_code"] == 2


def test_mapping_init_then_check(tmp_path: Path) -> None:
    code, output = invoke("mapping", "init", "conf/m.yaml")
    assert code == 0
    code, output = invoke("mapping", "init", "conf/m.yaml")
    assert code == 2
    assert "--force" in output
    code, output = invoke("mapping", "check", "--mapping", "conf/m.yaml")
    assert code == 0
    assert "is valid: 3 stages" in output
    assert "CRM qualified" in output


def test_mapping_check_gives_advice(tmp_path: Path) -> None:
    invoke("mapping", "init", "m.yaml")
    text = (tmp_path / "m.yaml").read_text().replace("value: 150", "value: 5")
    (tmp_path / "m.yaml").write_text(text)
    code, output = invoke("mapping", "check", "--mapping", "m.yaml")
    assert code == 0
    assert "stage 'qualified' is worth less" in output


def test_status_on_a_ledger_without_runs(tmp_path: Path) -> None:
    code, output = invoke("status")
    assert code == 0
    assert "there is no ledger" in output
    assert not (tmp_path / "state").exists()  # looking creates nothing
    Ledger.open("sqlite:///state/funnelvalue.db").close()
    code, output = invoke("status")
    assert "the ledger at sqlite:///state/funnelvalue.db has no runs yet" in output


@pytest.mark.slow
def test_real_process_exit_codes_and_output(project: Path) -> None:
    command = [sys.executable, "-m", "funnelvalue", "run", "--json"]
    first = subprocess.run(
        command, cwd=project, capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == 1, first.stderr
    assert json.loads(first.stdout)["sent"] > 600
    assert first.stderr == ""  # log lines only with -v or a log level
    logged = {**os.environ, "FUNNELVALUE_LOG_LEVEL": "INFO"}  # what scheduler/run.sh sets
    second = subprocess.run(
        command, cwd=project, capture_output=True, text=True, timeout=120, check=False, env=logged
    )
    assert json.loads(second.stdout)["sent"] == 0
    assert "INFO funnelvalue.pipeline: run 2 finished" in second.stderr
    verbose = subprocess.run(
        [*command, "-v"], cwd=project, capture_output=True, text=True, timeout=120, check=False
    )
    assert "INFO funnelvalue.pipeline: run 3 finished" in verbose.stderr
    bad = subprocess.run(
        [*command[:-1], "--mapping", "nope.yaml"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: mapping file nope.yaml does not exist"


def test_paths_follow_the_project_not_the_current_folder(project: Path, tmp_path: Path) -> None:
    """From another folder, --config finds the same mapping, export and ledger."""
    code, _ = invoke("run")
    assert code == 1
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    config = str(project / "config" / "funnelvalue.yaml")
    code, output = invoke("preview", "--config", config, "--json")
    summary = json.loads(output)
    assert summary["already_sent"] == summary["conversions_built"] > 600  # the same ledger
    assert summary["ledger"] == f"sqlite:///{project / 'state' / 'funnelvalue.db'}"
    code, output = invoke("status", "--project-dir", str(project), "--no-google")
    assert code == 0
    assert f"Ledger: sqlite:///{project / 'state' / 'funnelvalue.db'}" in " ".join(output.split())
    assert not (elsewhere / "state").exists()  # nothing created where the job was started


def test_status_of_a_ledger_that_does_not_exist_says_so(tmp_path: Path) -> None:
    code, output = invoke("status", "--no-google", "--project-dir", str(tmp_path))
    assert code == 0
    assert "there is no ledger at sqlite:///state/funnelvalue.db" in " ".join(output.split())
    assert "wrong folder" in output
