"""The scheduler files are what operators copy: each recipe runs exactly as written."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from funnelvalue.mapping import STARTER
from tests.conftest import REPO, funnel_rows, write_export
from tests.test_cli import example_project

SCHEDULER = REPO / "scheduler"
VENV_BIN = Path(sys.executable).parent


def deploy(folder: Path) -> Path:
    """A project as an operator deploys it: config/, scheduler/, an export; no state/."""
    example_project(folder)
    shutil.copytree(SCHEDULER, folder / "scheduler")
    (folder / "exports").mkdir()
    (folder / "state" / "crm_leads.csv").rename(folder / "exports" / "crm_leads.csv")
    shutil.rmtree(folder / "state")
    config = folder / "config" / "funnelvalue.yaml"
    config.write_text(
        config.read_text().replace("input: state/crm_leads.csv", "input: exports/crm_leads.csv")
    )
    return folder


def cron_entry() -> tuple[dict[str, str], str]:
    """The crontab's variables and its one command, as cron reads them."""
    variables, commands = {}, []
    for line in (SCHEDULER / "crontab").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if "=" in line.split()[0]:
            name, value = line.split("=", 1)
            variables[name.strip()] = value.strip()
        else:
            commands.append(line.split(None, 5)[5])
    assert len(commands) == 1
    return variables, commands[0]


def as_cron(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The command in cron's environment: /bin/sh, cwd $HOME, a minimal PATH."""
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(home), "SHELL": "/bin/sh"}
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_cron_line_runs_on_a_fresh_deploy_and_mails_only_what_needs_attention(
    tmp_path: Path,
) -> None:
    project = deploy(tmp_path / "srv" / "funnelvalue")
    variables, command = cron_entry()
    assert variables["MAILTO"]
    assert command.startswith("/opt/funnelvalue/")
    mine = command.replace("/opt/funnelvalue", str(project))

    first = as_cron(mine, tmp_path)
    assert first.returncode == 1, first.stderr  # the example has invalid rows on purpose
    assert first.stdout == ""  # cron mails stdout and stderr: one line, nothing else
    [line] = first.stderr.splitlines()
    assert line.startswith("funnelvalue: sent; some rows hold invalid data to fix in the CRM")
    log = (project / "state" / "funnelvalue.log").read_text()
    assert "doctor" in log
    assert "ready for a scheduled run" in log
    assert "written to the import file" in log
    assert (project / "out" / "google_ads_conversions.csv").exists()

    rows = funnel_rows(3, pd.Timestamp.now("UTC"))
    clean = [r for r in rows if r["stage"] != "Sales Qualified Lead"]  # stages the example maps
    write_export(project / "exports" / "crm_leads.csv", clean)
    quiet = as_cron(mine, tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")  # no mail


def test_a_skipped_run_says_so(tmp_path: Path) -> None:
    """Another run holds the lock: exit 75 and one line, never a silent 0."""
    project = deploy(tmp_path / "p")
    bin_dir = project / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "funnelvalue"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = doctor ] && exit 0\n'
        "echo 'error: another run holds the lock' >&2\nexit 75\n"
    )
    fake.chmod(0o755)
    done = as_cron(str(project / "scheduler" / "run.sh"), tmp_path)
    assert done.returncode == 75
    assert "funnelvalue: skipped: another run holds the lock" in done.stderr
    assert "another run holds the lock" in (project / "state" / "funnelvalue.log").read_text()


def test_a_broken_first_deploy_stops_at_doctor(tmp_path: Path) -> None:
    project = deploy(tmp_path / "p")
    (project / "exports" / "crm_leads.csv").unlink()
    done = as_cron(str(project / "scheduler" / "run.sh"), tmp_path)
    assert done.returncode == 2
    assert "doctor found problems, nothing was run" in done.stderr
    log = (project / "state" / "funnelvalue.log").read_text()
    assert "does not exist" in log
    assert not (project / "state" / ".doctor-passed").exists()
    assert not (project / "state" / "funnelvalue.db").exists()


def test_run_sh_with_the_log_on_stdout_passes_json_through(tmp_path: Path) -> None:
    project = deploy(tmp_path / "p")
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "FUNNELVALUE_HOME": str(project)}
    done = subprocess.run(
        [str(SCHEDULER / "run.sh"), "--json"],
        env={**env, "FUNNELVALUE_LOG": "-"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ledger"] == "sqlite:///state/funnelvalue.db"  # in the project folder
    assert (project / "state" / "funnelvalue.db").exists()
    assert not (project / "state" / "funnelvalue.log").exists()


def test_systemd_units_verify_and_read_the_path_from_one_place(tmp_path: Path) -> None:
    service = configparser.ConfigParser(interpolation=None)
    service.read(SCHEDULER / "funnelvalue.service")
    unit = service["Service"]
    assert unit["Type"] == "oneshot"
    assert unit["User"] == "funnelvalue"
    assert unit["EnvironmentFile"] == "/etc/default/funnelvalue"
    assert unit["ExecStart"] == "/bin/bash ${FUNNELVALUE_HOME}/scheduler/run.sh"
    assert service["Unit"]["OnFailure"] == "funnelvalue-failure@%n.service"
    assert unit["SuccessExitStatus"].split() == ["1", "75"]
    defaults = dict(
        line.split("=", 1)
        for line in (SCHEDULER / "funnelvalue.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert defaults["FUNNELVALUE_HOME"] == "/opt/funnelvalue"
    assert (
        "/opt/funnelvalue"
        not in (SCHEDULER / "funnelvalue.service")
        .read_text()
        .split("[Service]")[1]
        .split("# Exit")[0]
    )  # the path lives in the environment file only
    timer = configparser.ConfigParser()
    timer.read(SCHEDULER / "funnelvalue.timer")
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    for name in ("funnelvalue.service", "funnelvalue.timer", "funnelvalue-failure@.service"):
        shutil.copy(SCHEDULER / name, tmp_path / name)
    shutil.copy(
        SCHEDULER / "funnelvalue-failure@.service", tmp_path / "funnelvalue-failure@x.service"
    )
    checked = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            "funnelvalue.service",
            "funnelvalue.timer",
            "funnelvalue-failure@x.service",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [
        line
        for line in checked.stderr.splitlines()
        if "/etc/default/funnelvalue" not in line  # not installed on this machine
    ]
    assert (checked.returncode, problems) == (0, [])


def test_the_kubernetes_job_runs_as_non_root_with_what_it_needs() -> None:
    job = yaml.safe_load((SCHEDULER / "kubernetes-cronjob.yaml").read_text())
    assert job["kind"] == "CronJob"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert container["command"] == ["/app/scheduler/run.sh"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FUNNELVALUE_HOME"] == "/app"
    assert env["FUNNELVALUE_LOG"] == "-"
    assert container["envFrom"] == [{"secretRef": {"name": "funnelvalue"}}]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/app/config"]]["configMap"]["name"] == "funnelvalue"
    for writable in ("/app/state", "/app/out", "/tmp"):
        assert "emptyDir" in volumes[mounts[writable]], writable
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_image_holds_what_the_job_needs_and_runs_as_non_root() -> None:
    steps = [
        line.split(None, 1)
        for line in (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [args for op, args in steps if op == "COPY"]
    assert "scheduler ./scheduler" in copied
    assert "src ./src" in copied
    run = " ".join(args for op, args in steps if op == "RUN")
    assert "mkdir -p /app/config /app/state /app/out" in run
    assert "chown 65534:65534 /app/state /app/out" in run
    assert [args for op, args in steps if op == "USER"] == ["65534:65534"]
    assert ["ENTRYPOINT", '["/app/scheduler/run.sh"]'] in steps
    env = " ".join(args for op, args in steps if op == "ENV")
    assert "FUNNELVALUE_HOME=/app" in env
    for path in ("src", "scheduler/run.sh", "pyproject.toml", "README.md"):
        assert (REPO / path).exists()


def test_the_scheduler_files_follow_the_documented_exit_codes() -> None:
    """run.sh names every code; systemd treats exactly 1 and 75 as success."""
    script = (SCHEDULER / "run.sh").read_text()
    for code in ("0)", "1)", "2)", "3)", "70)", "75)", "130 | 143)"):
        assert f"  {code}" in script, code


def test_the_bundled_production_config_does_not_point_at_demo_data() -> None:
    settings = yaml.safe_load((REPO / "config" / "funnelvalue.yaml").read_text())
    assert "input" not in settings
    assert "examples" not in json.dumps(settings)
    mapping = (REPO / "config" / "mapping.yaml").read_text()
    assert "Deal ID" not in mapping  # the example export's columns live with the example
    assert mapping == STARTER  # the template is `funnelvalue mapping init`'s file
