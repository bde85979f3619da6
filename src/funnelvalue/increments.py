"""The ``incremental`` value strategy: each stage sends what it adds, so Google's sum is right.

When every stage is a conversion action in one bidding goal, Google credits a lead the sum of
the values of every stage it reached. With ``value_strategy: incremental`` the mapping's values
are read as what a lead *at* that stage is worth (a number, an expected value, or for the last
stage the deal amount), and each stage sends that worth minus what the lead was already
credited for its earlier stages, floored at 0. So a lead's credited total is its worth at the
deepest stage it reached, and a won deal sums to its amount, skipped stages or not.

What Google already has is the truth: an earlier stage sent before keeps the value it was sent
with (an estimate is not revised), and only the last stage is recomputed each run, so a real
change of the deal amount is restated and nothing else is. Vectorised across leads, one pass
per stage position (a funnel has a handful).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CENT = 0.005


@dataclass(frozen=True)
class Increments:
    values: pd.Series  # what each built conversion sends (aligned with the built frame)
    floored: int  # conversions whose worth was below what the lead was already credited


def incremental(
    built: pd.DataFrame,
    sent_value: pd.Series,
    elsewhere: pd.DataFrame,
    last_position: int,
) -> Increments:
    """``built``: conversions with lead_id, stage_position and ``value`` (the stage's worth).
    ``sent_value``: per built row, the value Google has for it (NaN if not sent yet).
    ``elsewhere``: lead_id, stage_position, value of conversions the ledger has as sent that
    this input does not carry (an export of current stages only): credited all the same."""
    values = built["value"].astype("float64").copy()
    frozen = sent_value.notna() & (built["stage_position"] != last_position)
    credited = pd.Series(0.0, index=pd.Index(built["lead_id"].unique(), name="lead_id"))
    floored = 0
    positions = sorted(set(built["stage_position"]) | set(elsewhere["stage_position"]))
    for position in positions:
        here = built["stage_position"] == position
        leads = built.loc[here, "lead_id"]
        before = credited.reindex(leads).fillna(0.0).to_numpy()
        worth = values[here].to_numpy()
        keep = frozen[here].to_numpy()
        fresh = np.round(np.maximum(0.0, worth - before), 2)
        floored += int((((worth - before) < -CENT) & ~keep).sum())
        chosen = np.where(keep, sent_value[here].to_numpy(), fresh)
        values[here] = chosen
        gained = pd.Series(chosen, index=leads.to_numpy()).groupby(level=0).sum()
        outside = elsewhere[elsewhere["stage_position"] == position]
        if len(outside):
            gained = gained.add(
                outside.groupby("lead_id")["value"].sum().astype("float64"), fill_value=0.0
            )
        credited = credited.add(gained, fill_value=0.0)
    return Increments(values, floored)
