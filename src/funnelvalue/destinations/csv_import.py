"""Google Ads offline conversion import file: uploaded by hand or fetched on a schedule.

The layout is Google's click-conversion template (a ``Parameters:TimeZone=`` line, then
``Google Click ID, Conversion Name, Conversion Time, Conversion Value, Conversion Currency``),
plus ``Order ID`` so that a file imported twice is deduplicated by Google, and the enhanced
conversions for leads columns (hashed ``Email`` / ``Phone Number``) when some rows have no click
id. Written to a temporary file and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from funnelvalue.conversions import USER_IDENTIFIERS, format_conversion_time
from funnelvalue.destinations.base import outcomes
from funnelvalue.errors import DestinationError


@dataclass(frozen=True)
class ImportFile:
    path: Path
    timezone: str

    @classmethod
    def for_run(cls, template: Path, timezone: str, run_id: int) -> ImportFile:
        """``{run_id}`` and ``{date}`` in the path give one file per run."""
        name = str(template).format(run_id=run_id, date=datetime.now(UTC).strftime("%Y-%m-%d"))
        return cls(Path(name), timezone)

    @property
    def name(self) -> str:
        return f"csv:{self.path}"

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        table = import_table(conversions, self.timezone)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                    handle.write(f"Parameters:TimeZone={self.timezone}\n")
                    table.to_csv(handle, index=False, lineterminator="\n", float_format="%.2f")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise DestinationError(
                f"cannot write the import file {self.path}: {exc}", transient=False
            ) from exc
        return outcomes(conversions["key"], "uploaded", message=f"written to {self.path}")

    def close(self) -> None:
        return None


def import_table(conversions: pd.DataFrame, timezone: str) -> pd.DataFrame:
    """The rows of the import file, columns in Google's template order."""
    kind = conversions["click_id_kind"]
    table = pd.DataFrame(
        {
            "Google Click ID": conversions["click_id"].where(kind == "gclid"),
            "Conversion Name": conversions["conversion_action"],
            "Conversion Time": format_conversion_time(conversions["conversion_time"], timezone),
            "Conversion Value": conversions["value"],
            "Conversion Currency": conversions["currency"],
            "Order ID": conversions["order_id"],
        }
    )
    if kind.isin(["gbraid", "wbraid"]).any():
        table["GBRAID"] = conversions["click_id"].where(kind == "gbraid")
        table["WBRAID"] = conversions["click_id"].where(kind == "wbraid")
    if (kind == USER_IDENTIFIERS).any():
        table["Email"] = conversions["hashed_email"]
        table["Phone Number"] = conversions["hashed_phone"]
    if conversions["consent"].notna().any():
        table["Ad User Data Consent"] = conversions["consent"].str.title()
    return table
