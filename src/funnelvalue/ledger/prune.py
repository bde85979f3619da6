"""Forgetting what can no longer matter: conversions too old for Google to take again.

A ledger row is what stops a conversion from being sent twice. Google only takes a click
conversion whose click is at most 90 days old (the longest click-through window), and the
pipeline rejects anything older than the mapping's lookback before it reaches the ledger. So a
row whose conversion happened more than 90 days ago can never be sent again, or adjusted (54
days): forgetting it cannot double-count. Rows not done yet (pending, failed, held, retry,
submitted but unconfirmed) are never pruned, whatever their age, and neither are the runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import delete, func, select

from funnelvalue.errors import ConfigError
from funnelvalue.ledger.database import Database
from funnelvalue.ledger.schema import conversions, rejected_rows, runs
from funnelvalue.vocabulary import Outcome

GOOGLE_CLICK_WINDOW_DAYS = 90  # the longest click-through window Google offers
# Finished rows: nothing will be sent for them again (SUBMITTED is not: Google may fail it).
FINAL = [Outcome.UPLOADED, Outcome.DUPLICATE, Outcome.PARTIAL, Outcome.WRITTEN, Outcome.REJECTED]


@dataclass(frozen=True)
class Pruned:
    cutoff: pd.Timestamp
    conversions: int
    rejected_rows: int
    dry_run: bool


def prune(db: Database, older_than_days: int, now: pd.Timestamp, *, dry_run: bool) -> Pruned:
    """Delete finished conversions older than ``older_than_days`` (> 90) and the rejected-row
    reports of runs that old; with ``dry_run`` only count them."""
    if older_than_days <= GOOGLE_CLICK_WINDOW_DAYS:
        raise ConfigError(
            f"--older-than {older_than_days}: Google takes conversions up to "
            f"{GOOGLE_CLICK_WINDOW_DAYS} days after the click, and the ledger must remember "
            f"those to never send them twice; give more than {GOOGLE_CLICK_WINDOW_DAYS} days"
        )
    cutoff = now - pd.Timedelta(days=older_than_days)
    moment: datetime = cutoff.tz_convert(None).to_pydatetime()
    old_conversions = (conversions.c.conversion_time < moment) & conversions.c.status.in_(FINAL)
    old_runs = select(runs.c.id).where(runs.c.started_at < moment)
    old_rejects = rejected_rows.c.run_id.in_(old_runs)
    with db.tx() as conn:
        counts = (
            int(conn.scalar(select(func.count()).where(old_conversions)) or 0),
            int(conn.scalar(select(func.count()).where(old_rejects)) or 0),
        )
        if not dry_run:
            conn.execute(delete(conversions).where(old_conversions))
            conn.execute(delete(rejected_rows).where(old_rejects))
    return Pruned(cutoff, *counts, dry_run=dry_run)
