"""Does a daily run's cost grow with the ledger's history? (issue #15, benchmark a)

One generated export (~1M CSV rows), one first run to fill a SQLite ledger with its
conversions; then a copy of that ledger padded with older history (other leads' conversions,
sent two months ago, so outside the import file's window) up to 5x its size. The same no-op
rerun (everything already sent) runs against both, each in a fresh process, alternating, and
the medians are compared.

Usage: python benchmarks/bench_history.py [--leads 600000] [--times 5] [--repeats 3]
Goal: rerun against the 5x ledger <= 1.15x the rerun against the 1x one; peak < 1.2 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import in_fresh_process, peak_mb, project_settings, work_folder


def rerun(work: Path, ledger: str) -> dict[str, float]:
    """One no-op rerun in this (fresh) process: its time and its own peak RSS."""
    from funnelvalue.pipeline import execute

    settings = project_settings(work, ledger)
    start = time.perf_counter()
    report = execute(settings, dry_run=False)
    return {
        "seconds": time.perf_counter() - start,
        "to_send": len(report.to_send),
        "peak_mb": peak_mb(),
    }


def pad(source: Path, target: Path, times: int) -> int:
    """A copy of the ledger with ``times - 1`` more generations of older history."""
    shutil.copy(source, target)
    with sqlite3.connect(target) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(conversions)")]
        renamed = {
            "key": "'h{n}|' || key",
            "lead_id": "'h{n}-' || lead_id",
            "order_id": "substr('h{n}' || order_id, 1, 64)",
            "conversion_time": "datetime(conversion_time, '-60 days')",
            "sent_at": "datetime(sent_at, '-60 days')",
            "updated_at": "datetime(updated_at, '-60 days')",
        }
        for n in range(1, times):
            chosen = ", ".join(renamed.get(c, c).format(n=n) for c in columns)
            db.execute(
                f"INSERT INTO conversions ({', '.join(columns)}) SELECT {chosen} "
                "FROM conversions WHERE key NOT LIKE 'h%'"
            )
        db.commit()
        (count,) = db.execute("SELECT count(*) FROM conversions").fetchone()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=600_000)
    parser.add_argument("--times", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rerun", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rerun:
        print(json.dumps(rerun(args.work, args.rerun)))
        return
    with work_folder(args.leads, "fv-history-") as (work, rows):

        def phase(ledger: str) -> dict[str, Any]:
            return in_fresh_process(__file__, "--rerun", ledger, "--work", str(work))

        first = phase("small.db")  # the first run fills the ledger
        small = pad(work / "small.db", work / "small-copy.db", 1)
        large = pad(work / "small.db", work / "large.db", args.times)
        results: dict[str, list[dict[str, Any]]] = {"small-copy.db": [], "large.db": []}
        for _ in range(args.repeats):
            for ledger, measurements in results.items():
                shutil.copy(work / ledger, work / f"run-{ledger}")
                measured = phase(f"run-{ledger}")
                if measured["to_send"]:
                    raise SystemExit("a rerun must send nothing")
                measurements.append(measured)
        median = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
        peak = {k: max(r["peak_mb"] for r in v) for k, v in results.items()}
        print(f"export: {rows:,} CSV rows; first run {first['seconds']:.1f} s")
        print(f"{'ledger rows':>12} {'rerun s (median)':>17} {'peak MB':>8}")
        print(f"{small:>12,} {median['small-copy.db']:>17.2f} {peak['small-copy.db']:>8.0f}")
        print(f"{large:>12,} {median['large.db']:>17.2f} {peak['large.db']:>8.0f}")
        ratio = median["large.db"] / median["small-copy.db"]
        print(f"ratio {large / small:.1f}x history: {ratio:.2f}x time (goal <= 1.15x)")


if __name__ == "__main__":
    main()
