from __future__ import annotations

import csv
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from funnelvalue.conversions import build
from funnelvalue.destinations.csv_import import ImportFile, neutralise_formulas
from funnelvalue.errors import ConfigError, DestinationError
from funnelvalue.leads import normalise
from funnelvalue.mapping import Mapping
from funnelvalue.order_ids import order_ids
from tests.conftest import CUSTOMER, HEADER, gclid


def conversions(mapping: Mapping, now: pd.Timestamp) -> pd.DataFrame:
    t = pd.Timestamp("2026-11-02 13:30:00", tz="UTC")
    rows = [
        {
            "lead_id": "A",
            "stage": "New",
            "stage_changed_at": t.isoformat(),
            "gclid": gclid(1),
            "consent_ad_user_data": "GRANTED",
        },
        {
            "lead_id": "B",
            "stage": "Closed Won",
            "stage_changed_at": t.isoformat(),
            "email": "b@example.com",
            "amount": "1234.5",
        },
        {
            "lead_id": "C",
            "stage": "New",
            "stage_changed_at": t.isoformat(),
            "gbraid": "0AAAAADxyz1234567890abcdef",
        },
    ]
    frame = pd.DataFrame(rows, columns=HEADER).astype("string")
    built = build(normalise(frame, timezone="UTC"), mapping, now, CUSTOMER).conversions
    return built.assign(order_id=order_ids(built["key"]))


def read(path: Path) -> tuple[str, list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        first = handle.readline().strip()
        return first, list(csv.DictReader(handle))


def test_import_file_follows_googles_template(tmp_path: Path, mapping: Mapping) -> None:
    now = pd.Timestamp("2026-11-10", tz="UTC")
    batch = conversions(mapping, now)
    target = ImportFile.for_run(tmp_path / "out" / "conversions.csv", "Europe/Berlin", 7)
    result = target.upload(batch)
    assert target.run_path.parent == tmp_path / "out" / "runs"
    assert re.fullmatch(r"conversions-\d{4}-\d\d-\d\d-run7\.csv", target.run_path.name)
    assert set(result["status"]) == {"written"}  # Google has not seen it yet
    assert result["key"].tolist() == batch["key"].tolist()
    parameters, rows = read(target.run_path)
    assert parameters == "Parameters:TimeZone=Europe/Berlin"
    assert list(rows[0])[:6] == [
        "Google Click ID",
        "Conversion Name",
        "Conversion Time",
        "Conversion Value",
        "Conversion Currency",
        "Order ID",
    ]
    by_name = {
        (r["Conversion Name"], r["Google Click ID"] or r["GBRAID"] or r["Email"][:8]): r
        for r in rows
    }
    lead_a = by_name[("CRM lead", gclid(1))]
    # the template's form: the clock of the Parameters zone, no offset on the row
    assert lead_a["Conversion Time"] == "2026-11-02 14:30:00"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r["Conversion Time"]) for r in rows)
    assert lead_a["Conversion Value"] == "10.00"
    assert lead_a["Ad User Data Consent"] == "Granted"
    won_b = next(r for r in rows if r["Conversion Name"] == "CRM won")
    assert won_b["Conversion Value"] == "1234.50"
    assert len(won_b["Email"]) == 64  # hashed, never the address itself
    assert "b@example.com" not in target.run_path.read_text()
    assert any(r["GBRAID"] == "0AAAAADxyz1234567890abcdef" for r in rows)
    assert [p.name for p in target.run_path.parent.iterdir()] == [target.run_path.name]
    assert stat.S_IMODE(target.run_path.stat().st_mode) == 0o644  # Google's fetcher reads it
    target.publish(batch)
    assert read(target.path) == read(target.run_path)


def test_plain_click_file_has_only_the_template_columns(tmp_path: Path, mapping: Mapping) -> None:
    batch = conversions(mapping, pd.Timestamp("2026-11-10", tz="UTC"))
    only_gclid = batch[batch["click_id_kind"] == "gclid"].assign(consent=pd.NA)
    target = ImportFile(tmp_path / "f.csv", tmp_path / "run.csv", "UTC")
    target.upload(only_gclid)
    _, rows = read(target.run_path)
    assert list(rows[0]) == [
        "Google Click ID",
        "Conversion Name",
        "Conversion Time",
        "Conversion Value",
        "Conversion Currency",
        "Order ID",
    ]


def test_an_empty_window_still_publishes_a_valid_file(tmp_path: Path, mapping: Mapping) -> None:
    batch = conversions(mapping, pd.Timestamp("2026-11-10", tz="UTC")).iloc[0:0]
    target = ImportFile(tmp_path / "f.csv", tmp_path / "runs" / "r.csv", "UTC")
    assert target.upload(batch).empty
    assert not target.run_path.exists()  # no run file for a run with nothing new
    target.publish(batch)
    parameters, rows = read(target.path)
    assert parameters == "Parameters:TimeZone=UTC"
    assert rows == []


def test_unwritable_target_is_a_destination_error(tmp_path: Path, mapping: Mapping) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    batch = conversions(mapping, pd.Timestamp("2026-11-10", tz="UTC"))
    with pytest.raises(DestinationError, match="cannot write the import file"):
        ImportFile(blocker / "f.csv", blocker / "sub" / "f.csv", "UTC").upload(batch)


def test_only_a_regular_file_is_replaced(tmp_path: Path, mapping: Mapping) -> None:
    batch = conversions(mapping, pd.Timestamp("2026-11-10", tz="UTC"))
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("keep me")
    link = tmp_path / "f.csv"
    link.symlink_to(secret)
    with pytest.raises(DestinationError, match="it is a symbolic link"):
        ImportFile(link, tmp_path / "run.csv", "UTC").publish(batch)
    assert secret.read_text() == "keep me"
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DestinationError, match="not a regular file"):
        ImportFile(tmp_path / "dir.csv", tmp_path / "run.csv", "UTC").publish(batch)


def test_formula_cells_are_neutralised_but_click_ids_are_not(
    tmp_path: Path, mapping: Mapping
) -> None:
    batch = conversions(mapping, pd.Timestamp("2026-11-10", tz="UTC"))
    batch = batch[batch["click_id_kind"] == "gclid"].head(1)
    batch = pd.concat([batch] * 3, ignore_index=True)
    batch["conversion_action"] = batch["action_identity"] = pd.array(
        ['=HYPERLINK("http://x")', "@SUM(A1)", "+1"], dtype="string"
    )
    batch.loc[batch.index[0], "click_id"] = "-Cj0KCQiAstartswithdash"
    target = ImportFile(tmp_path / "f.csv", tmp_path / "run.csv", "UTC")
    target.upload(batch)
    _, rows = read(target.run_path)
    names = sorted(r["Conversion Name"] for r in rows)
    assert names == ["'+1", '\'=HYPERLINK("http://x")', "'@SUM(A1)"]
    assert rows[0]["Google Click ID"] == "-Cj0KCQiAstartswithdash"
    assert [r["Google Click ID"] for r in rows[1:]] == [gclid(1)] * 2


def test_a_mapping_that_names_actions_by_id_gets_their_names_or_a_clear_stop(
    tmp_path: Path, mapping: Mapping
) -> None:
    """Google matches the file's Conversion Name against the action's name, never its id."""
    target = ImportFile(
        tmp_path / "f.csv", tmp_path / "run.csv", "UTC", action_names={"103": "CRM won"}
    )
    found = target.action_identities(
        ["CRM lead", "103", "customers/1/conversionActions/103"], strict=True
    )
    assert found == {
        "CRM lead": "CRM lead",
        "103": "CRM won",
        "customers/1/conversionActions/103": "CRM won",
    }
    with pytest.raises(ConfigError, match="names each conversion action by its name") as caught:
        target.action_identities(["CRM lead", "555"], strict=True)
    assert "'555' is an id, not a name" in str(caught.value)
    assert target.action_identities(["555"], strict=False) == {}
    batch = conversions(mapping, pd.Timestamp("2026-11-10", tz="UTC"))
    won = batch["stage"] == "won"
    batch = batch.assign(
        conversion_action=batch["conversion_action"].mask(won, "103"),
        action_identity=batch["action_identity"].mask(won, "CRM won"),
    )
    target.upload(batch)
    _, rows = read(target.run_path)
    assert "103" not in {r["Conversion Name"] for r in rows}
    assert "CRM won" in {r["Conversion Name"] for r in rows}


def test_cells_are_quoted_as_csv_needs_and_the_header_is_googles(
    tmp_path: Path, mapping: Mapping
) -> None:
    """Written by Arrow: the template's header line as is, cells quoted, a comma in a name
    stays one cell, values with two decimals, a missing cell empty."""
    batch = conversions(mapping, pd.Timestamp("2026-11-10", tz="UTC"))
    batch = batch[batch["click_id_kind"] == "gclid"].head(1).assign(consent=pd.NA)
    batch = pd.concat([batch, batch], ignore_index=True)
    batch["action_identity"] = pd.array(["Lead, web form", "Won"], dtype="string")
    target = ImportFile(tmp_path / "f.csv", tmp_path / "run.csv", "UTC")
    target.upload(batch)
    lines = target.run_path.read_text().splitlines()
    assert lines[0] == "Parameters:TimeZone=UTC"
    assert lines[1] == (
        "Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency,"
        "Order ID"
    )
    _, rows = read(target.run_path)
    assert [r["Conversion Name"] for r in rows] == ["Lead, web form", "Won"]
    assert all(re.fullmatch(r"\d+\.\d\d", r["Conversion Value"]) for r in rows)


def test_the_fetched_file_rebuilt_from_the_ledger_matches_what_each_run_wrote(
    tmp_path: Path, mapping_file: Callable[..., Path]
) -> None:
    """The rolling file is read back from the ledger (through Arrow on SQLite): missing
    cells stay missing, hashes and values are what each run's own file said."""
    from funnelvalue.pipeline import execute
    from funnelvalue.settings import load_settings
    from tests.conftest import funnel_rows, write_export

    now = pd.Timestamp.now(tz="UTC")
    rows = funnel_rows(3, now)
    rows.append(
        {
            "lead_id": "MAIL",
            "stage": "New",
            "stage_changed_at": rows[0]["stage_changed_at"],
            "email": "jane@example.com",
        }
    )
    settings = load_settings(
        mapping=mapping_file(timezone="UTC"),
        input=tmp_path / "export.csv",
        output=tmp_path / "out" / "import.csv",
        ledger=f"sqlite:///{tmp_path / 'ledger.db'}",
    )
    write_export(settings.input, rows)  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    write_export(settings.input, [*rows, *funnel_rows(1, now, start=7)])  # type: ignore[arg-type]
    execute(settings, dry_run=False)
    written = [
        row for path in sorted((tmp_path / "out" / "runs").iterdir()) for row in read(path)[1]
    ]
    _, fetched = read(settings.output)

    def by_order(table: list[dict[str, str]]) -> dict[str, dict[str, str]]:
        return {r["Order ID"]: {k: v for k, v in r.items() if v} for r in table}

    assert by_order(fetched) == by_order(written)
    mail = next(r for r in fetched if r["Email"])
    assert len(mail["Email"]) == 64
    assert mail["Google Click ID"] == ""


def test_values_are_written_as_printf_would_with_two_decimals() -> None:
    """The Arrow formatting gives what "%.2f" gives for every cent amount (values are rounded
    to cents when built), from 0 to billions, negative ones included; missing stays empty."""
    import numpy as np

    from funnelvalue.destinations.csv_import import _two_decimals

    rng = np.random.default_rng(5)
    cents = np.concatenate(
        [rng.integers(0, 10**11, 50_000), [0, 1, 5, 9, 10, 99, 100, 101, 999, 1000, 10**12]]
    )
    values = np.round(np.concatenate([cents, -cents[1:500]]) / 100, 2)
    assert _two_decimals(pd.Series(values)).tolist() == [f"{v:.2f}" for v in values]
    assert _two_decimals(pd.Series([1.5, None, 0.0])).tolist() == ["1.50", pd.NA, "0.00"]


def test_a_window_of_only_this_runs_rows_is_this_runs_file_and_any_other_is_formatted(
    tmp_path: Path, mapping: Mapping
) -> None:
    """The copy a first run publishes is byte for byte what formatting the window gives; a
    window with other rows (or the same rows in another order) is formatted."""
    from funnelvalue.destinations.csv_import import write_import_file

    batch = conversions(mapping, pd.Timestamp("2026-11-10", tz="UTC"))
    target = ImportFile.for_run(tmp_path / "out" / "conversions.csv", "Europe/Berlin", 1)
    target.upload(batch)
    target.publish(batch)
    write_import_file(tmp_path / "formatted.csv", batch, "Europe/Berlin")
    formatted = (tmp_path / "formatted.csv").read_bytes()
    assert target.path.read_bytes() == formatted
    assert target.path.samefile(target.run_path)  # linked, not copied
    assert stat.S_IMODE(target.path.stat().st_mode) == 0o644
    target.publish(batch)  # again: still that file, nothing left beside it
    assert sorted(p.name for p in target.path.parent.iterdir()) == ["conversions.csv", "runs"]
    fewer = batch.iloc[1:]
    target.publish(fewer)
    _, rows = read(target.path)
    assert len(rows) == len(fewer)
    assert target.run_path.read_bytes() == formatted  # the run's own file is never touched
    reordered = batch.iloc[::-1]
    target.publish(reordered)
    _, rows = read(target.path)
    assert [r["Order ID"] for r in rows] == reordered["order_id"].tolist()


def test_only_a_cell_that_starts_like_a_formula_is_quoted() -> None:
    table = pd.DataFrame(
        {
            "Conversion Name": ["-2", "\tx", "\rx", "a=b", None, "plain"],
            "Google Click ID": ["-abc", "=x", None, "c", "d", "e"],
            "Conversion Value": [-1.5, 1.0, 2.0, 3.0, 4.0, 5.0],
        },
        index=[7, 3, 5, 1, 0, 2],
    ).astype({"Conversion Name": "string", "Google Click ID": "string"})
    safe = neutralise_formulas(table.copy())
    assert safe["Conversion Name"].tolist() == ["'-2", "'\tx", "'\rx", "a=b", pd.NA, "plain"]
    assert safe["Google Click ID"].tolist() == table["Google Click ID"].tolist()
    assert safe["Conversion Value"].tolist() == table["Conversion Value"].tolist()
    assert safe.index.tolist() == table.index.tolist()


FORMULA_CELLS = ["=1", "+1", "-1", "@a", "\tx", "\rx", "x=", "", "é=", " =", "=z"]
FORMULA_RISKY = [True] * 6 + [False] * 5


def formula_cells(kind: pa.DataType) -> pa.ChunkedArray:
    """FORMULA_CELLS in two chunks, each a slice (offsets not from zero), the last cell
    ("=z") missing with its bytes still in the buffer."""
    base = pa.array(["pad", *FORMULA_CELLS, "pad"], pa.large_string())
    validity = pa.py_buffer(bytes([0xFF, 0b1111_0111]))  # bit 3 of byte 1: cell 11, "=z"
    masked = pa.Array.from_buffers(
        pa.large_string(), len(base), [validity, base.buffers()[1], base.buffers()[2]]
    )
    cut = 5
    return pa.chunked_array(
        [
            masked.slice(1, cut).cast(kind),
            masked.slice(1 + cut, len(FORMULA_CELLS) - cut).cast(kind),
        ]
    )


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.string_view()])
def test_a_formula_start_is_found_by_its_first_byte_in_any_string_layout(
    kind: pa.DataType,
) -> None:
    from funnelvalue.destinations.csv_import import _formula_starts

    found = [bool(v) for c in formula_cells(kind).chunks for v in _formula_starts(c)]
    assert found == [*FORMULA_RISKY[:-1], False]  # the missing cell is not a formula


def test_a_formula_start_is_quoted_in_every_chunk_and_slice() -> None:
    cells = formula_cells(pa.large_string())
    table = pd.DataFrame({"Conversion Name": pd.array(cells, dtype=pd.StringDtype("pyarrow"))})
    safe = [None if c is pd.NA else c for c in neutralise_formulas(table)["Conversion Name"]]
    expected = [f"'{c}" if r else c for c, r in zip(FORMULA_CELLS, FORMULA_RISKY, strict=True)]
    assert safe == [*expected[:-1], None]


def test_a_file_system_without_hard_links_gets_a_copy_of_the_runs_file(
    tmp_path: Path, mapping: Mapping, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window that is this run's file is linked to it; where links are refused (another
    device, some network shares) the same bytes are copied, and nothing is left beside it."""
    import errno

    def refused(*args: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refused)
    batch = conversions(mapping, pd.Timestamp("2026-11-10", tz="UTC"))
    target = ImportFile.for_run(tmp_path / "out" / "conversions.csv", "UTC", 1)
    target.upload(batch)
    target.publish(batch)
    assert target.path.read_bytes() == target.run_path.read_bytes()
    assert not target.path.samefile(target.run_path)
    assert stat.S_IMODE(target.path.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.path.parent.iterdir()) == ["conversions.csv", "runs"]
