"""Asynchronous requests (the Data Manager API): which are open, and the verdicts on them.

The destination decides each request's verdict from Google's answer (vocabulary.RequestState);
this module only records it: the request's row, and the status of the conversions it carried.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, func, select, update

from funnelvalue.ledger.database import Database, utcnow
from funnelvalue.ledger.schema import conversions, requests
from funnelvalue.vocabulary import Outcome, RequestState

MAX_SUBMISSIONS = 3  # a request that fails as a whole is sent again at most this often
RETRY_AFTER = pd.Timedelta(hours=6)  # a click too recent for Google is old enough by then
# Google keeps answering REQUEST_STATUS_UNKNOWN: after this long its events are sent again
# (those Google has come back as duplicates) rather than waited on forever.
UNKNOWN_GIVE_UP = pd.Timedelta(days=2)

# Verdict -> what its conversions become (FAILED: sent again, until MAX_SUBMISSIONS).
CONVERSION_STATUS = {
    RequestState.SUCCESS: (Outcome.UPLOADED, None),
    RequestState.PARTIAL: (Outcome.PARTIAL, "PARTIAL_SUCCESS"),
    RequestState.DUPLICATE: (Outcome.DUPLICATE, None),
    RequestState.FAILED: (Outcome.PENDING, "REQUEST_FAILED"),
    RequestState.RETRY: (Outcome.RETRY_AFTER, "TOO_RECENT_CLICK"),
}


def record_submitted(
    conn: Connection, run_id: int, destination: str, outcomes: pd.DataFrame, now: datetime
) -> None:
    """Each request the outcomes name as submitted, with how many events it carried."""
    if "request_id" not in outcomes.columns:
        return
    submitted = outcomes[outcomes["request_id"].notna() & (outcomes["status"] == Outcome.SUBMITTED)]
    for request_id, events in submitted.groupby("request_id").size().items():
        conn.execute(
            requests.insert().values(
                request_id=str(request_id),
                run_id=run_id,
                destination=destination,
                events=int(events),
                status=RequestState.SUBMITTED,
                submitted_at=now,
            )
        )


class RequestBook:
    """The ledger's record of asynchronous requests."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def open(self, destination: str) -> list[str]:
        """Requests of ``destination`` whose verdict is not known yet, oldest first."""
        query = (
            select(requests.c.request_id)
            .where(
                requests.c.status == RequestState.SUBMITTED, requests.c.destination == destination
            )
            .order_by(requests.c.submitted_at)
        )
        with self._db.engine.connect() as conn:
            return list(conn.scalars(query))

    def record(self, verdicts: pd.DataFrame) -> dict[str, int]:
        """Record the destination's verdicts, atomically; returns requests per verdict.

        ``verdicts``: request_id, state (RequestState), error_counts ({reason: events}),
        message. A request that failed as a whole puts its rows back to pending, to be sent
        again (replays are harmless: the transaction id is the order id) at most
        MAX_SUBMISSIONS times, after which they are rejected with the request's message.
        """
        counts: dict[str, int] = {}
        now = utcnow()
        with self._db.tx() as conn:
            for row in verdicts.to_dict("records"):
                state = RequestState(row["state"])
                request = requests.c.request_id == row["request_id"]
                if state == RequestState.UNKNOWN and self._unknown_too_long(conn, request, now):
                    state = RequestState.FAILED
                    row["message"] = (
                        f"Google could not say what became of this request for "
                        f"{UNKNOWN_GIVE_UP.days} days (REQUEST_STATUS_UNKNOWN); its events "
                        "are sent again and Google recognises the ones it has"
                    )
                counts[state] = counts.get(state, 0) + 1
                if state in (RequestState.PROCESSING, RequestState.UNKNOWN):
                    conn.execute(update(requests).where(request).values(checked_at=now))
                    continue
                errors = {str(k): int(v) for k, v in (row.get("error_counts") or {}).items()}
                conn.execute(
                    update(requests)
                    .where(request)
                    .values(status=state, checked_at=now, error_counts=errors or None)
                )
                mine = (conversions.c.request_id == row["request_id"]) & (
                    conversions.c.status == Outcome.SUBMITTED
                )
                message = str(row.get("message") or "") or None
                status, code = CONVERSION_STATUS[state]
                if state == RequestState.DUPLICATE:
                    message = "already in Google Ads"
                if state in (RequestState.FAILED, RequestState.RETRY):
                    # bounded: a request Google fails (or finds too recent) every time
                    failed = state == RequestState.FAILED
                    final = Outcome.REJECTED if failed else Outcome.PARTIAL
                    conn.execute(
                        update(conversions)
                        .where(mine, conversions.c.attempts >= MAX_SUBMISSIONS)
                        .values(
                            status=final,
                            error_code=code,
                            message=f"{'failed' if failed else 'too recent'} "
                            f"{MAX_SUBMISSIONS} times: {message}",
                            updated_at=now,
                        )
                    )
                retry_at = (now + RETRY_AFTER) if state == RequestState.RETRY else None
                conn.execute(
                    update(conversions)
                    .where(mine)
                    .values(
                        status=status,
                        error_code=code,
                        message=message,
                        retry_at=retry_at,
                        updated_at=now,
                    )
                )
        return {str(k): v for k, v in counts.items()}

    @staticmethod
    def _unknown_too_long(conn: Connection, request: Any, now: datetime) -> bool:
        submitted = conn.scalar(select(requests.c.submitted_at).where(request))
        if submitted is None:
            return False
        age = pd.Timestamp(now).tz_localize(None) - pd.Timestamp(submitted).tz_localize(None)
        return bool(age > UNKNOWN_GIVE_UP)

    def summary(self) -> dict[str, Any]:
        """Requests per status, the unconfirmed events, the oldest open one, and the failure
        reasons Google counted."""
        with self._db.engine.connect() as conn:
            rows = conn.execute(
                select(
                    requests.c.status,
                    func.count(),
                    func.sum(requests.c.events),
                    func.min(requests.c.submitted_at),
                ).group_by(requests.c.status)
            ).all()
            reasons: dict[str, int] = {}
            for (errors,) in conn.execute(
                select(requests.c.error_counts).where(requests.c.error_counts.is_not(None))
            ):
                for reason, events in (errors or {}).items():
                    reasons[reason] = reasons.get(reason, 0) + int(events)
        if not rows:
            return {}
        by_status = {str(s): {"requests": int(n), "events": int(e or 0)} for s, n, e, _ in rows}
        oldest = next((first for s, _, _, first in rows if s == RequestState.SUBMITTED), None)
        return {
            "requests": by_status,
            "oldest_open": None if oldest is None else pd.Timestamp(oldest, tz="UTC").isoformat(),
            "failure_reasons": dict(sorted(reasons.items(), key=lambda item: -item[1])),
        }
