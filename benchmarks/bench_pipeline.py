"""Throughput and peak memory of the daily job at 10k, 100k and 1M generated leads.

For each size, in a fresh process (so peak RSS belongs to that size alone):
  preview   map + validate + classify against an empty ledger (nothing written)
  run 1     the same plus writing every conversion to the ledger and the import file
  run 2     the same input again: everything is already in the ledger, nothing is sent
  preview 2 preview against the full ledger

Usage: python benchmarks/bench_pipeline.py [--sizes 10000 100000 1000000]
Targets (issue #3): 1M leads previewed in < 20 s and < 1.5 GB peak; run 2 over 1M in < 20 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def measure_one(leads: int) -> dict[str, float]:
    from funnelvalue.pipeline import execute
    from funnelvalue.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="fv-bench-"))
    export = work / "export.csv"
    rows = generate(leads, export)
    (work / "mapping.yaml").write_text(MAPPING)
    settings = load_settings(
        mapping=work / "mapping.yaml",
        input=export,
        ledger=f"sqlite:///{work / 'ledger.db'}",
        output=work / "out" / "import.csv",
    )
    result: dict[str, float] = {"leads": leads, "rows": rows}
    for label, dry_run in (("preview", True), ("run1", False), ("run2", False), ("preview2", True)):
        start = time.perf_counter()
        report = execute(settings, dry_run=dry_run)
        result[f"{label}_s"] = time.perf_counter() - start
        result[f"{label}_sent"] = len(report.to_send)
    result["conversions"] = len(report.conversions)
    result["rejected"] = len(report.rejects)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one)))
        return
    print(
        f"{'leads':>9} {'rows':>9} {'preview s':>9} {'rows/s':>10} {'run1 s':>8} "
        f"{'run2 s':>8} {'preview2 s':>10} {'peak MB':>8}"
    )
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(size)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{r['leads']:>9,} {r['rows']:>9,} {r['preview_s']:>9.2f} "
            f"{r['rows'] / r['preview_s']:>10,.0f} {r['run1_s']:>8.2f} {r['run2_s']:>8.2f} "
            f"{r['preview2_s']:>10.2f} {r['peak_rss_mb']:>8.0f}",
            flush=True,
        )
        assert r["run2_sent"] == 0, "run 2 must send nothing"


if __name__ == "__main__":
    main()
