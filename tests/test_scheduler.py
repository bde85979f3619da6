"""The scheduler files are what operators copy: they must run and mean what they say."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

SCHEDULER = REPO / "scheduler"


def test_run_sh_runs_the_job_from_the_project_folder(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNNELVALUE_")}
    env["FUNNELVALUE_HOME"] = str(tmp_path)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        [str(SCHEDULER / "run.sh"), "--json"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    assert json.loads(done.stdout)["output"] == "out/google_ads_conversions.csv"
    assert (tmp_path / "out" / "google_ads_conversions.csv").exists()
    assert (tmp_path / "state" / "funnelvalue.db").exists()


def test_crontab_uses_flock_and_run_sh() -> None:
    line = next(
        line
        for line in (SCHEDULER / "crontab").read_text().splitlines()
        if line and not line.startswith("#")
    )
    fields = line.split(None, 5)
    assert len(fields) == 6
    assert "flock -n" in fields[5]
    assert "scheduler/run.sh" in fields[5]


def test_systemd_units() -> None:
    service = configparser.ConfigParser()
    service.read(SCHEDULER / "funnelvalue.service")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].endswith("scheduler/run.sh")
    timer = configparser.ConfigParser()
    timer.read(SCHEDULER / "funnelvalue.timer")
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_kubernetes_cronjob_never_overlaps() -> None:
    job = yaml.safe_load((SCHEDULER / "kubernetes-cronjob.yaml").read_text())
    assert job["kind"] == "CronJob"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/app/scheduler/run.sh"]


def test_the_scheduler_files_follow_the_documented_exit_codes() -> None:
    """run.sh names every code; systemd treats exactly 1 and 75 as success."""
    script = (SCHEDULER / "run.sh").read_text()
    for code in ("0)", "1)", "2)", "3)", "70)", "75)", "130 | 143)"):
        assert f"  {code}" in script, code
    service = configparser.ConfigParser()
    service.read(SCHEDULER / "funnelvalue.service")
    assert service["Service"]["SuccessExitStatus"].split() == ["1", "75"]


def test_run_sh_passes_a_lock_conflict_through(tmp_path: Path) -> None:
    """A skipped run says so and exits 75, never silently 0."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "funnelvalue"
    fake.write_text("#!/bin/sh\necho 'error: another run holds the lock' >&2\nexit 75\n")
    fake.chmod(0o755)
    done = subprocess.run(
        [str(SCHEDULER / "run.sh")],
        env={**os.environ, "FUNNELVALUE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 75
    assert "skipped: another run holds the lock" in done.stderr
