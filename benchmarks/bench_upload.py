"""Conversions per second from the pipeline to the (fake) Google Ads API, with peak memory.

Runs `funnelvalue run --destination google-ads` on a generated export against the fake gRPC
server from tests/fakes (TLS on localhost, the real google-ads client), so the figure covers
building the request messages, serialisation, gRPC and parsing every per-row outcome. The fake
runs in its own process, as Google does: it must not share this process's GIL.

Usage: python benchmarks/bench_upload.py [--conversions 100000]
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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
