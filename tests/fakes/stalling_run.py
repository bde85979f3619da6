"""The real `funnelvalue` CLI with extra destinations that stall, for crash tests.

``--destination stall``: stalls mid-upload (rows pending, nothing written yet).
``--destination slow``: accepts batches of 10 slowly (for SIGTERM between requests).
``--destination data-manager-stall``: submits to the fake Data Manager at $FAKE_DATA_MANAGER,
then stalls before the ledger hears back (Google has the events, the ledger does not).
A crash test waits for the marker file, then kills the process with SIGKILL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from funnelvalue.cli import main
from funnelvalue.destinations import base, registry
from funnelvalue.destinations.base import outcomes
from funnelvalue.destinations.csv_import import ImportFile
from funnelvalue.destinations.data_manager import DataManagerUpload
from funnelvalue.destinations.registry import Context
from funnelvalue.destinations.sending import batches, send_in_batches
from tests.fakes.data_manager_server import fake_client as data_manager_client


class StallingImportFile:
    def __init__(self, inner: ImportFile, marker: Path) -> None:
        self.inner, self.marker = inner, marker

    @property
    def name(self) -> str:
        return self.inner.name

    def action_identities(self, labels: Iterable[str], *, strict: bool) -> dict[str, str]:
        return self.inner.action_identities(labels, strict=strict)

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        self.marker.write_text(str(len(conversions)))
        time.sleep(120)
        return self.inner.upload(conversions)

    def close(self) -> None:
        return None


def _stall(context: Context) -> base.Destination:
    inner = ImportFile.for_run(
        context.settings.output, context.mapping.timezone, context.run_id, now=context.now
    )
    return StallingImportFile(inner, Path(os.environ["STALL_MARKER"]))


class StallingAfterSubmit:
    def __init__(self, inner: DataManagerUpload, marker: Path) -> None:
        self.inner, self.marker = inner, marker

    @property
    def name(self) -> str:
        return self.inner.name

    def action_identities(self, labels: Iterable[str], *, strict: bool) -> dict[str, str]:
        return self.inner.action_identities(labels, strict=strict)

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        submitted = self.inner.upload(conversions)
        self.marker.write_text(str(len(submitted)))
        time.sleep(120)
        return submitted

    def close(self) -> None:
        self.inner.close()


def _submit_and_stall(context: Context) -> base.Destination:
    client = data_manager_client(os.environ["FAKE_DATA_MANAGER"])
    ids = dict(context.settings.data_manager.action_ids)
    inner = DataManagerUpload(client, context.customer_id, None, ids)
    return StallingAfterSubmit(inner, Path(os.environ["STALL_MARKER"]))


class SlowBatches:
    """Accepts batches of 10 slowly, writing the accepted order ids to $STALL_MARKER after
    each, so a test can send SIGTERM between two requests."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    @property
    def name(self) -> str:
        return "slow"

    def action_identities(self, labels: Iterable[str], *, strict: bool) -> dict[str, str]:
        return {label: label for label in labels}

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        accepted: list[str] = []

        def send(batch: pd.DataFrame) -> pd.DataFrame:
            time.sleep(0.3)
            accepted.extend(batch["order_id"])
            self.marker.write_text("\n".join(accepted))
            return outcomes(batch["key"], "uploaded")

        return send_in_batches(batches(conversions, 10), send)

    def close(self) -> None:
        return None


def _slow(context: Context) -> base.Destination:
    return SlowBatches(Path(os.environ["STALL_MARKER"]))


registry.DESTINATIONS["slow"] = _slow
registry.DESTINATIONS["stall"] = _stall
registry.DESTINATIONS["data-manager-stall"] = _submit_and_stall

if __name__ == "__main__":
    main()
