"""Throughput and peak memory of the CRM sources (what funnelvalue itself costs, not the network).

  sql      a SQLite table of stage changes read by the sql source, streamed in chunks of
           50,000 rows and, for comparison, in one chunk (each in a fresh process)
  hubspot  deals with three dated stages and a contact each, read from the fake portal
           (tests/fakes/hubspot.py, in-process through `responses`): JSON to lead frame

Usage: python benchmarks/bench_sources.py [--sql-rows 1000000] [--deals 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MAPPING = """\
customer_id: "123-456-7890"
currency: EUR
timezone: UTC
columns: {deal_id: lead_id, deal_stage: stage, entered_at: stage_changed_at}
stages:
  - {name: lead, crm_values: [New, Appointment Scheduled], conversion_action: lead, value: 10}
  - {name: qualified, crm_values: [Qualified, Qualified To Buy], conversion_action: q, value: 150}
  - {name: won, crm_values: [Won, Closed Won], conversion_action: won,
     value: {from_column: amount, default: 1000}}
"""


def make_table(path: Path, rows: int) -> None:
    rng = np.random.default_rng(3)
    now = pd.Timestamp("2026-11-20")
    frame = pd.DataFrame(
        {
            "deal_id": "D" + pd.Series(np.arange(rows) // 2).astype(str),
            "deal_stage": rng.choice(["New", "Qualified", "Won"], rows),
            "entered_at": (now - pd.to_timedelta(rng.uniform(0, 80, rows), unit="D")).astype(str),
            "gclid": "Cj0KCQiA" + pd.Series(np.arange(rows)).astype(str).str.zfill(10) + "_abcd",
            "email": "lead" + pd.Series(np.arange(rows)).astype(str) + "@example.com",
            "amount": rng.integers(100, 9000, rows).astype(str),
        }
    )
    frame["updated_at"] = frame["entered_at"]
    with sqlite3.connect(path) as conn:
        frame.to_sql("stage_changes", conn, index=False, chunksize=100_000)


def child_sql(workdir: Path, chunk: int) -> dict[str, Any]:
    from funnelvalue.mapping import load_mapping
    from funnelvalue.settings import load_settings
    from funnelvalue.sources.sql import SqlSource

    sql = {"url": f"sqlite:///{workdir / 'crm.db'}", "table": "stage_changes", "chunk_size": chunk}
    source = SqlSource.from_settings(
        load_settings(source="sql", sql=sql | {"watermark_column": "updated_at"}),
        load_mapping(workdir / "mapping.yaml"),
    )
    started = time.perf_counter()
    frame = source.fetch(None).leads
    return {"rows": len(frame), "seconds": time.perf_counter() - started}


def child_hubspot(workdir: Path, deals: int) -> dict[str, Any]:
    import os

    import responses

    sys.path.insert(0, str(ROOT))
    from tests.fakes.hubspot import TOKEN, FakeHubSpot

    from funnelvalue.mapping import load_mapping
    from funnelvalue.settings import load_settings
    from funnelvalue.sources.hubspot import HubSpotSource

    os.environ["FUNNELVALUE_HUBSPOT__ACCESS_TOKEN"] = TOKEN
    now = pd.Timestamp("2026-11-20", tz="UTC")
    portal = FakeHubSpot(clock=now - pd.Timedelta(days=60))
    for n in range(deals):
        contact = portal.add_contact(gclid=f"Cj0KCQiA{n:010d}_abcd", email=f"p{n}@example.com")
        portal.add_deal(
            [
                ("appointmentscheduled", now - pd.Timedelta(days=20)),
                ("qualifiedtobuy", now - pd.Timedelta(days=10)),
                ("closedwon", now - pd.Timedelta(days=2)),
            ],
            amount="1200",
            contact=contact,
        )
    source = HubSpotSource.from_settings(
        load_settings(source="hubspot"), load_mapping(workdir / "mapping.yaml")
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        portal.install(rsps)
        started = time.perf_counter()
        frame = source.fetch(None).leads
        seconds = time.perf_counter() - started
    return {"rows": len(frame), "seconds": seconds, "requests": len(portal.requests)}


def in_child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sql-rows", type=int, default=1_000_000)
    parser.add_argument("--deals", type=int, default=20_000)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, workdir, number = args.child
        if kind == "make":
            make_table(Path(workdir) / "crm.db", int(number))
            print(json.dumps({}))
            return
        run = child_sql if kind == "sql" else child_hubspot
        result = run(Path(workdir), int(number))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result | {"peak_mb": peak_mb}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "mapping.yaml").write_text(MAPPING)
        # Generated in its own process too: Linux keeps a parent's peak RSS across fork+exec,
        # so a big parent would inflate every child's figure.
        in_child("make", str(workdir), str(args.sql_rows))
        for chunk in (50_000, args.sql_rows):
            r = in_child("sql", str(workdir), str(chunk))
            print(
                f"sql      {r['rows']:>9,} rows, chunks of {chunk:>9,}: {r['seconds']:6.1f} s "
                f"{r['rows'] / r['seconds']:>9,.0f} rows/s  peak {r['peak_mb']:,.0f} MB"
            )
        r = in_child("hubspot", str(workdir), str(args.deals))
        print(
            f"hubspot  {args.deals:>9,} deals -> {r['rows']:,} rows in {r['requests']:,} requests: "
            f"{r['seconds']:6.1f} s {r['rows'] / r['seconds']:>9,.0f} rows/s  "
            f"peak {r['peak_mb']:,.0f} MB (fake portal in the same process)"
        )


if __name__ == "__main__":
    main()
