"""A first `run` against its own `preview`, and a `preview` against reading the file bare
(issue #15, benchmarks c and d), each in a fresh process on one generated ~1M-row export.

  c: run (first, to the import file, into an empty ledger) / preview   goal <= 2x
  d: preview / pandas.read_csv(dtype=str) of the same file             goal <= 2.5x

Usage: python benchmarks/bench_ratios.py [--leads 600000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import in_fresh_process, peak_mb, project_settings, work_folder


def phase(work: Path, name: str) -> dict[str, float]:
    """One phase in this (fresh) process: its time and its own peak RSS."""
    import pandas as pd

    from funnelvalue.pipeline import execute

    start = time.perf_counter()  # imports excluded: the same for every phase
    if name == "read_csv":
        rows = len(pd.read_csv(work / "export.csv", dtype=str, keep_default_na=False))
    else:
        rows = execute(project_settings(work), dry_run=name == "preview").built.rows_read
    return {
        "seconds": time.perf_counter() - start,
        "rows": rows,
        "peak_mb": peak_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=600_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.work, args.phase)))
        return
    with work_folder(args.leads, "fv-ratios-") as (work, rows):
        measured: dict[str, list[dict[str, Any]]] = {"read_csv": [], "preview": [], "run": []}
        for _ in range(args.repeats):
            for name, results in measured.items():
                (work / "ledger.db").unlink(missing_ok=True)  # every run is a first run
                shutil.rmtree(work / "out", ignore_errors=True)
                results.append(in_fresh_process(__file__, "--phase", name, "--work", str(work)))
        median = {k: statistics.median(r["seconds"] for r in v) for k, v in measured.items()}
        peak = {k: max(r["peak_mb"] for r in v) for k, v in measured.items()}
        print(f"export: {rows:,} CSV rows, {(work / 'export.csv').stat().st_size / 1e6:.0f} MB")
        for name in measured:
            print(
                f"{name:>9}: {median[name]:6.2f} s (median of {args.repeats}), "
                f"{rows / median[name]:>9,.0f} rows/s, peak {peak[name]:5.0f} MB"
            )
        print(f"c: run / preview     = {median['run'] / median['preview']:.2f}x (goal <= 2x)")
        print(
            f"d: preview / read_csv = {median['preview'] / median['read_csv']:.2f}x (goal <= 2.5x)"
        )


if __name__ == "__main__":
    main()
