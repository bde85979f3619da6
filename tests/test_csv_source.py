from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from funnelvalue.errors import SourceError
from funnelvalue.mapping import load_mapping
from funnelvalue.sources.csv_file import CsvSource


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
    assert "columns found: id, deal_stage, when" in message
    assert "columns:" in message


def test_missing_and_empty_files(source: Callable[..., CsvSource], tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is empty"):
        source(b"").fetch()
    src = source(b"x")
    src.path = tmp_path / "gone.csv"
    with pytest.raises(SourceError, match="does not exist"):
        src.fetch()
