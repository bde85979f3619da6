"""What to bid on: funnel statistics, suggested stage values, and the rules of thumb as checks.

Computed from every stage row the CRM gives (rejected ones too: a lead without a click id still
tells how often a stage closes) plus what the ledger remembers of leads the source no longer
returns. Per stage: how many reached it in the window, how long after the lead (median, 90th
percentile), how often leads that reached it went on to the last stage, and from that its
expected value: P(last | stage) x the average value of the last stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from funnelvalue.mapping import Expected, FromColumn, Mapping

FULL_FUNNEL_MIN = 30  # bottom-stage conversions in 30 days below which tROAS starves
MAX_LAG_DAYS = 5.0  # a bottom stage slower than this teaches bidding too late
LEARNING_DAYS = 30  # new values need about this much data before switching to value bidding
FAR_OFF = 2.0  # configured vs suggested ratio worth a warning
LOW_MATCH = 0.5  # share of leads with a click id or email/phone
MIN_SAMPLE = 20  # leads that reached a stage before a rate is trusted
OVER_COUNT = 1.02  # credited per won deal above this many times the average deal: a warning
Z90 = 1.645


@dataclass
class StageStats:
    name: str
    reached: int  # leads of the window's cohort that got at least this far (never rises)
    conversions: int  # stage conversions reached in the window (the rules of thumb count these)
    median_lag_days: float | None
    p90_lag_days: float | None
    leads: int  # in the history used for the rate
    to_last: int
    rate: float | None  # P(last stage | reached this stage)
    rate_low: float | None
    rate_high: float | None
    configured: str
    configured_value: float | None
    suggested: float | None  # its full expected value: P(last | here) x the average deal
    suggested_incremental: float | None = None  # what it adds to the stage before (>= 0)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "close_rate": self.rate,
            "suggested_value": self.suggested,
            "suggested_incremental_value": self.suggested_incremental,
        }


@dataclass
class Advice:
    window_days: int
    history_days: int
    currency: str
    stages: list[StageStats]
    average_last_value: float | None
    leads: int
    match_rate: float | None
    # What Google credits when every stage counts in one goal (it adds the values up): per
    # lead that reached the last stage, and per lead; next to what they really brought.
    credited_per_won_deal: float | None = None
    credited_per_lead: float | None = None
    revenue_per_lead: float | None = None
    cohort_leads: int = 0  # leads first seen in the window, followed until now
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_days": self.window_days,
            "history_days": self.history_days,
            "currency": self.currency,
            "average_last_value": self.average_last_value,
            "average_deal_value": self.average_last_value,
            "credited_per_won_deal": self.credited_per_won_deal,
            "credited_per_lead": self.credited_per_lead,
            "revenue_per_lead": self.revenue_per_lead,
            "leads": self.leads,
            "cohort_leads": self.cohort_leads,
            "match_rate": self.match_rate,
            "stages": [s.as_dict() for s in self.stages],
            "warnings": self.warnings,
        }


def combine(funnel: pd.DataFrame, history: pd.DataFrame | None, mapping: Mapping) -> pd.DataFrame:
    """The source's stage rows plus the ledger's for (lead, stage) pairs the source lacks."""
    columns = ["lead_id", "stage_position", "reached_at", "created_at", "value", "identified"]
    rows = funnel[columns].copy()
    if history is not None and len(history):
        positions = {stage.name: i for i, stage in enumerate(mapping.stages)}
        old = history.assign(stage_position=history["stage"].map(positions))
        old = old[old["stage_position"].notna()].astype({"stage_position": "int64"})
        have = pd.MultiIndex.from_arrays([rows["lead_id"].astype(str), rows["stage_position"]])
        mine = pd.MultiIndex.from_arrays([old["lead_id"].astype(str), old["stage_position"]])
        old = old[~mine.isin(have)]
        extra = pd.DataFrame(
            {
                "lead_id": old["lead_id"].astype(str).to_numpy(),
                "stage_position": old["stage_position"].to_numpy(),
                "reached_at": pd.to_datetime(old["reached_at"], utc=True).to_numpy(),
                "created_at": pd.NaT,
                "value": old["value"].astype("float64").to_numpy(),
                "identified": True,
            }
        )
        rows = pd.concat([rows, extra], ignore_index=True) if len(extra) else rows
    rows["lead_id"] = rows["lead_id"].astype(str)
    rows["reached_at"] = pd.to_datetime(rows["reached_at"], utc=True)
    rows["created_at"] = pd.to_datetime(rows["created_at"], utc=True)
    # Lag counts from the lead's creation, else from the first stage it was seen at.
    first_seen = rows.groupby("lead_id")["reached_at"].transform("min")
    origin = rows["created_at"].where(rows["created_at"].notna(), first_seen)
    rows["lag_days"] = ((rows["reached_at"] - origin).dt.total_seconds() / 86400).clip(lower=0)
    return rows


def analyse(
    rows: pd.DataFrame,
    mapping: Mapping,
    now: pd.Timestamp,
    *,
    window_days: int = 30,
    history_days: int = 365,
    min_sample: int = MIN_SAMPLE,
    sent: pd.DataFrame | None = None,
) -> Advice:
    """Statistics and suggestions over ``rows`` (see ``combine``); ``sent`` (ledger rows with
    stage, value, sent_at) lets it tell whether the values changed recently."""
    last = len(mapping.stages) - 1
    window = rows[rows["reached_at"] >= now - pd.Timedelta(days=window_days)]
    history = rows[rows["reached_at"] >= now - pd.Timedelta(days=history_days)]
    finishers = set(rows.loc[rows["stage_position"] == last, "lead_id"])
    last_values = history.loc[history["stage_position"] == last, "value"].dropna()
    average = float(last_values.mean()) if len(last_values) else None
    deepest = _cohort_depth(rows, now - pd.Timedelta(days=window_days))
    stats = []
    for position, stage in enumerate(mapping.stages):
        reached = window[window["stage_position"] == position]
        cohort = history[history["stage_position"] == position]
        leads = int(cohort["lead_id"].nunique())
        to_last = int(cohort["lead_id"].drop_duplicates().isin(finishers).sum())
        rate, low, high = _rate(to_last, leads)
        suggested, note = _suggest(position == last, rate, leads, average, min_sample)
        configured, configured_value = _configured(stage.value)
        stats.append(
            StageStats(
                name=stage.name,
                reached=int((deepest >= position).sum()),
                conversions=len(reached),
                median_lag_days=_quantile(reached["lag_days"], 0.5),
                p90_lag_days=_quantile(reached["lag_days"], 0.9),
                leads=leads,
                to_last=to_last,
                rate=rate,
                rate_low=low,
                rate_high=high,
                configured=configured,
                configured_value=configured_value,
                suggested=suggested,
                note=note,
            )
        )
    _incremental(stats)
    by_lead = rows.groupby("lead_id")["identified"].any()
    credited = _credited(history, stats, mapping, average)
    advice = Advice(
        window_days=window_days,
        history_days=history_days,
        currency=mapping.currency,
        stages=stats,
        average_last_value=None if average is None else round(average, 2),
        leads=len(by_lead),
        match_rate=float(by_lead.mean()) if len(by_lead) else None,
        credited_per_won_deal=credited[0],
        credited_per_lead=credited[1],
        revenue_per_lead=credited[2],
        cohort_leads=len(deepest),
    )
    advice.warnings = _warnings(advice, mapping, now, sent)
    return advice


def _cohort_depth(rows: pd.DataFrame, start: pd.Timestamp) -> pd.Series:
    """The deepest stage each lead of the cohort reached: leads first seen (created, else
    their first stage) since ``start``, followed until now. "At least stage k" never rises
    down the funnel, unlike counts of events in a window."""
    origin = rows["created_at"].where(rows["created_at"].notna(), rows["reached_at"])
    first = origin.groupby(rows["lead_id"]).min()
    cohort = first.index[first >= start]
    mine = rows[rows["lead_id"].isin(cohort)]
    deepest: pd.Series = mine.groupby("lead_id")["stage_position"].max()
    return deepest


def _incremental(stats: list[StageStats]) -> None:
    """Each stage's increase in expected value over the stage before (floored at 0): sent
    for every stage in one goal, Google's sum for a lead is its expected value at the
    deepest stage it reached, and a won deal sums to the average deal."""
    before = 0.0
    for stage in stats:
        if stage.suggested is None:
            stage.suggested_incremental = None
            continue
        stage.suggested_incremental = round(max(0.0, stage.suggested - before), 2)
        before = max(before, stage.suggested)


def _credited(
    history: pd.DataFrame, stats: list[StageStats], mapping: Mapping, average: float | None
) -> tuple[float | None, float | None, float | None]:
    """(per won deal, per lead, revenue per lead) when Google adds every stage's value up:
    each lead is credited the configured value of every stage it reached (a deal amount for
    a from_column stage, the estimate for an expected one)."""
    if history.empty:
        return None, None, None
    last = len(mapping.stages) - 1
    per_stage: dict[int, float] = {}
    for position, (stage, stat) in enumerate(zip(mapping.stages, stats, strict=True)):
        if stat.configured_value is not None:  # a fixed value (_configured says which)
            per_stage[position] = stat.configured_value
        elif isinstance(stage.value, Expected):
            per_stage[position] = (
                stat.suggested if stat.suggested is not None else stage.value.default
            )
    reached = history.drop_duplicates(["lead_id", "stage_position"])
    fixed = reached["stage_position"].map(per_stage)
    own = reached["value"].astype("float64")
    if average is not None:
        own = own.fillna(average)
    value = fixed.where(fixed.notna(), own).fillna(0.0)
    # incremental: each stage sends its worth minus what was credited, so the sum is the
    # highest worth the lead reached; otherwise every stage's whole value is added
    grouped = value.groupby(reached["lead_id"])
    per_lead = grouped.max() if mapping.value_strategy == "incremental" else grouped.sum()
    won = reached.loc[reached["stage_position"] == last, "lead_id"]
    revenue = own[reached["stage_position"] == last].sum()
    leads = len(per_lead)
    per_won = round(float(per_lead[per_lead.index.isin(won)].mean()), 2) if len(won) else None
    return per_won, round(float(per_lead.mean()), 2), round(float(revenue) / leads, 2)


def expected_values(
    rows: pd.DataFrame, mapping: Mapping, now: pd.Timestamp
) -> dict[int, tuple[float, str]]:
    """For each stage valued ``expected``: (value, how it was arrived at), each over its own
    trailing window; the default while the window holds fewer than ``min_sample`` leads."""
    result: dict[int, tuple[float, str]] = {}
    for position, rule in mapping.expected_stages.items():
        advice = analyse(
            rows,
            mapping,
            now,
            window_days=rule.window_days,
            history_days=rule.window_days,
            min_sample=rule.min_sample,
        )
        stage = advice.stages[position]
        if stage.suggested is None:
            result[position] = (rule.default, f"default ({stage.note})")
        else:
            result[position] = (
                round(stage.suggested, 2),
                f"{stage.rate:.1%} of {stage.leads} leads reached the last stage x average "
                f"{advice.average_last_value:,.2f} over {rule.window_days} days",
            )
    return result


def _rate(hits: int, total: int) -> tuple[float | None, float | None, float | None]:
    """The share and its 90 % Wilson interval (honest for small samples and for 0 or 1)."""
    if total == 0:
        return None, None, None
    share = hits / total
    centre = (share + Z90**2 / (2 * total)) / (1 + Z90**2 / total)
    spread = (
        Z90
        * math.sqrt(share * (1 - share) / total + Z90**2 / (4 * total**2))
        / (1 + Z90**2 / total)
    )
    return share, max(0.0, centre - spread), min(1.0, centre + spread)


def _suggest(
    is_last: bool, rate: float | None, leads: int, average: float | None, min_sample: int
) -> tuple[float | None, str]:
    if average is None:
        return None, "no leads reached the last stage yet: nothing to base a value on"
    if is_last:
        return round(average, 2), "the average value of the last stage"
    if rate is None or leads < min_sample:
        return None, f"only {leads} leads reached it (fewer than {min_sample}): too few to suggest"
    return round(rate * average, 2), ""


def _configured(rule: float | FromColumn | Expected) -> tuple[str, float | None]:
    if isinstance(rule, FromColumn):
        return f"from column {rule.from_column}", None
    if isinstance(rule, Expected):
        return f"expected (default {rule.default:g})", None
    return f"{rule:g}", float(rule)


def _quantile(values: pd.Series, q: float) -> float | None:
    clean = values.dropna()
    return round(float(np.quantile(clean, q)), 1) if len(clean) else None


def _warnings(
    advice: Advice, mapping: Mapping, now: pd.Timestamp, sent: pd.DataFrame | None
) -> list[str]:
    stages = advice.stages
    last = stages[-1]
    if advice.leads == 0:
        return ["no leads in the data: nothing to analyse (check the source and the mapping)"]
    out: list[str] = []
    if advice.average_last_value is None:
        out.append(
            f"no lead has reached '{last.name}' yet: values cannot be suggested; keep the "
            "configured ones and bid on the earlier stages"
        )
    out.extend(_over_count(advice))
    if last.conversions < FULL_FUNNEL_MIN:
        out.append(
            f"only {last.conversions} '{last.name}' conversions in the last {advice.window_days} "
            f"days (fewer than ~{FULL_FUNNEL_MIN}): too few for value-based bidding on "
            f"'{last.name}' alone. Bid on full-funnel values: give the earlier stages their "
            "expected values so every lead teaches the bidding"
        )
    if last.median_lag_days is not None and last.median_lag_days > MAX_LAG_DAYS:
        fast = [
            s
            for s in stages[:-1]
            if s.median_lag_days is not None
            and s.median_lag_days <= MAX_LAG_DAYS
            and s.rate is not None
        ]
        best = max(fast, key=lambda s: s.rate or 0.0, default=None)
        advice_text = (
            f"make '{best.name}' (median {best.median_lag_days:g} days, {best.rate:.0%} reach "
            f"'{last.name}') the most valuable conversion and optimise for it"
            if best is not None
            else "no earlier stage is reached within 5 days either: consider tracking one"
        )
        out.append(
            f"'{last.name}' is reached a median {last.median_lag_days:g} days after the lead "
            f"(more than ~{MAX_LAG_DAYS:g}): bidding learns too late from it; {advice_text}"
        )
    for stage in stages:
        if stage.conversions == 0:
            out.append(
                f"no conversions for stage '{stage.name}' in the last {advice.window_days} "
                "days: check its crm_values match the CRM's stage names"
            )
        if stage.configured_value and stage.suggested:
            ratio = stage.configured_value / stage.suggested
            if ratio > FAR_OFF or ratio < 1 / FAR_OFF:
                off = f"{ratio:.1f}x higher" if ratio > 1 else f"{1 / ratio:.1f}x lower"
                out.append(
                    f"stage '{stage.name}' is configured at {stage.configured_value:,.2f}, "
                    f"{off} than its data suggest ({stage.suggested:,.2f} {advice.currency}): "
                    "`funnelvalue advise --write-mapping PATH` writes the suggested values"
                )
    if advice.match_rate is not None and advice.match_rate < LOW_MATCH:
        out.append(
            f"only {advice.match_rate:.0%} of leads carry a click id or email/phone: Google "
            "cannot credit the rest; capture the gclid on every form"
        )
    out.extend(_recent_value_changes(mapping, now, sent))
    return out


def _over_count(advice: Advice) -> list[str]:
    """Google adds up the values of every stage a lead reaches in one bidding goal: a
    mapping whose won deal is credited more than deals bring over-counts (tROAS overbids)."""
    credited, deal = advice.credited_per_won_deal, advice.average_last_value
    if credited is None or not deal or credited <= deal * OVER_COUNT:
        return []
    increments = ", ".join(
        f"{s.name} {s.suggested_incremental:,.2f}"
        for s in advice.stages
        if s.suggested_incremental is not None
    )
    return [
        f"when every stage counts in one bidding goal Google adds their values up: a won deal "
        f"is credited {credited:,.2f} {advice.currency}, {credited / deal:.2f}x the average "
        f"deal of {deal:,.2f}, so the mapping over-counts and value bidding overbids. Fix it "
        "one of two ways: send incremental values, each stage worth what it adds over the one "
        f"before ({increments or 'not enough data yet'}), or keep only one conversion action "
        "primary in the goal and make the others secondary (Google Ads: Goals -> Conversions "
        "-> the action -> 'Primary action')"
    ]


def _recent_value_changes(
    mapping: Mapping, now: pd.Timestamp, sent: pd.DataFrame | None
) -> list[str]:
    """New values (or values changed lately) need ~30 days of data before value bidding."""
    if sent is None or sent.empty or sent["sent_at"].isna().all():
        return []
    sent_at = pd.to_datetime(sent["sent_at"], utc=True)
    cutoff = now - pd.Timedelta(days=LEARNING_DAYS)
    first = sent_at.min()
    if first > cutoff:
        days = max(0, (now - first).days)
        return [
            f"funnelvalue first sent values {days} days ago: give Google ~{LEARNING_DAYS} days "
            "of data before switching campaigns to value-based bidding (tROAS)"
        ]
    out = []
    for stage in mapping.stages:
        if not isinstance(stage.value, float) or stage.multiply_by is not None:
            continue
        mine = sent[(sent["stage"] == stage.name) & sent_at.notna()]
        other = mine[(mine["value"] - stage.value).abs() > 0.005]
        if other.empty:
            continue
        last_old = pd.to_datetime(other["sent_at"], utc=True).max()
        if last_old > cutoff:
            out.append(
                f"stage '{stage.name}' was sent at {other['value'].iloc[-1]:g} until "
                f"{(now - last_old).days} days ago and is {stage.value:g} now: give the new "
                f"value ~{LEARNING_DAYS} days before judging or switching bidding on it"
            )
    return out


def write_mapping(source: Path, target: Path, advice: Advice) -> list[str]:
    """A copy of the mapping file with each fixed value replaced by its suggestion (names,
    actions and every other key kept). Returns what changed, in words."""
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    changes = []
    for raw, stage in zip(data["stages"], advice.stages, strict=True):
        if stage.configured_value is None or stage.suggested is None:
            continue
        new = _nice(stage.suggested)
        if abs(new - stage.configured_value) > 0.005:
            changes.append(f"{stage.name}: {stage.configured_value:g} -> {new:g}")
            raw["value"] = new
    header = (
        f"# Written by `funnelvalue advise --write-mapping` from {source} on "
        f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d}: fixed values replaced by what the last "
        f"{advice.history_days} days of data suggest.\n# Changed: "
        + ("; ".join(changes) or "nothing")
        + "\n"
    )
    target.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return changes


def _nice(value: float) -> float:
    """Suggestions are estimates: whole currency units above 10, cents below."""
    return float(round(value)) if value >= 10 else round(value, 2)
