"""The contracts every registered source and destination keeps, run over each of them (as
dlt runs one suite over every destination): a new one is added to SOURCE_SETUPS or
DESTINATION_SETUPS and inherits every test here; one missing from those lists fails the
registry test."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import responses
from sqlalchemy import create_engine, text

from funnelvalue.destinations import registry as destination_registry
from funnelvalue.destinations.base import Destination
from funnelvalue.errors import ConfigError, SourceError
from funnelvalue.leads import CANONICAL, TIMESTAMPS
from funnelvalue.mapping import Mapping, load_mapping
from funnelvalue.pipeline import execute
from funnelvalue.settings import Settings, load_settings
from funnelvalue.sources.base import Source
from funnelvalue.sources.registry import SOURCES, make_source
from funnelvalue.vocabulary import OUTCOME_COLUMNS, Outcome
from tests import test_hubspot, test_salesforce
from tests.conftest import CUSTOMER, funnel_rows, gclid, write_export
from tests.fakes.data_manager_server import FakeDataManager
from tests.fakes.google_ads_server import FakeGoogleAds
from tests.fakes.hubspot import TOKEN, FakeHubSpot
from tests.fakes.salesforce import FakeSalesforce

# -- sources ------------------------------------------------------------------------------


@dataclass
class SourceSetup:
    """A source with a fake CRM behind it: ``fill`` adds one converted lead, ``fail``
    makes the CRM answer every call with ``status`` from now on."""

    settings: Settings
    mapping: Mapping
    fill: Callable[[], None]
    fail: Callable[[int], None] | None = None


SourceFactory = Callable[
    [Path, pd.Timestamp, pytest.MonkeyPatch], AbstractContextManager[SourceSetup]
]


@contextmanager
def _csv(tmp: Path, now: pd.Timestamp, env: pytest.MonkeyPatch) -> Iterator[SourceSetup]:
    export = tmp / "export.csv"
    write_export(export, [])
    mapping = load_mapping(Path(__file__).parent.parent / "config" / "mapping.yaml")
    yield SourceSetup(
        load_settings(source="csv", input=export),
        mapping,
        lambda: write_export(export, funnel_rows(1, now)),
    )


@contextmanager
def _hubspot(tmp: Path, now: pd.Timestamp, env: pytest.MonkeyPatch) -> Iterator[SourceSetup]:
    env.setenv("FUNNELVALUE_HUBSPOT__ACCESS_TOKEN", TOKEN)
    portal = FakeHubSpot(clock=now - pd.Timedelta(days=30))

    def fail(status: int) -> None:
        body = json.dumps({"status": "error", "message": "fake", "category": "X"})
        portal.failures = [(status, {}, body)] * 50

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        portal.install(rsps)
        yield SourceSetup(
            load_settings(source="hubspot"),
            _mapping(tmp, test_hubspot.STAGES, test_hubspot.IGNORE),
            lambda: test_hubspot.won_deal(portal, now, 1) and None,
            fail,
        )


@contextmanager
def _salesforce(tmp: Path, now: pd.Timestamp, env: pytest.MonkeyPatch) -> Iterator[SourceSetup]:
    for name, value in test_salesforce.TOKEN_ENV.items():
        env.setenv(name, value)
    org = FakeSalesforce(clock=now - pd.Timedelta(days=30))

    def fail(status: int) -> None:
        body = json.dumps([{"message": "fake", "errorCode": "X"}])
        org.failures = [(status, {}, body)] * 50

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org.install(rsps)
        yield SourceSetup(
            load_settings(source="salesforce"),
            _mapping(tmp, test_salesforce.STAGES, test_salesforce.IGNORE),
            lambda: test_salesforce.converted_lead(org, now, 1) and None,
            fail,
        )


@contextmanager
def _sql(tmp: Path, now: pd.Timestamp, env: pytest.MonkeyPatch) -> Iterator[SourceSetup]:
    url = f"sqlite:///{tmp / 'crm.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE leads (lead_id TEXT, stage TEXT, stage_changed_at TIMESTAMP, "
                "updated_at TIMESTAMP, gclid TEXT, amount NUMERIC)"
            )
        )

    def fill() -> None:
        with engine.begin() as conn:
            for row in funnel_rows(1, now):
                changed = pd.Timestamp(row["stage_changed_at"]).tz_localize(None).to_pydatetime()
                conn.execute(
                    text("INSERT INTO leads VALUES (:lead, :stage, :at, :at, :gclid, :amount)"),
                    {
                        "lead": row["lead_id"],
                        "stage": row["stage"],
                        "at": changed,
                        "gclid": row["gclid"],
                        "amount": row.get("amount"),
                    },
                )

    mapping = load_mapping(Path(__file__).parent.parent / "config" / "mapping.yaml")
    settings = load_settings(
        source="sql", sql={"url": url, "table": "leads", "watermark_column": "updated_at"}
    )
    yield SourceSetup(settings, mapping, fill)
    engine.dispose()


def _mapping(tmp: Path, stages: list[dict[str, Any]], ignore: list[str]) -> Mapping:
    import yaml

    path = tmp / "mapping.yaml"
    path.write_text(
        yaml.safe_dump(
            {"customer_id": CUSTOMER, "currency": "EUR", "timezone": "UTC", "stages": stages}
            | {"ignore": ignore}
        )
    )
    return load_mapping(path)


SOURCE_SETUPS: dict[str, SourceFactory] = {
    "csv": _csv,
    "hubspot": _hubspot,
    "salesforce": _salesforce,
    "sql": _sql,
}


def test_every_registered_source_is_under_contract() -> None:
    assert set(SOURCE_SETUPS) == set(SOURCES)


@pytest.fixture(params=sorted(SOURCE_SETUPS))
def source_setup(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    now: pd.Timestamp,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SourceSetup]:
    with SOURCE_SETUPS[request.param](tmp_path, now, monkeypatch) as setup:
        yield setup


def _read(setup: SourceSetup) -> pd.DataFrame:
    source: Source = make_source(setup.settings, setup.mapping)
    return source.fetch(None).leads


def _shape(frame: pd.DataFrame) -> dict[str, str]:
    return {column: str(frame[column].dtype) for column in [*CANONICAL, "source_row"]}


def test_a_read_gives_the_canonical_columns_with_the_same_dtypes_empty_or_full(
    source_setup: SourceSetup,
) -> None:
    empty = _read(source_setup)
    source_setup.fill()
    full = _read(source_setup)
    assert empty.empty
    assert not full.empty
    assert set(CANONICAL) <= set(full.columns)
    assert _shape(empty) == _shape(full)  # an empty read is not a frame of another shape
    for column in TIMESTAMPS:
        assert isinstance(full[column].dtype, pd.DatetimeTZDtype), column
        assert str(full[column].dt.tz) == "UTC", column
    assert full["source_row"].is_unique  # every row can be named in a reason
    assert full["lead_id"].notna().all()


def test_the_canonical_dtypes_are_the_same_for_every_source(
    tmp_path: Path, now: pd.Timestamp, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes = {}
    for name, factory in sorted(SOURCE_SETUPS.items()):
        (tmp_path / name).mkdir()
        with factory(tmp_path / name, now, monkeypatch) as setup:
            setup.fill()
            shapes[name] = _shape(_read(setup))
    assert len({json.dumps(shape, sort_keys=True) for shape in shapes.values()}) == 1, shapes


@pytest.mark.parametrize(("status", "transient"), [(503, True), (429, True), (401, False)])
def test_a_crm_failing_is_retried_or_stops_by_its_class(
    source_setup: SourceSetup, status: int, transient: bool, waits: list[float]
) -> None:
    if source_setup.fail is None:
        pytest.skip("a file or a database, not an HTTP API: its failures are tested in its module")
    source_setup.fill()
    source_setup.fail(status)
    with pytest.raises((SourceError, ConfigError)) as caught:
        _read(source_setup)
    assert caught.value.transient is transient
    assert caught.value.exit_code == (3 if transient else 2)
    assert (len(waits) > 0) is transient  # retried with backoff only when it may pass


# -- destinations --------------------------------------------------------------------------


DESTINATION_SETUPS = {"csv", "google-ads", "data-manager"}


def test_every_registered_destination_is_under_contract() -> None:
    assert set(destination_registry.DESTINATIONS) == DESTINATION_SETUPS


@pytest.fixture(params=sorted(DESTINATION_SETUPS))
def destination_settings(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    mapping_file: Callable[..., Path],
    fake: FakeGoogleAds,
    data_manager: FakeDataManager,
    use_fake_client: Callable[[], None],
    use_fake_data_manager: Callable[[], None],
) -> Settings:
    return load_settings(
        mapping=mapping_file(timezone="UTC", customer_id=CUSTOMER),
        input=tmp_path / "export.csv",
        output=tmp_path / "out" / "import.csv",
        destination=request.param,
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
        data_manager={"action_ids": {"CRM lead": "101", "CRM qualified": "102", "CRM won": "103"}},
    )


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each destination the pipeline builds records its close() here."""
    closed: list[str] = []
    for name, factory in list(destination_registry.DESTINATIONS.items()):

        def wrapped(context: Any, factory: Any = factory, name: str = name) -> Destination:
            built = factory(context)
            original = built.close

            def close() -> None:
                closed.append(name)
                original()

            object.__setattr__(built, "close", close)
            return built  # type: ignore[no-any-return]

        monkeypatch.setitem(destination_registry.DESTINATIONS, name, wrapped)
    return closed


def test_one_outcome_per_row_in_the_outcome_frame_shape(
    destination_settings: Settings, now: pd.Timestamp, closes: list[str]
) -> None:
    write_export(destination_settings.input, funnel_rows(5, now))
    report = execute(destination_settings, dry_run=False)
    assert report.exit_code == 0
    outcomes = report.outcomes
    assert outcomes is not None
    assert list(outcomes.columns[: len(OUTCOME_COLUMNS)]) == OUTCOME_COLUMNS
    assert sorted(outcomes["key"]) == sorted(report.to_send["key"])  # one each, none invented
    assert set(outcomes["status"]) <= set(Outcome)
    assert str(outcomes["retry_at"].dtype) == "datetime64[us, UTC]"
    assert closes == [destination_settings.destination]
    again = execute(destination_settings, dry_run=False)  # nothing twice, whoever it is
    assert again.summary()["to_send"] == 0


def test_one_outcome_for_many_keys_has_the_outcome_frame_shape(now: pd.Timestamp) -> None:
    """destinations.base.outcomes (what the import file and a whole-request answer use): the
    given words on every row, in the dtypes the ledger writes, whatever index the keys had."""
    from funnelvalue.destinations.base import outcomes

    keys = pd.Series(["k2", "k1", "k3"], index=[7, 3, 9])
    later = now + pd.Timedelta(hours=6)
    found = outcomes(keys, "retry_after", message="wait", error_code="QUOTA", retry_at=later)
    assert list(found.columns) == OUTCOME_COLUMNS
    assert found["key"].tolist() == ["k2", "k1", "k3"]
    assert found["status"].tolist() == ["retry_after"] * 3
    assert found["error_code"].tolist() == ["QUOTA"] * 3
    assert found["message"].tolist() == ["wait"] * 3
    assert found["retry_at"].tolist() == [later] * 3
    assert {c: str(found[c].dtype) for c in ["error_code", "message", "retry_at"]} == {
        "error_code": "string",
        "message": "string",
        "retry_at": "datetime64[us, UTC]",
    }
    plain = outcomes(keys, "written")
    assert plain[["error_code", "message", "retry_at"]].isna().all().all()
    assert str(plain["message"].dtype) == "string"
    assert str(plain["retry_at"].dtype) == "datetime64[us, UTC]"
    none = outcomes(keys.iloc[:0], "written")
    assert none.empty
    assert list(none.columns) == OUTCOME_COLUMNS


def test_nothing_to_send_is_an_empty_outcome_frame(
    destination_settings: Settings, now: pd.Timestamp
) -> None:
    write_export(destination_settings.input, funnel_rows(2, now))
    execute(destination_settings, dry_run=False)
    report = execute(destination_settings, dry_run=False)
    assert report.outcomes is not None
    assert report.outcomes.empty
    assert set(OUTCOME_COLUMNS) <= set(report.outcomes.columns)


@pytest.mark.parametrize("failure", ["outage", "refusal"])
def test_a_destination_that_fails_is_closed_and_keeps_the_rows_pending(
    destination_settings: Settings,
    now: pd.Timestamp,
    failure: str,
    closes: list[str],
    fake: FakeGoogleAds,
    data_manager: FakeDataManager,
    tmp_path: Path,
    waits: list[float],
) -> None:
    """An outage is transient (exit 3, retried first); a refusal is not (exit 2); either way
    the destination is closed and every row stays pending for the next run."""
    write_export(destination_settings.input, funnel_rows(3, now))
    name = destination_settings.destination
    if name == "csv":
        blocker = tmp_path / "out"
        blocker.write_text("a file where the folder should be")
        if failure == "outage":
            pytest.skip("a local file has no outage; an unwritable one is the refusal case")
    elif name == "google-ads":
        fake.unavailable_times = 10 if failure == "outage" else 0
        fake.not_allowlisted = failure == "refusal"
    else:
        data_manager.unavailable_times = 100 if failure == "outage" else 0
        if failure == "refusal":  # refused as a whole, naming no event: the request's fault
            data_manager.refused_unnamed = {gclid(n) for n in range(3)}
    report = execute(destination_settings, dry_run=False)
    assert report.exit_code == (3 if failure == "outage" else 2), report.error
    assert report.pending == len(report.to_send)
    assert closes == [name]
    assert (len(waits) > 0) is (failure == "outage")
