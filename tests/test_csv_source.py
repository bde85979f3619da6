from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from funnelvalue.conversions import build
from funnelvalue.errors import SourceError
from funnelvalue.mapping import load_mapping
from funnelvalue.sources.csv_file import CsvSource
from funnelvalue.vocabulary import Reason
from tests.conftest import CUSTOMER, gclid


@pytest.fixture
def source(mapping_file: Callable[..., Path], tmp_path: Path) -> Callable[..., CsvSource]:
    def make(content: bytes, **mapping: object) -> CsvSource:
        path = tmp_path / "export.csv"
        path.write_bytes(content)
        return CsvSource(path, load_mapping(mapping_file(timezone="UTC", **mapping)))

    return make


def test_bom_semicolons_crlf_quotes_and_empty_cells(source: Callable[..., CsvSource]) -> None:
    content = (
        "\ufeffLead ID;Stage;Stage Changed At;Amount;Note\r\n"
        'L1;New;2026-11-02 10:00;;"first; with ""quotes"" and\r\na line break"\r\n'
        "L2; Closed Won ;2026-11-03 10:00;1.234,50;\r\n"
    ).encode()
    frame = source(content).fetch().leads
    assert frame["lead_id"].tolist() == ["L1", "L2"]
    assert frame["stage"].tolist() == ["New", "Closed Won"]
    assert frame["amount"].isna().tolist() == [True, False]
    assert frame.loc[0, "note"].startswith('first; with "quotes"')
    assert frame["source_row"].tolist() == [2, 3]


def test_latin1_is_read_with_a_warning(source: Callable[..., CsvSource]) -> None:
    content = "lead_id,stage,stage_changed_at,owner\nL1,New,2026-11-02,Jürgen Müller\n"
    src = source(content.encode("latin-1"))
    fetched = src.fetch()
    frame = fetched.leads
    assert frame.loc[0, "owner"] == "Jürgen Müller"
    assert any("Latin-1" in w for w in fetched.warnings)


def test_columns_rename_from_the_mapping(source: Callable[..., CsvSource]) -> None:
    content = b"Record ID,Deal Stage,Last Change\nL1,New,2026-11-02\n"
    frame = (
        source(
            content,
            columns={
                "Record ID": "lead_id",
                "Deal Stage": "stage",
                "Last Change": "stage_changed_at",
            },
        )
        .fetch()
        .leads
    )
    assert frame.loc[0, "stage"] == "New"


def test_missing_column_names_what_was_found(source: Callable[..., CsvSource]) -> None:
    with pytest.raises(SourceError) as caught:
        source(b"id,Deal Stage,when\nL1,New,2026-11-02\n").fetch()
    message = str(caught.value)
    assert "no column lead_id, stage, stage_changed_at" in message
    assert "(headers: 'id', 'Deal Stage', 'when')" in message
    assert 'columns: {"id": lead_id, "Deal Stage": stage}' in message
    assert "source_row" not in message  # internal names are never offered


def test_missing_and_empty_files(source: Callable[..., CsvSource], tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is empty"):
        source(b"").fetch()
    src = source(b"x")
    src.path = tmp_path / "gone.csv"
    with pytest.raises(SourceError, match="does not exist"):
        src.fetch()


def test_a_ragged_row_is_one_invalid_row_with_its_line_and_no_content(
    source: Callable[..., CsvSource], mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    t = (now - pd.Timedelta(days=1)).isoformat()
    content = (
        "lead_id,stage,stage_changed_at,gclid\n"
        f"L1,New,{t},{gclid(1)}\n"
        f"X1,New,{t},anna.mueller@example.com,+49 151 23456789,extra\n"
        f"L2,New,{t},{gclid(2)}\n"
    ).encode()
    src = source(content)
    leads = src.fetch().leads
    assert leads["source_row"].tolist() == [2, 3, 4]
    built = build(leads, src.mapping, now, CUSTOMER)
    assert sorted(built.conversions["lead_id"]) == ["L1", "L2"]
    [reject] = built.rejects.to_dict("records")
    assert reject["source_row"] == 3
    assert reject["reason_code"] == Reason.ROW_MALFORMED
    assert reject["reason"].startswith("row has 6 fields, the header has 4")
    text = " ".join(str(v) for v in reject.values())
    assert "anna" not in text
    assert "151" not in text


def test_repeated_headers_for_a_column_funnelvalue_reads_are_an_error(
    source: Callable[..., CsvSource],
) -> None:
    content = b"lead_id,Stage,stage,stage_changed_at,notes,Notes\nL1,New,Won,2026-11-02,a,b\n"
    with pytest.raises(SourceError, match="more than one column for stage") as caught:
        source(content).fetch()
    assert "'Stage', 'stage'" in str(caught.value)
    renamed = source(
        b"lead_id,Deal Stage,stage,stage_changed_at\nL1,New,Won,2026-11-02\n",
        columns={"Deal Stage": "stage"},
    )
    with pytest.raises(SourceError, match="after the mapping's `columns:` renames"):
        renamed.fetch()
    unused = source(b"lead_id,stage,stage_changed_at,notes,Notes\nL1,New,2026-11-02,a,b\n")
    assert unused.fetch().leads["notes"].tolist() == ["a"]  # not read: the first is kept


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook (.xlsx)"),
        (gzip.compress(b"lead_id,stage\n"), "gzip-compressed"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "old Excel workbook (.xls)"),
    ],
)
def test_files_that_are_not_csv_say_what_they_are(
    source: Callable[..., CsvSource], content: bytes, words: str
) -> None:
    with pytest.raises(SourceError, match=re.escape(words)):
        source(content).fetch()


def test_utf16_from_excel_is_read_and_said(source: Callable[..., CsvSource]) -> None:
    content = "lead_id\tstage\tstage_changed_at\nL1\tNeu für\t2026-11-02\n".encode("utf-16")
    fetched = source(content).fetch()
    assert fetched.leads["stage"].tolist() == ["Neu für"]
    assert any("UTF-16" in w for w in fetched.warnings)


@pytest.mark.parametrize(
    ("header", "renames"),
    [
        (
            "Record ID,Deal Name,Deal Stage,Create Date,Last Modified Date",
            '"Record ID": lead_id, "Deal Stage": stage, "Last Modified Date": stage_changed_at',
        ),
        (
            "Opportunity ID,Opportunity Name,Stage,Last Stage Change Date,Created Date",
            '"Opportunity ID": lead_id, "Last Stage Change Date": stage_changed_at',
        ),
        (
            "Deal - ID,Deal - Title,Deal - Stage,Deal - Update time",
            '"Deal - ID": lead_id, "Deal - Stage": stage, "Deal - Update time": stage_changed_at',
        ),
        (
            "Record Id,Deal Name,Stage,Modified Time,Created Time",
            '"Record Id": lead_id, "Modified Time": stage_changed_at',  # Stage is read as is
        ),
    ],
    ids=["hubspot", "salesforce", "pipedrive", "zoho"],
)
def test_well_known_exports_get_the_renames_that_map_them(
    source: Callable[..., CsvSource], header: str, renames: str
) -> None:
    with pytest.raises(SourceError) as caught:
        source(f"{header}\nx,y,z,w,v\n".encode()).fetch()
    assert f"columns: {{{renames}}}" in str(caught.value)
