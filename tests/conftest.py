"""Shared fixtures: a clean environment, a working directory, a mapping and export builders."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from funnelvalue import retrying
from funnelvalue.destinations import registry as destinations
from funnelvalue.destinations.data_manager import DataManagerUpload
from funnelvalue.destinations.google_ads import GoogleAdsUpload
from funnelvalue.destinations.registry import Context
from funnelvalue.leads import CANONICAL
from funnelvalue.ledger import Ledger
from funnelvalue.mapping import STARTER, Mapping, load_mapping
from tests.fakes.data_manager_server import FakeDataManager
from tests.fakes.data_manager_server import fake_client as data_manager_client
from tests.fakes.data_manager_server import serve as serve_data_manager
from tests.fakes.google_ads_server import FakeGoogleAds, fake_client, serve

REPO = Path(__file__).resolve().parent.parent
CUSTOMER = "1234567890"
HEADER = list(CANONICAL)  # the canonical export columns, in order


def gclid(n: int | str) -> str:
    """A well-formed, deterministic click id for lead n."""
    return f"Cj0KCQiA{str(n).rjust(8, '0')}abcdefghijklmnopqrstuvwxyz_-"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's FUNNELVALUE_* / GOOGLE_ADS_* settings or repo config."""
    for name in list(os.environ):
        if name.startswith(("FUNNELVALUE_", "GOOGLE_ADS_")) and not name.startswith(
            "FUNNELVALUE_TEST_"
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return


def postgres_url() -> str | None:
    """A throwaway PostgreSQL database for ledger tests (.ci/run starts one when it can)."""
    return os.environ.get("FUNNELVALUE_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each ledger test runs on a SQLite file and, where one is configured, on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"
    url = postgres_url()
    if url is None:
        pytest.skip("FUNNELVALUE_TEST_POSTGRES_URL is not set")
    from sqlalchemy import create_engine

    from funnelvalue.ledger import metadata, schema_migrations

    engine = create_engine(url)
    with engine.begin() as conn:  # a clean database for every test
        metadata.drop_all(conn)
        schema_migrations.drop(conn, checkfirst=True)
    engine.dispose()
    return url


@pytest.fixture
def open_ledger() -> Iterator[Callable[..., Ledger]]:
    """Ledger.open for tests, closed at teardown (PostgreSQL connections must not leak)."""
    opened: list[Ledger] = []

    def open_(url: str, **options: Any) -> Ledger:
        opened.append(Ledger.open(url, **options))
        return opened[-1]

    yield open_
    for ledger in opened:
        ledger.close()


@pytest.fixture
def now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("s")


@pytest.fixture
def mapping_file(tmp_path: Path) -> Callable[..., Path]:
    """Write the starter mapping with overrides (None removes a key) and return its path."""

    def write(name: str = "mapping.yaml", **overrides: Any) -> Path:
        data = yaml.safe_load(STARTER)
        for key, value in overrides.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture
def mapping(mapping_file: Callable[..., Path]) -> Mapping:
    return load_mapping(mapping_file(timezone="UTC"))


def write_export(
    path: Path, rows: Sequence[dict[str, Any]], header: Sequence[str] = HEADER, **csv_options: Any
) -> Path:
    with path.open("w", newline="", encoding=csv_options.pop("encoding", "utf-8")) as handle:
        writer = csv.DictWriter(
            handle, fieldnames=list(header), extrasaction="ignore", **csv_options
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


def ts(moment: pd.Timestamp) -> str:
    """An ISO time with offset, as a CRM API export writes it."""
    return moment.isoformat()


def funnel_rows(count: int, now: pd.Timestamp, *, start: int = 0) -> list[dict[str, Any]]:
    """Leads 0..count-1: every lead 'New'; every 2nd 'Sales Qualified Lead'; every 5th 'Won'."""
    rows: list[dict[str, Any]] = []
    for n in range(start, start + count):
        created = now - pd.Timedelta(days=20, minutes=n)
        base = {"lead_id": f"L{n}", "created_at": ts(created), "gclid": gclid(n)}
        rows.append({**base, "stage": "New", "stage_changed_at": ts(created)})
        if n % 2 == 0:
            rows.append(
                {
                    **base,
                    "stage": "Sales Qualified Lead",
                    "stage_changed_at": ts(created + pd.Timedelta(days=3)),
                }
            )
        if n % 10 == 0:
            rows.append(
                {
                    **base,
                    "stage": "Closed Won",
                    "amount": str(1000 + n),
                    "stage_changed_at": ts(created + pd.Timedelta(days=10)),
                }
            )
    return rows


# -- Google Ads: one fake server per session, shared by every module that sends to it ----------

_FAKE = FakeGoogleAds()


@pytest.fixture(scope="session")
def google_ads_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One TLS server per session: gRPC reads its trusted roots once per process."""
    with serve(_FAKE, tmp_path_factory.mktemp("fake-google-ads")) as (endpoint, ca_file):
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(ca_file)
        yield endpoint


@pytest.fixture
def fake(google_ads_endpoint: str) -> FakeGoogleAds:
    _FAKE.reset()
    return _FAKE


@pytest.fixture
def use_fake_client(
    monkeypatch: pytest.MonkeyPatch, google_ads_endpoint: str
) -> Callable[[], None]:
    """--destination google-ads built with a ready access token (no OAuth round trip)."""

    def factory(context: Context) -> Any:
        client = fake_client(google_ads_endpoint)
        return GoogleAdsUpload(
            client,
            context.customer_id,
            job_id=context.run_id,
            now=context.now,
            in_flight=context.settings.requests_in_flight,
        )

    monkeypatch.setitem(destinations.DESTINATIONS, "google-ads", factory)
    return lambda: None


# -- Data Manager: one fake IngestionService per session --------------------------------------

_FAKE_DATA_MANAGER = FakeDataManager()


@pytest.fixture(scope="session")
def data_manager_address() -> Iterator[str]:
    with serve_data_manager(_FAKE_DATA_MANAGER) as address:
        yield address


@pytest.fixture
def data_manager(data_manager_address: str) -> FakeDataManager:
    _FAKE_DATA_MANAGER.reset()
    return _FAKE_DATA_MANAGER


@pytest.fixture
def use_fake_data_manager(
    monkeypatch: pytest.MonkeyPatch, data_manager_address: str
) -> Callable[[], None]:
    """--destination data-manager built on a channel to the fake (no Google sign-in)."""

    def factory(context: Context) -> Any:
        config = context.settings.data_manager
        return DataManagerUpload(
            data_manager_client(data_manager_address),
            context.customer_id,
            config.login_customer_id,
            dict(config.action_ids),
            event_source=config.event_source,
            in_flight=context.settings.requests_in_flight,
        )

    monkeypatch.setitem(destinations.DESTINATIONS, "data-manager", factory)
    return lambda: None


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits are recorded, not slept: tests stay fast and can check Retry-After."""
    recorded: list[float] = []
    monkeypatch.setattr(retrying, "sleep", recorded.append)
    return recorded
