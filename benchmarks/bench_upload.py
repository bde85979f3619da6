"""Conversions per second from the pipeline to a (fake) Google API, with peak memory.

Runs `funnelvalue run --destination google-ads` (or `data-manager`) on a generated export against
the fake gRPC server from tests/fakes with the real client library, so the figure covers building
the request messages, serialisation, gRPC and handling every outcome. The fake runs in its own
process, as Google does: it must not share this process's GIL.

Usage: python benchmarks/bench_upload.py [--conversions 100000] [--destination data-manager]
       python benchmarks/bench_upload.py --latencies 0 100   (Google Ads, the same run with a
       network latency added by the fake to every upload, and the ratio; issue #15 b)
Targets: >= 10,000 conversions/s end to end on a 2-core machine (issue #4); at 100 ms latency
<= 1.3x the 0 ms run (issue #15: requests overlap, settings.requests_in_flight).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    parser.add_argument("--latencies", type=float, nargs="+", help="milliseconds, Google Ads")
    parser.add_argument("--latency-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--in-flight", type=int, default=None)
    args = parser.parse_args()
    if args.latencies:  # each in its own process: gRPC reads the fake's CA once per process
        totals = []
        for latency in args.latencies:
            command = [sys.executable, __file__, "--conversions", str(args.conversions)]
            command += ["--latency-ms", str(latency)]
            if args.in_flight:
                command += ["--in-flight", str(args.in_flight)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            print(f"-- latency {latency:g} ms\n{out}", end="")
            line = next(x for x in out.splitlines() if x.startswith("whole run"))
            totals.append(float(line.split()[2]))
        for latency, total in zip(args.latencies, totals, strict=True):
            print(f"latency {latency:>6g} ms: {total:6.2f} s  ({total / totals[0]:.2f}x)")
        return
    work = _project(args.conversions)
    if args.destination == "data-manager":
        data_manager(work)
    else:
        google_ads(work, args.latency_ms, args.in_flight)


def _project(conversions: int) -> Path:
    """A generated export (~1.52 conversions a lead) and the benchmark mapping."""
    from bench_pipeline import MAPPING, generate

    work = Path(tempfile.mkdtemp(prefix="fv-upload-"))
    generate(int(conversions / 1.52), work / "export.csv")
    (work / "mapping.yaml").write_text(MAPPING)
    return work


@contextmanager
def _fake_server(module: str, *options: str) -> Iterator[str]:
    """Start a fake from tests/fakes in its own process; yields the line it prints (where it
    listens), stops it by closing its stdin."""
    server = subprocess.Popen(
        [sys.executable, "-m", module, *options],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if server.stdout is None or server.stdin is None:
        raise SystemExit(f"could not start {module}")
    try:
        yield server.stdout.readline().strip()
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def _settings(work: Path, destination: str) -> Any:
    from funnelvalue.settings import load_settings

    return load_settings(
        mapping=work / "mapping.yaml",
        input=work / "export.csv",
        destination=destination,
        ledger=f"sqlite:///{work / 'ledger.db'}",
    )


def _timed_run(settings: Any) -> tuple[Any, float]:
    from funnelvalue.pipeline import execute

    start = time.perf_counter()
    report = execute(settings, dry_run=False)
    return report, time.perf_counter() - start


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def google_ads(work: Path, latency_ms: float = 0.0, in_flight: int | None = None) -> float:
    from tests.fakes.google_ads_server import fake_client

    from funnelvalue.destinations import registry as destinations
    from funnelvalue.destinations.google_ads import GoogleAdsUpload

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

    with _fake_server("tests.fakes.google_ads_server", str(latency_ms)) as listening:
        endpoint, ca_file = listening.split()
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = ca_file
        destinations.DESTINATIONS["google-ads"] = lambda context: Timed(
            fake_client(endpoint),
            context.customer_id,
            job_id=context.run_id,
            in_flight=in_flight or context.settings.requests_in_flight,
        )
        report, total = _timed_run(_settings(work, "google-ads"))
    sent = report.summary()["sent"]
    print(f"conversions sent      {sent:>10,}  (uploaded: {report.outcome_count('uploaded'):,})")
    print(f"requests              {len(requests):>10,}")
    print(
        f"upload step           {timings['upload']:>10.2f} s  "
        f"{sent / timings['upload']:>10,.0f} conversions/s"
    )
    print(f"whole run             {total:>10.2f} s  {sent / total:>10,.0f} conversions/s")
    print(f"peak memory           {_peak_mb():>10,.0f} MB")
    return total


def data_manager(work: Path) -> None:
    """The same run through the Data Manager destination (submission; confirmation is a poll)."""
    from tests.fakes.data_manager_server import fake_client

    from funnelvalue.destinations import registry as destinations
    from funnelvalue.destinations.data_manager import DataManagerUpload

    ids = {"CRM lead": "1", "CRM qualified": "2", "CRM won": "3"}
    with _fake_server("tests.fakes.data_manager_server") as address:
        destinations.DESTINATIONS["data-manager"] = lambda context: DataManagerUpload(
            fake_client(address),
            context.customer_id,
            None,
            ids,
            in_flight=context.settings.requests_in_flight,
        )
        settings = _settings(work, "data-manager")
        report, total = _timed_run(settings)
        confirm, polled = _timed_run(settings)
    submitted = report.summary()["submitted"]
    print(f"conversions submitted {submitted:>10,}")
    print(f"whole run             {total:>10.2f} s  {submitted / total:>10,.0f} conversions/s")
    print(f"confirming run        {polled:>10.2f} s  ({confirm.confirmed})")
    print(f"peak memory           {_peak_mb():>10,.0f} MB")


if __name__ == "__main__":
    main()
