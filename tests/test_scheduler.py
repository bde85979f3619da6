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
