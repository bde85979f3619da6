"""Google Ads offline conversion import files: uploaded by hand or fetched on a schedule.

The layout is Google's click-conversion template (a ``Parameters:TimeZone=`` line, then
``Google Click ID, Conversion Name, Conversion Time, Conversion Value, Conversion Currency``),
times written ``yyyy-MM-dd HH:mm:ss`` in that zone, without a per-row offset (the template's
form; rows with ``+01:00`` offsets beside the parameter line are reported rejected),
plus ``Order ID`` so that a row imported twice is deduplicated by Google, and the enhanced
conversions for leads columns (hashed ``Email`` / ``Phone Number``) when some rows have no click
id.

Two files, because Google has not seen a row when it is written: each run writes its own
(``runs/<name>-<date>-run<id>.csv``, kept), and the file at ``output``, which a scheduled import
fetches, holds every conversion written in the last ``import_window_days`` (from the ledger),
so a fetch that was missed, or a run with nothing new, loses nothing, and re-fetching is
harmless (Order IDs). Rows are ``written`` in the ledger, not "uploaded". Files are written to a
temporary file and renamed (a reader never sees half a file), world-readable, and only over a
regular file; text cells that a spreadsheet would run as a formula are neutralised.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from funnelvalue.destinations.base import outcomes
from funnelvalue.errors import ConfigError, DestinationError
from funnelvalue.formatting import format_wall_time
from funnelvalue.frames import TEXT, arrow_text, value_offsets
from funnelvalue.vocabulary import BRAIDS, ClickIdKind, Outcome

CLICK_ID_COLUMNS = ("Google Click ID", "GBRAID", "WBRAID")
FORMULA_START = "=+-@\t\r"  # a cell starting with one, a spreadsheet may run as a formula
FORMULA_BYTES = np.isin(np.arange(256), list(FORMULA_START.encode("ascii")))  # by first byte
_ACTION_ID = re.compile(r"^(?:customers/\d+/conversionActions/)?(\d+)$")
FILE_MODE = 0o644  # Google's fetcher and colleagues read it; nothing in it is secret (hashes)


@dataclass(frozen=True)
class ImportFile:
    path: Path  # the rolling file a scheduled import fetches
    run_path: Path  # this run's own file
    timezone: str
    window_days: int = 7
    action_names: dict[str, str] = field(default_factory=dict)  # action id -> its name
    outcome_known_first: ClassVar[bool] = True  # written here: the ledger records it once
    # the keys of this run's file, in order, once written (publish may copy it)
    _written: dict[str, pa.ChunkedArray] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def for_run(
        cls,
        output: Path,
        timezone: str,
        run_id: int,
        window_days: int = 7,
        now: pd.Timestamp | None = None,
        action_names: dict[str, str] | None = None,
    ) -> ImportFile:
        if "{" in str(output) or "}" in str(output):
            raise ConfigError(
                f"output '{output}' has placeholders: it is the one file a scheduled Google "
                "Ads import fetches, so its name must not change. Every run also writes its "
                "own file beside it, in runs/ (named with the date and the run id)"
            )
        date = (now or pd.Timestamp.now(tz="UTC")).strftime("%Y-%m-%d")
        run_path = output.parent / "runs" / f"{output.stem}-{date}-run{run_id}{output.suffix}"
        return cls(output, run_path, timezone, window_days, dict(action_names or {}))

    @property
    def name(self) -> str:
        return f"csv:{self.path}"

    def action_identities(self, labels: Iterable[str], *, strict: bool) -> dict[str, str]:
        """The file names each action by the name Google matches: that is its identity. A
        label that is an id (or a resource name) needs its name from ``action_names``."""
        found: dict[str, str] = {}
        for label in sorted({str(label) for label in labels}):
            action_id = _action_id(label)
            name = label if action_id is None else self.action_names.get(action_id)
            if name is not None:
                found[label] = name
        missing = sorted(set(map(str, labels)) - set(found))
        if strict and missing:
            raise ConfigError(
                "the import file names each conversion action by its name, as Google Ads shows "
                "it (Goals -> Conversions); the mapping gives ids: write the names in the "
                "mapping's conversion_action, or list them under data_manager.action_ids "
                "(name: id) in config/funnelvalue.yaml",
                [f"'{label}' is an id, not a name" for label in missing],
            )
        return found

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        if conversions.empty:
            return outcomes(conversions["key"], Outcome.WRITTEN)
        write_import_file(self.run_path, conversions, self.timezone)
        self._written["keys"] = arrow_text(conversions["key"])
        return outcomes(conversions["key"], Outcome.WRITTEN, message=f"written to {self.run_path}")

    def publish(self, recent: pd.DataFrame) -> None:
        """Rewrite the fetched file with every conversion written in the window. When that
        is exactly this run's file (a first run; nothing else written in the window), it
        becomes that file: the same bytes, formatted once (900k rows: 1.3 s), not even copied
        where the file system has hard links (0.4 s and 150 MB less written)."""
        keys = self._written.get("keys")
        if keys is not None and len(keys) == len(recent) and arrow_text(recent["key"]).equals(keys):
            _same_file(self.run_path, self.path)
            return
        write_import_file(self.path, recent, self.timezone)

    def close(self) -> None:
        return None


def write_import_file(path: Path, conversions: pd.DataFrame, timezone: str) -> None:
    """Write ``conversions`` as an import file at ``path``, atomically and world-readable."""
    table = import_table(conversions, timezone)

    def write(handle: BinaryIO) -> None:
        handle.write(f"Parameters:TimeZone={timezone}\n".encode())
        _write_csv(table, handle)

    _replace(path, write)


def _replace(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``path`` replaced whole by what ``write`` writes: a temporary file beside it, synced,
    then renamed over it (a reader sees the old file or the new one, never half)."""
    try:
        _check_replaceable(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise _cannot_write(path, exc) from exc


def _same_file(source: Path, path: Path) -> None:
    """``path`` replaced by ``source``'s content: a hard link to it (both files are only ever
    replaced whole, never written in place, so the next publish leaves the run's file as it
    was), else a copy where the file system refuses links (another device, some shares)."""
    _check_replaceable(path)
    link = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.link")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, link)
    except OSError:
        _replace(path, lambda handle: _copy(source, handle))
        return
    try:
        os.replace(link, path)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    finally:  # gone once renamed; left when path was that file already (rename does nothing)
        link.unlink(missing_ok=True)


def _cannot_write(path: Path, exc: OSError) -> DestinationError:
    return DestinationError(
        f"cannot write the import file {path}: {exc.strerror or exc}", transient=False
    )


def _copy(source: Path, handle: BinaryIO) -> None:
    with source.open("rb") as original:
        shutil.copyfileobj(original, handle, length=1 << 20)


def _write_csv(table: pd.DataFrame, handle: BinaryIO) -> None:
    """The table as CSV by Arrow's writer (measured: 6x pandas' to_csv on 896k rows), every
    column as text so the file says exactly what Google reads: values with two decimals,
    missing cells empty."""
    text = table.assign(**{"Conversion Value": _two_decimals(table["Conversion Value"])}).astype(
        "string"
    )
    arrow = pa.Table.from_pandas(text, preserve_index=False)
    # The header as Google's template writes it (plain names); the cells quoted by Arrow
    # (RFC 4180: a name with a comma stays one cell).
    handle.write((",".join(table.columns) + "\n").encode())
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    pa_csv.write_csv(arrow, handle, options)


def _two_decimals(values: pd.Series) -> pd.Series:
    """1234.5 -> "1234.50", in Arrow (np.char.mod's "%.2f" took 1.2 s per 900k rows): values
    are rounded to cents when built, so whole cents are exact. Missing stays missing."""
    numbers = pd.to_numeric(values).to_numpy(dtype="float64")
    missing = ~np.isfinite(numbers)
    cents = np.rint(np.abs(np.where(missing, 0.0, numbers)) * 100).astype(np.int64)
    whole = pc.cast(pa.array(cents // 100), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), width=2, padding="0")
    negative = numbers < 0
    if negative.any():  # rare (a refund as a conversion?): most files need no sign pass
        sign = pa.array(np.where(negative, "-", ""), pa.string())
        whole = pc.binary_join_element_wise(sign, whole, pa.scalar(""))
    text = pc.binary_join_element_wise(whole, fraction, pa.scalar("."))
    text = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), text)
    return pd.Series(pd.array(text, dtype=pd.StringDtype("pyarrow")), index=values.index)


def _check_replaceable(path: Path) -> None:
    """Only a regular file is replaced: never a symlink, a folder or a device."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise DestinationError(
            f"refusing to replace {path}: it is {what}; point output at a plain file",
            transient=False,
        )


def import_table(conversions: pd.DataFrame, timezone: str) -> pd.DataFrame:
    """The rows of the import file, columns in Google's template order."""
    kind = conversions["click_id_kind"]
    table = pd.DataFrame(
        {
            "Google Click ID": conversions["click_id"].where(kind == ClickIdKind.GCLID),
            "Conversion Name": _action_names(conversions),
            "Conversion Time": format_wall_time(conversions["conversion_time"], timezone),
            "Conversion Value": conversions["value"],
            "Conversion Currency": conversions["currency"],
            "Order ID": conversions["order_id"],
        }
    )
    if kind.isin(list(BRAIDS)).any():
        table["GBRAID"] = conversions["click_id"].where(kind == ClickIdKind.GBRAID)
        table["WBRAID"] = conversions["click_id"].where(kind == ClickIdKind.WBRAID)
    if (kind == ClickIdKind.USER).any():
        table["Email"] = conversions["hashed_email"]
        table["Phone Number"] = conversions["hashed_phone"]
    if conversions["consent"].notna().any():
        table["Ad User Data Consent"] = conversions["consent"].str.title()
    return neutralise_formulas(table)


def _action_id(label: str) -> str | None:
    """The numeric id in an action label (``123`` or ``customers/1/conversionActions/123``)."""
    match = _ACTION_ID.match(label)
    return match[1] if match else None


def _action_names(conversions: pd.DataFrame) -> pd.Series:
    """What the file's Conversion Name says: the action's identity, which for this
    destination is the name (the label when an older ledger row has none)."""
    if "action_identity" not in conversions.columns:
        return conversions["conversion_action"]
    return conversions["action_identity"].fillna(conversions["conversion_action"])


def neutralise_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """Text cells starting with = + - @ (or a tab/CR) get a leading ' so a spreadsheet shows
    them instead of running them (OWASP CSV injection). Click ids may start with '-' and are
    never opened as formulas by Google: they are left exactly as Google issued them."""
    for column in table.columns:
        if column in CLICK_ID_COLUMNS or not pd.api.types.is_string_dtype(table[column]):
            continue
        cells = arrow_text(table[column])
        risky = np.concatenate([np.zeros(0, bool), *(_formula_starts(c) for c in cells.chunks)])
        if risky.any():  # rare: most files have none
            apostrophe = pa.scalar("'", cells.type)
            prefixed = pc.binary_join_element_wise(apostrophe, cells, pa.scalar("", cells.type))
            quoted = pc.if_else(pa.array(risky, pa.bool_()), prefixed, cells)
            table[column] = pd.Series(pd.array(quoted, dtype=TEXT), index=table.index)
    return table


def _formula_starts(cells: pa.Array) -> np.ndarray:
    """Whether each cell starts with a FORMULA_START character: its first byte, read from
    Arrow's buffers (the characters are ASCII, so the byte is the character; 6x slicing a
    string per cell). Another string layout (a view) is read as large strings first."""
    if not (pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type)):
        cells = cells.cast(pa.large_string())
    data_buffer = cells.buffers()[2]
    if data_buffer is None:  # no cells, or none with text
        return np.zeros(len(cells), dtype=bool)
    offsets = value_offsets(cells)
    data = np.frombuffer(data_buffer, dtype=np.uint8)
    has_text = np.greater(offsets[1:], offsets[:-1])  # a missing cell may span bytes: see below
    if cells.null_count:
        has_text &= cells.is_valid().to_numpy(zero_copy_only=False)
    first = np.zeros(len(cells), dtype=np.uint8)
    first[has_text] = data[offsets[:-1][has_text]]
    starts: np.ndarray = FORMULA_BYTES[first]
    return starts
