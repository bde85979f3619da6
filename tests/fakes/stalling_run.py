"""The real `funnelvalue` CLI with extra destinations that stall, for crash tests.

``--destination stall``: stalls mid-upload (rows pending, nothing written yet).
``--destination data-manager-stall``: submits to the fake Data Manager at $FAKE_DATA_MANAGER,
then stalls before the ledger hears back (Google has the events, the ledger does not).
A crash test waits for the marker file, then kills the process with SIGKILL.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from funnelvalue.cli import main
from funnelvalue.destinations import base
from funnelvalue.destinations.csv_import import ImportFile
from funnelvalue.destinations.data_manager import DataManagerUpload
from funnelvalue.mapping import Mapping
from funnelvalue.settings import Settings
from tests.fakes.data_manager_server import fake_client as data_manager_client


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


class StallingAfterSubmit:
    def __init__(self, inner: DataManagerUpload, marker: Path) -> None:
        self.inner, self.marker = inner, marker

    @property
    def name(self) -> str:
        return self.inner.name

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        submitted = self.inner.upload(conversions)
        self.marker.write_text(str(len(submitted)))
        time.sleep(120)
        return submitted

    def close(self) -> None:
        self.inner.close()


def _submit_and_stall(
    settings: Settings, mapping: Mapping, run_id: int, customer_id: str
) -> base.Destination:
    client = data_manager_client(os.environ["FAKE_DATA_MANAGER"])
    inner = DataManagerUpload(client, customer_id, None, dict(settings.data_manager.action_ids))
    return StallingAfterSubmit(inner, Path(os.environ["STALL_MARKER"]))


base.DESTINATIONS["stall"] = _stall
base.DESTINATIONS["data-manager-stall"] = _submit_and_stall

if __name__ == "__main__":
    main()
