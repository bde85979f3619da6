"""Throughput and peak memory of the daily job at 10k, 100k and 1M generated leads.

For each size, each phase runs in a fresh process (so its peak RSS is its own), on one
generated export and one SQLite ledger:
  preview   map + validate + classify against an empty ledger (nothing written)
  run 1     the same plus writing every conversion to the ledger and the import file
  run 2     the same input again: everything is already in the ledger, nothing is sent
  preview 2 preview against the full ledger

Usage: python benchmarks/bench_pipeline.py [--sizes 10000 100000 1000000]   (or: make bench)
Targets (issue #3): 1M leads previewed in < 20 s and < 1.5 GB peak; run 2 over 1M in < 20 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STAGES = ["New", "Sales Qualified Lead", "Closed Won"]
MAPPING = """\
customer_id: "123-456-7890"
currency: EUR
timezone: Europe/Berlin
stages:
  - {name: lead, crm_values: [New], conversion_action: CRM lead, value: 10}
  - {name: qualified, crm_values: [Sales Qualified Lead], conversion_action: CRM qualified,
     value: 150}
  - {name: won, crm_values: [Closed Won], conversion_action: CRM won,
     value: {from_column: amount, default: 1000}}
ignore: [Lost]
backfill_skipped_stages: true
"""


def generate(leads: int, path: Path, seed: int = 7) -> int:
    """A stage-history export: every lead 'New', ~45% qualified, ~12% won (some skipping the
    middle stage), ~8% lost; 85% gclid, 10% email only, 5% with a problem. Returns rows."""
    rng = np.random.default_rng(seed)
    now = pd.Timestamp.now(tz="Europe/Berlin").tz_localize(None).floor("s")
    ids = np.arange(leads)
    created = now - pd.to_timedelta(rng.uniform(1, 80, leads), unit="D")
    gclid = pd.Series("Cj0KCQiA" + pd.Series(ids).astype(str).str.zfill(10) + "_Bw-E_abcdefgh")
    kind = rng.random(leads)
    email = pd.Series(
        np.where(kind >= 0.85, "lead" + pd.Series(ids).astype(str) + "@example.com", "")
    )
    gclid = gclid.where(kind < 0.85, "")
    gclid = gclid.where(kind < 0.95 - 0.1 * (kind >= 0.85) - 0.0, gclid)
    gclid[(kind > 0.80) & (kind < 0.85)] = "broken!"  # rejected rows
    base = pd.DataFrame(
        {
            "lead_id": "L" + pd.Series(ids).astype(str),
            "created_at": created,
            "gclid": gclid,
            "email": email,
        }
    )
    frames = [base.assign(stage="New", stage_changed_at=created, amount="")]
    qualified = rng.random(leads) < 0.45
    won = rng.random(leads) < 0.12
    lost = ~won & (rng.random(leads) < 0.08)
    q_time = created + pd.to_timedelta(rng.uniform(0.2, 5, leads), unit="D")
    w_time = q_time + pd.to_timedelta(rng.uniform(1, 20, leads), unit="D")
    amount = pd.Series(rng.integers(100, 20_000, leads)).astype(str)
    frames.append(
        base.assign(stage="Sales Qualified Lead", stage_changed_at=q_time, amount="")[
            qualified & (q_time < now)
        ]
    )
    frames.append(
        base.assign(stage="Closed Won", stage_changed_at=w_time, amount=amount)[
            won & (w_time < now)
        ]
    )
    frames.append(base.assign(stage="Lost", stage_changed_at=w_time, amount="")[lost])
    export = pd.concat(frames, ignore_index=True)
    export["created_at"] = export["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
    export["stage_changed_at"] = export["stage_changed_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
    export.to_csv(path, index=False)
    return len(export)


PHASES = (("preview", True), ("run1", False), ("run2", False), ("preview2", True))


def project_settings(work: Path, ledger: str = "ledger.db") -> Any:
    """The settings of a benchmark's work folder: its export, mapping, ledger and output."""
    from funnelvalue.settings import load_settings

    return load_settings(
        mapping=work / "mapping.yaml",
        input=work / "export.csv",
        ledger=f"sqlite:///{work / ledger}",
        output=work / "out" / "import.csv",
    )


def in_fresh_process(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` with ``args`` in a new Python (so its peak RSS is its own) and return
    the JSON object it prints last."""
    out = subprocess.run(
        [sys.executable, script, *args], check=True, capture_output=True, text=True
    ).stdout
    found: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return found


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_phase(work: Path, phase: str) -> dict[str, float]:
    """One phase in this (fresh) process: its time, and its own peak RSS."""
    from funnelvalue.pipeline import execute

    settings = project_settings(work)
    start = time.perf_counter()
    report = execute(settings, dry_run=dict(PHASES)[phase])
    return {
        "seconds": time.perf_counter() - start,
        "to_send": len(report.to_send),
        "conversions": len(report.conversions),
        "rejected": len(report.rejects),
        "peak_mb": peak_mb(),
    }


@contextmanager
def work_folder(leads: int, prefix: str) -> Iterator[tuple[Path, int]]:
    """A temporary project folder with a generated export of ``leads`` and the mapping:
    (its path, the export's CSV rows); removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        rows = generate(leads, work / "export.csv")
        (work / "mapping.yaml").write_text(MAPPING)
        yield work, rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_size(leads: int) -> dict[str, Any]:
    with work_folder(leads, "fv-bench-") as (work, rows):
        result: dict[str, Any] = {"leads": leads, "rows": rows}
        for phase, _ in PHASES:
            result[phase] = in_fresh_process(__file__, "--phase", phase, "--work", str(work))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(measure_phase(args.work, args.phase)))
        return
    print(
        f"{'leads':>9} {'CSV rows':>9} {'phase':>9} {'seconds':>8} {'rows/s':>10} "
        f"{'sent':>9} {'peak MB':>8}"
    )
    for size in args.sizes:
        r = measure_size(size)
        for phase, _ in PHASES:
            p = r[phase]
            print(
                f"{r['leads']:>9,} {r['rows']:>9,} {phase:>9} {p['seconds']:>8.2f} "
                f"{r['rows'] / p['seconds']:>10,.0f} {p['to_send']:>9,} {p['peak_mb']:>8.0f}",
                flush=True,
            )
        if r["run2"]["to_send"] or r["preview2"]["to_send"]:
            raise SystemExit("run 2 must send nothing: the ledger has every conversion")


if __name__ == "__main__":
    main()
