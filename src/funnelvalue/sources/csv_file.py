"""CRM exports as CSV files: whatever Excel, HubSpot or Salesforce wrote.

Handles a UTF-8 BOM, ``;``/``,``/tab delimiters, quoted fields with line breaks, Windows line
ends and Latin-1 files (read, with a warning). The export is read whole every run: a file has
no "changed since", and the ledger makes re-reading it free.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import csv as pacsv

from funnelvalue.errors import ConfigError, SourceError
from funnelvalue.leads import check_columns, normalise, rename_columns
from funnelvalue.mapping import Mapping
from funnelvalue.settings import Settings
from funnelvalue.sources.base import Reading

log = logging.getLogger(__name__)


@dataclass
class CsvSource(Reading):
    path: Path
    mapping: Mapping
    incremental: ClassVar[bool] = False

    @classmethod
    def from_settings(cls, settings: Settings, mapping: Mapping) -> CsvSource:
        if settings.input is None:
            raise ConfigError(
                "no CRM export given: pass --input PATH or set `input:` in "
                "config/funnelvalue.yaml (or FUNNELVALUE_INPUT)"
            )
        return cls(settings.input, mapping)

    @property
    def name(self) -> str:
        return f"csv:{self.path}"

    def _leads(self, since: datetime | None) -> pd.DataFrame:
        """The whole export: a file has no "changed since", so ``since`` is ignored."""
        raw = self.read_raw()
        headers = [str(c) for c in raw.columns if c not in ("source_row", "row_error")]
        frame = rename_columns(raw, self.mapping.columns, used=self.mapping.value_columns)
        check_columns(frame, str(self.path), headers)
        for column in self.mapping.value_columns - set(frame.columns):
            self._warnings.append(
                f"{self.path} has no column '{column}' (used by a stage's "
                "from_column); those stages use their default value"
            )
        return normalise(
            frame, timezone=self.mapping.timezone, timestamp_format=self.mapping.timestamp_format
        )

    def read_raw(self) -> pd.DataFrame:
        """Every cell as text (empty -> missing), plus ``source_row``: the line in the file,
        and ``row_error`` for rows that could not be split into the header's columns."""
        if not self.path.is_file():
            raise SourceError(f"CRM export {self.path} does not exist")
        try:
            with self.path.open("rb") as handle:
                head = handle.read(64 * 1024)
        except OSError as exc:
            raise SourceError(f"CRM export {self.path} cannot be read: {exc}") from exc
        if not head.strip():
            raise SourceError(f"CRM export {self.path} is empty (no header row)")
        _refuse_what_is_not_csv(self.path, head)
        encoding = "utf-8"
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            encoding = "utf-16"  # Excel's "Unicode Text": read it, say so
        try:
            head.decode(encoding)
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the sample's end is not an encoding problem.
            if exc.start < len(head) - 4:
                encoding = "latin-1"
        try:
            frame = self._read(head, encoding)
        except pa.ArrowInvalid as exc:
            if encoding == "latin-1" or "UTF8" not in str(exc):
                raise SourceError(f"CRM export {self.path} is not valid CSV: {exc}") from exc
            encoding = "latin-1"
            frame = self._read(head, encoding)
        if encoding == "latin-1":
            message = (
                f"{self.path} is not UTF-8; read it as Latin-1 (Windows-1252 exports "
                "read this way too). Save the export as UTF-8 to be sure of accents."
            )
            log.warning(message)
            self._warnings.append(message)
        if encoding == "utf-16":
            self._warnings.append(f"{self.path} is UTF-16 (Excel's Unicode Text); read as such")
        return frame

    def _read(self, head: bytes, encoding: str) -> pd.DataFrame:
        """Arrow's CSV reader: multi-threaded, and strings stay in Arrow memory."""
        text = head.decode(encoding, errors="replace").removeprefix("\ufeff")
        delimiter = _sniff_delimiter(text)
        header = next(csv.reader(io.StringIO(text, newline=None), delimiter=delimiter), [])
        names = _unique_names(header)
        ragged: list[tuple[int | None, int]] = []  # (record number, fields) of rows skipped

        def skip(row: Any) -> str:  # never look at row.text: it is a CRM user's data
            ragged.append((row.number, row.actual_columns))
            return "skip"

        def read(threads: bool) -> pa.Table:
            return pacsv.read_csv(
                self.path,
                read_options=pacsv.ReadOptions(
                    encoding="utf8" if encoding == "utf-8" else encoding,
                    column_names=names,
                    skip_rows=1,
                    use_threads=threads,
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter, newlines_in_values=True, invalid_row_handler=skip
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )

        table = read(threads=True)
        if ragged:  # rare: read again in one thread, which knows the rows' numbers
            ragged.clear()
            table = read(threads=False)
        frame: pd.DataFrame = table.to_pandas(
            types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get
        )
        # Record numbers, the header being 1 (quoted line breaks make a record span lines;
        # this is still the best pointer back into the file a person has).
        skipped = sorted(number for number, _ in ragged if number is not None)
        numbers = np.arange(2, len(frame) + 2 + len(skipped))
        frame["source_row"] = numbers[~np.isin(numbers, skipped)][: len(frame)]
        frame["row_error"] = pd.Series(pd.NA, index=frame.index, dtype="string")
        if not ragged:
            return frame
        bad = pd.DataFrame(
            {
                "source_row": [number for number, _ in ragged],
                "row_error": [
                    f"row has {fields} fields, the header has {len(names)}: a delimiter or "
                    "quote inside a cell? (the row is left out; fix it in the export)"
                    for _, fields in ragged
                ],
            }
        )
        bad["row_error"] = bad["row_error"].astype("string")
        return pd.concat([frame, bad], ignore_index=True).sort_values("source_row", kind="stable")


def _refuse_what_is_not_csv(path: Path, head: bytes) -> None:
    """An Excel workbook or a compressed file named .csv: say what it is and what to do."""
    if head.startswith(b"PK\x03\x04"):
        raise SourceError(
            f"CRM export {path} is an Excel workbook (.xlsx) or a zip file, not CSV: in Excel "
            "use File > Save As > CSV UTF-8, or export CSV from the CRM"
        )
    if head.startswith(b"\x1f\x8b"):
        raise SourceError(
            f"CRM export {path} is gzip-compressed: decompress it first (gunzip -k {path})"
        )
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise SourceError(
            f"CRM export {path} is an old Excel workbook (.xls), not CSV: save it as CSV UTF-8"
        )


def _unique_names(header: list[str]) -> list[str]:
    """Arrow needs distinct column names; an export can repeat one (or leave it blank)."""
    names: list[str] = []
    for position, given in enumerate(header):
        name = given.strip() or f"column_{position + 1}"
        while name in names:
            name += "_"
        names.append(name)
    return names


def _sniff_delimiter(sample: str) -> str:
    """The header line decides: headers rarely contain the delimiter, data cells often do."""
    header = sample.splitlines()[0] if sample else ""
    return max([",", ";", "\t", "|"], key=header.count)
