"""CRM exports as CSV files: whatever Excel, HubSpot or Salesforce wrote.

Handles a UTF-8 BOM, ``;``/``,``/tab delimiters, quoted fields with line breaks, Windows line
ends and Latin-1 files (read, with a warning). The export is read whole every run: a file has
no "changed since", and the ledger makes re-reading it free.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from funnelvalue.errors import ConfigError, SourceError
from funnelvalue.leads import check_columns, normalise, rename_columns
from funnelvalue.mapping import Mapping
from funnelvalue.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class CsvSource:
    path: Path
    mapping: Mapping
    warnings: list[str] = field(default_factory=list)

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

    def fetch(self, since: datetime | None = None) -> pd.DataFrame:
        raw = self.read_raw()
        frame = rename_columns(raw, self.mapping.columns)
        check_columns(frame, str(self.path))
        for column in self.mapping.value_columns - set(frame.columns):
            self.warnings.append(
                f"{self.path} has no column '{column}' (used by a stage's "
                "from_column); those stages use their default value"
            )
        return normalise(
            frame, timezone=self.mapping.timezone, timestamp_format=self.mapping.timestamp_format
        )

    def read_raw(self) -> pd.DataFrame:
        """Every cell as text (empty -> missing), plus ``source_row``: the line in the file."""
        if not self.path.is_file():
            raise SourceError(f"CRM export {self.path} does not exist")
        try:
            with self.path.open("rb") as handle:
                head = handle.read(64 * 1024)
        except OSError as exc:
            raise SourceError(f"CRM export {self.path} cannot be read: {exc}") from exc
        encoding = "utf-8-sig"
        try:
            head.decode(encoding)
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the sample's end is not an encoding problem.
            if exc.start < len(head) - 4:
                encoding = "latin-1"
        delimiter = _sniff_delimiter(head.decode(encoding, errors="replace"))
        try:
            frame = self._read(encoding, delimiter)
        except UnicodeDecodeError:
            encoding = "latin-1"
            frame = self._read(encoding, delimiter)
        if encoding == "latin-1":
            message = (
                f"{self.path} is not UTF-8; read it as Latin-1 (Windows-1252 exports "
                "read this way too). Save the export as UTF-8 to be sure of accents."
            )
            log.warning(message)
            self.warnings.append(message)
        return frame

    def _read(self, encoding: str, delimiter: str) -> pd.DataFrame:
        try:
            frame = pd.read_csv(
                self.path,
                sep=delimiter,
                dtype=str,
                encoding=encoding,
                keep_default_na=False,
                na_values=[""],
                skipinitialspace=True,
                skip_blank_lines=True,
            )
        except pd.errors.EmptyDataError:
            raise SourceError(f"CRM export {self.path} is empty (no header row)") from None
        except pd.errors.ParserError as exc:
            raise SourceError(f"CRM export {self.path} is not valid CSV: {exc}") from exc
        # Data rows start on line 2; quoted line breaks make this an approximation, which is
        # still the best pointer back into the file a person has.
        frame["source_row"] = pd.RangeIndex(2, len(frame) + 2).to_numpy()
        return frame


def _sniff_delimiter(sample: str) -> str:
    """The header line decides: headers rarely contain the delimiter, data cells often do."""
    header = sample.splitlines()[0] if sample else ""
    return max([",", ";", "\t", "|"], key=header.count)
