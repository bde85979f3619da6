"""A destination with failure knobs, for pipeline tests (the dlt 'dummy' destination idea)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from funnelvalue.errors import DestinationError
from funnelvalue.vocabulary import OUTCOME_COLUMNS


@dataclass
class FakeDestination:
    """Accepts everything unless told otherwise.

    ``unavailable`` raises on upload (rows must stay pending); ``verdicts`` maps a lead id to
    (status, error_code, retry_at) for that lead's conversions.
    """

    unavailable: bool = False
    verdicts: dict[str, tuple[str, str | None, pd.Timestamp | None]] = field(default_factory=dict)
    received: list[pd.DataFrame] = field(default_factory=list)

    identities: dict[str, str] = field(default_factory=dict)  # label -> action id; else label

    @property
    def name(self) -> str:
        return "fake"

    def action_identities(self, labels: Iterable[str], *, strict: bool) -> dict[str, str]:
        return {label: self.identities.get(label, label) for label in labels}

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        if self.unavailable:
            raise DestinationError("fake destination is down")
        self.received.append(conversions.copy())
        rows = []
        for key, lead in zip(conversions["key"], conversions["lead_id"], strict=True):
            status, code, retry_at = self.verdicts.get(lead, ("uploaded", None, None))
            rows.append(
                {
                    "key": key,
                    "status": status,
                    "error_code": code,
                    "message": code and f"fake says {code}",
                    "retry_at": retry_at,
                }
            )
        out = pd.DataFrame(rows, columns=OUTCOME_COLUMNS)
        out["retry_at"] = pd.to_datetime(out["retry_at"], utc=True)
        return out

    def close(self) -> None:
        return None

    @property
    def sent_keys(self) -> list[str]:
        return [k for frame in self.received for k in frame["key"]]
