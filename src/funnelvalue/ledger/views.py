"""Read-only views of the ledger for `status`, `report` and `advise`: runs, counts, history.

Nothing here writes; nothing here holds raw PII to show (the ledger never stores it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, select

from funnelvalue.ledger.database import Database
from funnelvalue.ledger.schema import conversions, rejected_rows, runs, watermarks
from funnelvalue.vocabulary import Outcome


@dataclass(frozen=True)
class RunSummary:
    id: int
    command: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    summary: dict[str, Any]
    message: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "exit_code": self.exit_code,
            "started_at": self.started_at.isoformat(),
            "summary": self.summary,
            "message": self.message,
        }


class LedgerViews:
    def __init__(self, db: Database) -> None:
        self._db = db

    def last_runs(self, limit: int = 10) -> list[RunSummary]:
        with self._db.engine.connect() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit)).mappings()
            return [
                RunSummary(
                    id=r["id"],
                    command=r["command"],
                    status=r["status"],
                    started_at=r["started_at"],
                    finished_at=r["finished_at"],
                    exit_code=r["exit_code"],
                    summary=r["summary"] or {},
                    message=r["message"],
                )
                for r in rows
            ]

    def status_counts(self) -> dict[str, int]:
        """Conversions per ledger status."""
        query = select(conversions.c.status, func.count()).group_by(conversions.c.status)
        with self._db.engine.connect() as conn:
            return {str(status): int(count) for status, count in conn.execute(query)}

    def destination_rejections(self) -> dict[str, int]:
        """How many conversions the destination rejected, per error code, most common first."""
        query = (
            select(conversions.c.error_code, func.count())
            .where(conversions.c.status == Outcome.REJECTED)
            .group_by(conversions.c.error_code)
            .order_by(func.count().desc())
        )
        with self._db.engine.connect() as conn:
            return {str(code): int(count) for code, count in conn.execute(query)}

    def rejected_reasons(self, run_id: int, top: int = 5) -> dict[str, int]:
        """A run's rows left out, counted per reason code, most common first."""
        query = (
            select(rejected_rows.c.reason_code, func.count())
            .where(rejected_rows.c.run_id == run_id)
            .group_by(rejected_rows.c.reason_code)
            .order_by(func.count().desc(), rejected_rows.c.reason_code)
            .limit(top)
        )
        with self._db.engine.connect() as conn:
            return {str(code or "other"): int(count) for code, count in conn.execute(query)}

    def rejected_rows(self, run_id: int) -> pd.DataFrame:
        query = select(rejected_rows).where(rejected_rows.c.run_id == run_id)
        with self._db.engine.connect() as conn:
            rows = conn.execute(query.order_by(rejected_rows.c.id)).mappings().all()
        return pd.DataFrame(rows)

    def funnel_history(self, customer_id: str) -> pd.DataFrame:
        """Every conversion the ledger holds for the customer (no identifiers): lead, stage,
        action, when it was reached, its value and currency, and when it went out; for
        funnel statistics and the report's totals."""
        columns = [
            "lead_id",
            "stage",
            "conversion_action",
            "reached_at",
            "value",
            "currency",
            "status",
            "sent_at",
        ]
        query = select(
            conversions.c.lead_id,
            conversions.c.stage,
            conversions.c.conversion_action,
            conversions.c.conversion_time.label("reached_at"),
            conversions.c.value,
            conversions.c.currency,
            conversions.c.status,
            conversions.c.sent_at,
        ).where(conversions.c.customer_id == customer_id)
        frame = self._db.read(query)
        if frame.empty:
            return pd.DataFrame(columns=columns)
        for column in ("reached_at", "sent_at"):
            frame[column] = pd.to_datetime(frame[column]).dt.tz_localize("UTC")
        return frame

    def watermarks(self) -> dict[str, pd.Timestamp]:
        """Every source's watermark: the newest change already read from it."""
        with self._db.engine.connect() as conn:
            rows = conn.execute(select(watermarks.c.source, watermarks.c.value)).all()
        return {str(source): pd.Timestamp(value, tz="UTC") for source, value in rows}

    def conversions_frame(self) -> pd.DataFrame:
        """Every ledger row (tests and status use it; no raw PII is stored to leak)."""
        with self._db.engine.connect() as conn:
            return pd.DataFrame(conn.execute(select(conversions)).mappings().all())
