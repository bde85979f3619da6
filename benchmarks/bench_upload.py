"""Conversions per second from the pipeline to a (fake) Google API, with peak memory.

Runs `funnelvalue run --destination google-ads` (or `data-manager`) on a generated export against
the fake gRPC server from tests/fakes with the real client library, so the figure covers building
the request messages, serialisation, gRPC and handling every outcome. The fake runs in its own
process, as Google does: it must not share this process's GIL.

Usage: python benchmarks/bench_upload.py [--conversions 100000] [--destination data-manager]
Target (issue #4): >= 10,000 conversions/s end to end on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversions", type=int, default=100_000)
    parser.add_argument(
        "--destination", choices=["google-ads", "data-manager"], default="google-ads"
    )
    args = parser.parse_args()
    if args.destination == "data-manager":
        data_manager(args.conversions)
        return

    from bench_pipeline import MAPPING, generate
    from tests.fakes.google_ads_server import fake_client

    from funnelvalue.destinations import base as destinations
    from funnelvalue.destinations.google_ads import GoogleAdsUpload
    from funnelvalue.pipeline import execute
    from funnelvalue.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="fv-upload-"))
    generate(int(args.conversions / 1.52), work / "export.csv")  # ~1.52 conversions a lead
    (work / "mapping.yaml").write_text(MAPPING)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.google_ads_server"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if server.stdout is None or server.stdin is None:
        raise SystemExit("could not start the fake Google Ads server")
    endpoint, ca_file = server.stdout.readline().split()
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = ca_file
    timings: dict[str, float] = {}
    requests: list[int] = []

    class Timed(GoogleAdsUpload):
        def upload(self, conversions: Any) -> Any:
            start = time.perf_counter()
            try:
                return super().upload(conversions)
            finally:
                timings["upload"] = time.perf_counter() - start

        def _send(self, request: Any, *call: str) -> Any:
            requests.append(len(request.conversions))
            return super()._send(request, *call)

    def factory(settings: Any, mapping: Any, run_id: int, customer_id: str) -> Any:
        return Timed(fake_client(endpoint), customer_id, job_id=run_id)

    destinations.DESTINATIONS["google-ads"] = factory
    settings = load_settings(
        mapping=work / "mapping.yaml",
        input=work / "export.csv",
        destination="google-ads",
        ledger=f"sqlite:///{work / 'ledger.db'}",
    )
    try:
        start = time.perf_counter()
        report = execute(settings, dry_run=False)
        total = time.perf_counter() - start
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    sent = report.summary()["sent"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"conversions sent      {sent:>10,}  (uploaded: {report.outcome_count('uploaded'):,})")
    print(f"requests              {len(requests):>10,}")
    print(
        f"upload step           {timings['upload']:>10.2f} s  "
        f"{sent / timings['upload']:>10,.0f} conversions/s"
    )
    print(f"whole run             {total:>10.2f} s  {sent / total:>10,.0f} conversions/s")
    print(f"peak memory           {peak:>10,.0f} MB")


def data_manager(conversions: int) -> None:
    """The same run through the Data Manager destination (submission; confirmation is a poll)."""
    from bench_pipeline import MAPPING, generate
    from tests.fakes.data_manager_server import fake_client

    from funnelvalue.destinations import base as destinations
    from funnelvalue.destinations.data_manager import DataManagerUpload
    from funnelvalue.pipeline import execute
    from funnelvalue.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="fv-upload-"))
    generate(int(conversions / 1.52), work / "export.csv")
    (work / "mapping.yaml").write_text(MAPPING)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.data_manager_server"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if server.stdout is None or server.stdin is None:
        raise SystemExit("could not start the fake Data Manager server")
    address = server.stdout.readline().strip()
    ids = {"CRM lead": "1", "CRM qualified": "2", "CRM won": "3"}
    destinations.DESTINATIONS["data-manager"] = lambda s, m, r, c: DataManagerUpload(
        fake_client(address), c, None, ids
    )
    settings = load_settings(
        mapping=work / "mapping.yaml",
        input=work / "export.csv",
        destination="data-manager",
        ledger=f"sqlite:///{work / 'ledger.db'}",
    )
    try:
        start = time.perf_counter()
        report = execute(settings, dry_run=False)
        total = time.perf_counter() - start
        start = time.perf_counter()
        confirm = execute(settings, dry_run=False)
        polled = time.perf_counter() - start
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    submitted = report.summary()["submitted"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"conversions submitted {submitted:>10,}")
    print(f"whole run             {total:>10.2f} s  {submitted / total:>10,.0f} conversions/s")
    print(f"confirming run        {polled:>10.2f} s  ({confirm.confirmed})")
    print(f"peak memory           {peak:>10,.0f} MB")


if __name__ == "__main__":
    main()
