"""`funnelvalue doctor` against a healthy project and broken ones: one line per check, the fix,
exit 0 or 2, nothing sent."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from funnelvalue.cli import app
from funnelvalue.ledger import Ledger
from tests.fakes.google_ads_server import FakeGoogleAds
from tests.test_cli import example_project

runner = CliRunner()


def doctor(*args: str) -> tuple[int, dict[str, dict[str, object]]]:
    result = runner.invoke(app, ["doctor", "--json", *args])
    assert "Traceback" not in result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    return result.exit_code, checks


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return example_project(tmp_path / "project")


def test_a_healthy_project_passes_from_any_folder(project: Path, tmp_path: Path) -> None:
    os.chdir(tmp_path)  # not the project folder: paths come from the project
    code, checks = doctor("--project-dir", str(project))
    assert code == 0, checks
    assert list(checks) == [
        "settings",
        "mapping",
        "ledger",
        "output folder",
        "source",
        "destination",
    ]
    assert all(c["ok"] for c in checks.values())
    assert "none yet; the first run creates it" in str(checks["ledger"]["detail"])
    assert "746 rows read" in str(checks["source"]["detail"])
    assert not (project / "state" / "funnelvalue.db").exists()  # doctor writes no ledger
    shown = runner.invoke(app, ["doctor", "--config", str(project / "config" / "funnelvalue.yaml")])
    assert shown.exit_code == 0
    assert "ready for a scheduled run" in shown.output


def test_a_broken_project_names_each_problem_and_its_fix(project: Path) -> None:
    (project / "state" / "crm_leads.csv").unlink()
    (project / "config" / "mapping.yaml").write_text("currency: Euro\nstages: []\n")
    code, checks = doctor("--project-dir", str(project))
    assert code == 2
    assert not checks["mapping"]["ok"]
    assert "'Euro' is not an ISO 4217 currency code" in str(checks["mapping"]["detail"])
    assert "funnelvalue mapping check" in str(checks["mapping"]["fix"])
    assert checks["ledger"]["ok"]  # still checked: it does not need the mapping


def test_a_missing_export_and_an_unwritable_output_fail(project: Path) -> None:
    (project / "state" / "crm_leads.csv").unlink()
    out = project / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        code, checks = doctor("--project-dir", str(project))
    finally:
        out.chmod(0o700)
    assert code == 2
    assert "does not exist" in str(checks["source"]["detail"])
    if os.geteuid() != 0:  # root writes anywhere
        assert not checks["output folder"]["ok"]


def test_a_run_holding_the_lock_is_reported(project: Path) -> None:
    url = f"sqlite:///{project / 'state' / 'funnelvalue.db'}"
    with Ledger.open(url) as ledger, ledger.lock("1234567890"):
        code, checks = doctor("--project-dir", str(project))
    assert code == 2
    assert "another run holds the lock" in str(checks["ledger"]["detail"])
    assert "wait for that run" in str(checks["ledger"]["fix"])


def test_google_ads_credentials_and_actions_are_checked(
    project: Path, fake: FakeGoogleAds, use_fake_client: Callable[[], None]
) -> None:
    code, checks = doctor("--project-dir", str(project), "--destination", "google-ads")
    assert code == 0, checks
    assert "3 conversion actions usable" in str(checks["destination"]["detail"])
    assert "output folder" not in checks  # no import file to write
    del fake.actions[103]
    code, checks = doctor("--project-dir", str(project), "--destination", "google-ads")
    assert code == 2
    assert "CRM won" in str(checks["destination"]["detail"])
    assert fake.upload_requests == []  # nothing sent
