"""The real `funnelvalue` CLI with one extra destination that stalls mid-upload.

A crash test starts this as a subprocess with ``--destination stall``, waits for the marker file
(the rows are pending in the ledger and the upload has begun), and kills it with SIGKILL.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from funnelvalue.cli import main
from funnelvalue.destinations import base
from funnelvalue.destinations.csv_import import ImportFile
from funnelvalue.mapping import Mapping
from funnelvalue.settings import Settings


class StallingImportFile:
    def __init__(self, inner: ImportFile, marker: Path) -> None:
        self.inner, self.marker = inner, marker

    @property
    def name(self) -> str:
        return self.inner.name

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        self.marker.write_text(str(len(conversions)))
        time.sleep(120)
        return self.inner.upload(conversions)

    def close(self) -> None:
        return None


def _stall(settings: Settings, mapping: Mapping, run_id: int, customer_id: str) -> base.Destination:
    inner = ImportFile.for_run(settings.output, mapping.timezone, run_id)
    return StallingImportFile(inner, Path(os.environ["STALL_MARKER"]))


base.DESTINATIONS["stall"] = _stall

if __name__ == "__main__":
    main()
