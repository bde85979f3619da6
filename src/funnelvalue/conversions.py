"""Leads -> offline conversions: stage matching, values, identifiers and every local check.

Everything here is column-wise pandas; per-row Python runs only over distinct values (stage
names, emails to hash) or over the rows already rejected (to join their reasons). Each check
adds a reason to the rows it fails, so a rejected row lists all its problems at once.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingT
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pycountry

from funnelvalue.amounts import ambiguity_hint, read_amounts
from funnelvalue.frames import STR, TEXT, labels, missing_text
from funnelvalue.identifiers import (
    normalise_email,
    normalise_phone,
    sha256_codes,
    valid_click_id,
)
from funnelvalue.leads import LEAD_LEVEL, canonical_header
from funnelvalue.mapping import Expected, FromColumn, Mapping, stage_key
from funnelvalue.order_ids import order_ids_ahead
from funnelvalue.redact import scrub
from funnelvalue.vocabulary import (
    CONVERSION_COLUMNS,
    REJECT_COLUMNS,
    ClickIdKind,
    Reason,
    RowKind,
)

CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)
KIND_OF = {reason.value: reason.kind.value for reason in Reason}  # code -> invalid | skipped
CONSENT = {
    "GRANTED": "GRANTED",
    "DENIED": "DENIED",
    "UNSPECIFIED": "UNSPECIFIED",
    "YES": "GRANTED",
    "TRUE": "GRANTED",
    "1": "GRANTED",
    "Y": "GRANTED",
    "NO": "DENIED",
    "FALSE": "DENIED",
    "0": "DENIED",
    "N": "DENIED",
}

MAX_LEAD_ID = 1000  # characters; longer is not an id but a pasted cell


@dataclass
class Built:
    """The result of mapping one lead frame: what can be sent, what cannot and why."""

    conversions: pd.DataFrame
    rejects: pd.DataFrame
    rows_read: int
    ignored: int = 0
    merged_duplicates: int = 0
    backfilled: int = 0
    unknown_stages: dict[str, int] = field(default_factory=dict)
    latest_change: pd.Timestamp | None = None  # the newest stage change read: the watermark
    notes: list[str] = field(default_factory=list)  # worth saying, not worth rejecting for
    # Every placed stage row, valid or not (lead_id, stage_position, reached_at, created_at,
    # value, identified): what funnel statistics are computed from. Only when asked for.
    funnel: pd.DataFrame | None = None
    # The order id of each conversion (aligned with ``conversions``), when asked for: hashed
    # by a worker process while the checks ran (order_ids.order_ids_ahead).
    order_ids: pd.Series | None = None


def idempotency_key(customer_id: str, action_identity: pd.Series, lead_id: pd.Series) -> pd.Series:
    """``customer|action identity|lead_id``: what Google counts, one conversion per lead and
    action. Nothing a marketer renames is in it (stage names, an action written by name in
    one version of the mapping and by id in the next); joined in one Arrow pass."""
    arrow = pd.StringDtype("pyarrow")
    parts = [
        pc.cast(pa.array(column.astype(arrow)), pa.large_string())
        for column in (action_identity, lead_id)
    ]
    text = pa.large_string()
    joined = pc.binary_join_element_wise(pa.scalar(customer_id, text), *parts, pa.scalar("|", text))
    return pd.Series(pd.array(joined, dtype=arrow), index=lead_id.index)


def build(
    leads: pd.DataFrame,
    mapping: Mapping,
    now: pd.Timestamp,
    customer_id: str,
    *,
    identities: MappingT[str, str] | None = None,
    keep_funnel: bool = False,
    order_ids: bool = False,
) -> Built:
    """Map normalised leads (see ``leads.normalise``) to conversions and rejects.

    ``identities`` maps each conversion action label of the mapping to the action as the
    destination's Google counts it (default: the label, as the import file's Conversion
    Name). ``keep_funnel`` also returns every placed stage row, rejected or not;
    ``order_ids`` the conversions' order ids, computed on another core during the checks.
    """
    rows_read = len(leads)
    latest = leads["stage_changed_at"].max() if rows_read else None
    if "source_row" not in leads.columns:
        leads = leads.assign(source_row=np.arange(1, rows_read + 1))
    stage_names = [s.name for s in mapping.stages]
    rejected: list[pd.DataFrame] = []

    # 1. Which funnel stage each row means; rows that cannot be placed are rejected here.
    stage_codes, crm_stages = pd.factorize(leads["stage"])
    keys = [stage_key(str(u)) for u in crm_stages]
    position = np.array([mapping.stage_index.get(k, -1) for k in keys] + [-1])[stage_codes]
    ignored = np.array([k in mapping.ignored for k in keys] + [False])[stage_codes]
    stage_missing = leads["stage"].isna().to_numpy()
    unknown = (position < 0) & ~ignored & ~stage_missing
    early = Problems(rows_read)
    time_error = leads["time_error"]
    unreadable = time_error.notna().to_numpy()
    early.add(unreadable, time_error[unreadable], Reason.TIME_UNREADABLE)
    time_empty = time_error.str.startswith("stage_changed_at is empty").fillna(False)
    early.add(_mask(time_empty), None, Reason.TIME_EMPTY)
    # A stage name is shown (the user needs it to fix the mapping), scrubbed: a shifted row
    # can put an address in the stage column.
    shown_stage = leads.loc[unknown, "stage"].map(scrub, na_action="ignore").astype("string")
    early.add(
        unknown,
        "unknown CRM stage '"
        + shown_stage
        + "': add it to a stage's crm_values or to ignore in the mapping",
        Reason.UNKNOWN_STAGE,
    )
    early.add(stage_missing, "stage is empty", Reason.STAGE_EMPTY)
    too_long = _mask(leads["lead_id"].str.len() > MAX_LEAD_ID)
    early.add(
        too_long,
        f"lead_id is longer than {MAX_LEAD_ID} characters: not a CRM id",
        Reason.LEAD_ID_TOO_LONG,
    )
    early.add(leads["lead_id"].isna().to_numpy(), "lead_id is empty", Reason.LEAD_ID_EMPTY)
    if "row_error" in leads.columns:  # the source could not split the row into columns
        malformed = leads["row_error"].notna().to_numpy()
        early.add(malformed, leads.loc[malformed, "row_error"], Reason.ROW_MALFORMED)
        ignored = ignored & ~malformed
    bad_early = early.found & ~ignored
    if bad_early.any():
        rejected.append(
            _rejects(
                leads[bad_early],
                early.reasons(bad_early),
                early.codes(bad_early),
                np.full(bad_early.sum(), -1),
                stage_names,
            )
        )
    unknown_stages = shown_stage.value_counts().to_dict()
    kept = np.flatnonzero(~bad_early & ~ignored)

    # 2. One conversion per lead and stage: the first time it was reached (then file order).
    lead_codes = pd.factorize(leads["lead_id"])[0]
    times = leads["stage_changed_at"].to_numpy(dtype="datetime64[us]").view("int64")
    by_time = kept[np.argsort(times[kept], kind="stable")]  # kept ascends: file order on ties
    chosen = by_time[_first_of_each(lead_codes[by_time] * len(stage_names) + position[by_time])]
    rows, positions = chosen, position[chosen]
    backfilled = np.zeros(len(rows), dtype=bool)
    if mapping.backfill_skipped_stages and len(stage_names) > 1:
        extra_rows, extra_positions = _backfill(lead_codes[rows], positions, rows, len(stage_names))
        rows = np.concatenate([rows, extra_rows])
        positions = np.concatenate([positions, extra_positions])
        backfilled = np.concatenate([backfilled, np.ones(len(extra_rows), dtype=bool)])
    # Conversions ordered by time, then lead and stage. The chosen rows ascend in time, so
    # a time's rank among them is a running count (a backfilled row has its donor's time):
    # one sort of one int64 key, not a two-key lexsort (0.19 -> 0.05 s at 900k rows).
    chosen_times = times[chosen]
    rank = np.zeros(rows_read, dtype=np.int64)
    rank[chosen] = np.cumsum(np.concatenate([[0], chosen_times[1:] != chosen_times[:-1]]))
    lead_stage = lead_codes[rows] * len(stage_names) + positions
    span = int(lead_stage.max()) + 1 if len(rows) else 1
    order = np.argsort(rank[rows] * span + lead_stage, kind="stable")
    rows, positions, backfilled = rows[order], positions[order], backfilled[order]

    # 3. Take each row's columns once; lead-level facts (click id, email...) from any of the
    #    lead's rows when this one lacks them: stage histories often carry them on one row.
    frame = _materialise(leads, rows, lead_codes, kept)
    frame["crm_stage"] = labels(crm_stages.array, stage_codes[rows], STR)
    frame["stage_position"] = positions
    frame["backfilled"] = backfilled
    merged = len(kept) - len(chosen)
    del leads  # the caller holds no other reference: free the input before validating

    # 4. Values, currency, identifiers, times.
    actions = [s.conversion_action for s in mapping.stages]
    known = identities or {}
    frame["stage"] = labels(stage_names, positions)
    frame["conversion_action"] = labels(actions, positions)
    frame["action_identity"] = labels([known.get(a, a) for a in actions], positions)
    # The ids of every placed row, hashed on another core while the checks run (the good
    # rows' are taken after); the frame keeps no key column meanwhile (a preview's peak).
    hashing = (
        order_ids_ahead(idempotency_key(customer_id, frame["action_identity"], frame["lead_id"]))
        if order_ids
        else None
    )
    base, value_check = _values(frame, mapping)
    frame["value_factor"], notes = _multipliers(frame, mapping)
    frame["value"] = (base * frame["value_factor"]).round(2)
    frame["currency"], currency_check = _currency(frame, mapping)
    frame["consent"], consent_check = _consent(frame, mapping.consent_ad_user_data)
    identifier_check = _identifiers(frame, mapping)
    bad, joined, reason_codes, kinds = _join_checks(
        [
            value_check,
            currency_check,
            identifier_check,
            _time_checks(frame, mapping, now),
            consent_check,
        ]
    )
    frame["customer_id"] = customer_id
    if bad.any():
        refused = _rejects(
            frame[bad],
            joined,
            reason_codes,
            frame["stage_position"][bad].to_numpy(),
            stage_names,
            kinds,
        )
        refused["key"] = idempotency_key(
            customer_id, frame.loc[bad, "action_identity"], frame.loc[bad, "lead_id"]
        ).to_numpy()
        rejected.append(refused)
    funnel = _funnel(frame, ~identifier_check.found) if keep_funnel else None
    frame["conversion_time"] = frame["stage_changed_at"].dt.floor("s")
    # The good rows a column at a time, each taken out of the frame as it is copied: the
    # frame and its copy are never both whole (a preview's peak was that moment, +200 MB).
    keep, some_bad = ~bad, bool(bad.any())
    columns = {}
    for column in CONVERSION_COLUMNS:
        if column != "key":
            values = frame.pop(column).array
            columns[column] = values[keep] if some_bad else values
    del frame
    good = pd.DataFrame(columns, copy=False)  # each column is its own copy already
    good["key"] = idempotency_key(customer_id, good["action_identity"], good["lead_id"])
    ids = None
    if hashing is not None:
        every = hashing.result().array
        ids = pd.Series(every[keep] if some_bad else every, index=good.index)
    rejects = pd.concat(rejected, ignore_index=True) if rejected else _empty_rejects()
    return Built(
        conversions=good[CONVERSION_COLUMNS],
        rejects=rejects.sort_values("source_row", kind="stable").reset_index(drop=True),
        rows_read=rows_read,
        ignored=int(ignored.sum()),
        merged_duplicates=merged,
        backfilled=int(backfilled.sum()),
        unknown_stages={str(k): int(v) for k, v in unknown_stages.items()},
        latest_change=None if latest is None or pd.isna(latest) else latest,
        notes=notes,
        funnel=funnel,
        order_ids=ids,
    )


class Problems:
    """What one check found, row by row: a reason and its code, None where the row is fine.

    numpy object arrays filled by mask, later masks winning: setting a slice of an Arrow
    string column rewrites the whole column, a few hundred ms per check at a million rows.
    Made at the first problem found: most checks of most exports find none.
    """

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._reasons: np.ndarray | None = None
        self._codes: np.ndarray | None = None

    def add(self, where: np.ndarray, reason: str | pd.Series | None, code: str) -> None:
        """``reason`` for the rows ``where`` says (a bool mask or positions): one text, one
        per selected row, or None to keep the reason already there and change the code."""
        if not (where.any() if where.dtype == bool else len(where)):
            return  # nothing found: no arrays made
        if self._reasons is None or self._codes is None:
            self._reasons = np.full(self.rows, None, dtype=object)
            self._codes = np.full(self.rows, None, dtype=object)
        if reason is not None:
            self._reasons[where] = reason if isinstance(reason, str) else reason.to_numpy(object)
        self._codes[where] = str(code)

    @property
    def found(self) -> np.ndarray:
        if self._reasons is None:
            return np.zeros(self.rows, dtype=bool)
        return ~pd.isna(self._reasons)

    def reasons(self, rows: np.ndarray) -> np.ndarray:
        """The reasons of ``rows`` (positions or a mask), None where there is none."""
        return _at(self._reasons, rows)

    def codes(self, rows: np.ndarray) -> np.ndarray:
        return _at(self._codes, rows)


def _at(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    if values is None:
        count = int(rows.sum()) if rows.dtype == bool else len(rows)
        return np.full(count, None, dtype=object)
    selected: np.ndarray = values[rows]
    return selected


def _mask(condition: pd.Series) -> np.ndarray:
    """A condition as a numpy mask, missing (NA) as False."""
    return condition.to_numpy(dtype=bool, na_value=False)


def _join_checks(
    checks: list[Problems],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mask of the rows with a problem, then for those rows: all their reasons in one text,
    the code (the first invalid one, else the first) and the kind (invalid if any problem
    is)). Column-wise over the checks, only the rows with a problem."""
    bad = np.logical_or.reduce([check.found for check in checks])
    rows = np.flatnonzero(bad)
    reasons = [pa.array(check.reasons(rows), pa.string(), from_pandas=True) for check in checks]
    joined = pc.binary_join_element_wise(*reasons, "; ", null_handling="skip")
    first = np.full(len(rows), None, dtype=object)
    first_invalid = np.full(len(rows), None, dtype=object)
    for check in reversed(checks):  # the earliest check's code ends up on top
        codes = check.codes(rows)
        first = np.where(pd.notna(codes), codes, first)
        invalid = (pd.Series(codes).map(KIND_OF) == RowKind.INVALID.value).to_numpy()
        first_invalid = np.where(invalid, codes, first_invalid)
    any_invalid = pd.notna(first_invalid)
    code = np.where(any_invalid, first_invalid, first)
    kind = np.where(any_invalid, RowKind.INVALID.value, RowKind.SKIPPED.value).astype(object)
    return bad, joined.to_numpy(zero_copy_only=False), code, kind


def _backfill(
    leads: np.ndarray, positions: np.ndarray, rows: np.ndarray, n_stages: int
) -> tuple[np.ndarray, np.ndarray]:
    """The stages a lead skipped, as (donor row, position): timed at the next stage reached.

    A lead that jumps from 'lead' to 'won' did pass 'qualified' in reality; counting it keeps
    the middle of the funnel honest for bidding. The added row borrows the later row's facts.
    ``leads``: each row's lead as a code from pd.factorize (0, 1, ...): a row of the table per
    lead, without sorting them first.
    """
    if len(rows) == 0:
        return rows, positions
    donor = np.full((int(leads.max()) + 1, n_stages), -1, dtype=np.int64)
    donor[leads, positions] = rows
    reached = donor >= 0
    for position in range(n_stages - 2, -1, -1):
        gap = donor[:, position] < 0
        donor[gap, position] = donor[gap, position + 1]
    lead_rows, missing = np.nonzero(~reached & (donor >= 0))
    return donor[lead_rows, missing], missing


def _first_of_each(codes: np.ndarray) -> np.ndarray:
    """Whether each row holds the first occurrence of its (non-negative) code: the least
    position per code in a table of codes (0.04 -> 0.02 s at 900k rows, against hashing)."""
    where = np.arange(len(codes))
    if not len(codes):
        return where.astype(bool)
    least = _least_per_code(codes, where, int(codes.max()) + 1, none=len(codes))
    found: np.ndarray = least[codes] == where
    return found


def _least_per_code(codes: np.ndarray, positions: np.ndarray, size: int, none: int) -> np.ndarray:
    """The least of ``positions`` for each of ``size`` codes, ``none`` for a code without
    any: np.minimum.at, whose result does not depend on the order of repeated codes (a
    fancy-index assignment's does)."""
    least = np.full(size, none, dtype=np.int64)
    np.minimum.at(least, codes, positions)
    return least


def _materialise(
    leads: pd.DataFrame, rows: np.ndarray, lead_codes: np.ndarray, kept: np.ndarray
) -> pd.DataFrame:
    columns: dict[str, object] = {}
    kept_leads = lead_codes[kept]
    repeated = len(kept) > 0 and int(np.bincount(kept_leads).max()) > 1
    row_leads = lead_codes[rows]
    for column in leads.columns:
        if column in ("stage", "time_error", "row_error"):
            continue
        values = leads[column]
        if values.dtype == TEXT and not values.notna().any():  # a column the input lacks
            columns[column] = missing_text(pd.RangeIndex(len(rows))).array
            continue
        source = rows
        if repeated and column in LEAD_LEVEL:
            source = _fill_from_lead(values, rows, row_leads, kept, kept_leads)
        taken = values.take(source)
        columns[column] = taken.to_numpy() if isinstance(values.dtype, np.dtype) else taken.array
    return pd.DataFrame(columns, copy=False)  # each column taken already: no second copy


def _fill_from_lead(
    values: pd.Series,
    rows: np.ndarray,
    row_leads: np.ndarray,
    kept: np.ndarray,
    kept_leads: np.ndarray,
) -> np.ndarray:
    """Row indices to read ``values`` from: the row itself, or the lead's first kept row
    with one (``row_leads``, ``kept_leads``: the lead code of each of ``rows``, ``kept``)."""
    missing = values.isna().to_numpy()
    present = ~missing[kept]
    if not present.any():  # a column the export does not have: nothing to share
        return rows
    none = len(values)  # no row of the lead has one
    leads = int(kept_leads.max()) + 1
    first_with_value = _least_per_code(kept_leads[present], kept[present], leads, none)
    fallback = first_with_value[row_leads]
    return np.where(missing[rows] & (fallback < none), fallback, rows)


def _values(frame: pd.DataFrame, mapping: Mapping) -> tuple[pd.Series, Problems]:
    values = np.full(len(frame), np.nan)
    problems = Problems(len(frame))
    position_of = frame["stage_position"].to_numpy()
    for position, stage in enumerate(mapping.stages):
        rows = position_of == position
        if not rows.any():
            continue
        rule = stage.value
        if isinstance(rule, Expected):
            values[rows] = rule.default  # the pipeline puts the computed value in its place
            continue
        if not isinstance(rule, FromColumn):
            values[rows] = rule
            continue
        column = rule.from_column
        raw = (
            frame.loc[rows, column]
            if column in frame.columns
            else pd.Series(pd.NA, index=frame.index[rows], dtype="string")
        )
        parsed, problem = read_amounts(raw, mapping.amount_format)
        at = np.flatnonzero(rows)
        empty = raw.isna().to_numpy()
        if rule.default is not None:
            parsed[empty] = rule.default
        else:
            problems.add(
                at[empty],
                f"{column} is empty and stage '{stage.name}' has no default value",
                Reason.VALUE_EMPTY,
            )
        too_large = problem.isna() & (parsed > mapping.max_value)
        problem[too_large] = Reason.VALUE_TOO_LARGE
        negative = problem.isna() & (parsed < 0)
        problem[negative] = Reason.VALUE_NEGATIVE
        for code, words in _value_problems(column, mapping).items():
            problems.add(at[_mask(problem == code)], words, code)
        values[rows] = parsed.where(problem.isna()).to_numpy(dtype="float64")
    return pd.Series(values, index=frame.index), problems


def _value_problems(column: str, mapping: Mapping) -> dict[str, str]:
    """The words for each value problem: the column and the fix, never the cell (it may be
    anything a CRM user typed there)."""
    return {
        Reason.VALUE_NOT_A_NUMBER: f"{column} is not a number"
        + (f" in amount_format {mapping.amount_format!r}" if mapping.amount_format else ""),
        Reason.VALUE_AMBIGUOUS: f"{column}: {ambiguity_hint(None)}",
        Reason.VALUE_TOO_LARGE: f"{column} is above max_value {mapping.max_value:,.0f} (or "
        "infinite): a typo, or raise max_value in the mapping",
        Reason.VALUE_NEGATIVE: f"{column} is negative; values must be >= 0",
    }


def _funnel(frame: pd.DataFrame, identified: np.ndarray) -> pd.DataFrame:
    created = frame["created_at"] if "created_at" in frame.columns else pd.NaT
    return pd.DataFrame(
        {
            "lead_id": frame["lead_id"],
            "stage_position": frame["stage_position"],
            "reached_at": frame["stage_changed_at"],
            "created_at": created,
            "value": frame["value"],
            "identified": identified,
        }
    ).reset_index(drop=True)


def _multipliers(frame: pd.DataFrame, mapping: Mapping) -> tuple[pd.Series, list[str]]:
    """Each row's multiply_by factor (1 for stages without one), and a note per stage whose
    rows had values the rule does not list (they get its default)."""
    factors = pd.Series(1.0, index=frame.index)
    notes: list[str] = []
    for position, stage in enumerate(mapping.stages):
        rule = stage.multiply_by
        rows = frame["stage_position"] == position
        if rule is None or not rows.any():
            continue
        column = canonical_header(rule.column)
        raw = (
            frame.loc[rows, column]
            if column in frame.columns
            else pd.Series(pd.NA, index=frame.index[rows])
        )
        keys = raw.astype("string").str.split().str.join(" ").str.casefold()
        mapped = keys.map(rule.values).astype("float64")
        unknown = mapped.isna()
        if unknown.any():
            seen = raw[unknown].astype("string").fillna("(empty)").value_counts().head(5)
            listed = ", ".join(f"'{k}' ({v})" for k, v in seen.items())
            notes.append(
                f"stage '{stage.name}': {int(unknown.sum())} rows have a {rule.column} not in "
                f"multiply_by ({listed}); they use x{rule.default:g}"
            )
        factors[rows] = mapped.fillna(rule.default)
    return factors, notes


def _currency(frame: pd.DataFrame, mapping: Mapping) -> tuple[pd.Series, Problems]:
    currency = frame["currency"].str.upper().fillna(mapping.currency)
    problems = Problems(len(frame))
    problems.add(
        ~_mask(currency.isin(CURRENCIES)),
        "currency is not an ISO 4217 code (e.g. EUR, USD)",
        Reason.CURRENCY_INVALID,
    )
    return currency.astype("string"), problems


def _identifiers(frame: pd.DataFrame, mapping: Mapping) -> Problems:
    """Pick one identifier per row: gclid, else gbraid or wbraid, else hashed email/phone."""
    gclid, gbraid, wbraid = frame["gclid"], frame["gbraid"], frame["wbraid"]
    has_g, has_gb, has_wb = (c.notna().to_numpy() for c in (gclid, gbraid, wbraid))
    kinds = list(ClickIdKind)
    kind = np.full(len(frame), -1, dtype=np.int64)  # a code into kinds
    kind[has_wb] = kinds.index(ClickIdKind.WBRAID)
    kind[has_gb] = kinds.index(ClickIdKind.GBRAID)
    kind[has_g] = kinds.index(ClickIdKind.GCLID)
    click_id = gclid.astype("string")
    for braid, has in ((gbraid, has_gb), (wbraid, has_wb)):
        if has.any():  # most exports have gclids only: no fill over a column of nothing
            click_id = click_id.fillna(braid)
    problems = Problems(len(frame))
    both_braids = ~has_g & has_gb & has_wb
    problems.add(
        both_braids,
        "both gbraid and wbraid are set; Google accepts only one "
        "(keep the one from the landing page URL)",
        Reason.BOTH_BRAIDS,
    )
    no_click = ~(has_g | has_gb | has_wb)
    malformed = ~no_click & ~both_braids & ~valid_click_id(click_id).to_numpy()
    problems.add(
        malformed,
        pd.Series(labels(kinds, kind[malformed]))
        + " is malformed ("
        + click_id[malformed].str.len().astype("string").to_numpy()
        + " characters; click ids are 16+ characters of A-Z a-z 0-9 _ -)",
        Reason.CLICK_ID_MALFORMED,
    )

    # Emails and phones matter only where there is no click id: normalise just those rows.
    email = normalise_email(frame.loc[no_click, "email"])
    phone = normalise_phone(frame.loc[no_click, "phone"], mapping.phone_country_code)
    usable = (email.notna() | phone.notna()).to_numpy()
    user = np.flatnonzero(no_click)[usable]
    kind[user] = kinds.index(ClickIdKind.USER)
    frame["click_id_kind"] = labels(kinds, kind)
    frame["click_id"] = click_id  # missing exactly where no_click is
    for column, values in (("hashed_email", email), ("hashed_phone", phone)):
        codes, digests = sha256_codes(values.where(usable))
        placed = np.full(len(frame), -1, dtype=np.int64)
        placed[no_click] = codes
        frame[column] = labels(digests, placed)
    nothing = no_click.copy()
    nothing[user] = False
    offered = (frame["email"].notna() | frame["phone"].notna()).to_numpy()
    problems.add(
        nothing & offered,
        "no click id, and the email/phone given is not usable (email must look like "
        "name@example.com; phone needs +country code or phone_country_code in the mapping)",
        Reason.IDENTIFIER_UNUSABLE,
    )
    problems.add(
        nothing & ~offered,
        "no click id (gclid, gbraid, wbraid) and no email or phone",
        Reason.NO_IDENTIFIER,
    )
    return problems


def _time_checks(frame: pd.DataFrame, mapping: Mapping, now: pd.Timestamp) -> Problems:
    problems = Problems(len(frame))
    time = frame["stage_changed_at"]
    created = frame["created_at"]
    problems.add(
        _mask(time > now + timedelta(minutes=5)),
        "stage_changed_at is in the future (check the export's timezone)",
        Reason.TIME_IN_FUTURE,
    )
    problems.add(
        _mask(created.notna() & (time < created)),
        "stage was reached before the lead was created (created_at); usually a timezone mix-up",
        Reason.BEFORE_CREATED,
    )
    oldest = created.where(created < time, time)  # the click is at or before the lead
    expired = _mask(oldest < now - timedelta(days=mapping.lookback_days))
    problems.add(
        expired & ~problems.found,
        f"older than the {mapping.lookback_days}-day click lookback: Google would reject it "
        "as expired",
        Reason.EXPIRED,
    )
    return problems


def _consent(frame: pd.DataFrame, default: str | None) -> tuple[pd.Series, Problems]:
    raw = frame["consent_ad_user_data"].str.upper()
    codes, uniques = pd.factorize(raw)  # map the few distinct values, not every row
    consent = pd.Series(labels([CONSENT.get(str(u)) for u in uniques], codes), index=raw.index)
    problems = Problems(len(frame))
    problems.add(
        _mask(raw.notna() & consent.isna()),
        "consent_ad_user_data must be GRANTED or DENIED (or yes/no, true/false, 1/0)",
        Reason.CONSENT_INVALID,
    )
    if default is not None:  # the mapping's answer for rows whose export says nothing
        consent = consent.mask(raw.isna(), default)
    return consent, problems


def _rejects(
    rows: pd.DataFrame,
    reasons: np.ndarray,
    codes: np.ndarray,
    positions: np.ndarray,
    stage_names: list[str],
    kinds: np.ndarray | None = None,
) -> pd.DataFrame:
    crm_stage = rows["crm_stage"] if "crm_stage" in rows.columns else rows["stage"]
    if kinds is None:
        kinds = np.array([KIND_OF.get(code) for code in codes], dtype=object)
    return pd.DataFrame(
        {
            "source_row": rows["source_row"].to_numpy(),
            "lead_id": _shown(rows["lead_id"]).to_numpy(),
            "crm_stage": _shown(crm_stage).to_numpy(),
            "stage": labels(stage_names, positions),
            "reason": np.asarray(reasons, dtype=object),
            "reason_code": np.asarray(codes, dtype=object),
            "kind": np.asarray(kinds, dtype=object),
            "key": pd.array([pd.NA] * len(rows), dtype="string"),
        }
    )


def _shown(cells: pd.Series) -> pd.Series:
    """Cells a person sees next to a rejection (lead id, CRM stage), scrubbed of anything
    that looks like an address or a phone: a shifted row puts them in any column."""
    codes, uniques = pd.factorize(cells.astype("string"))  # a CRM stage repeats: scrub once
    cleaned = np.array([scrub(str(u)) for u in uniques] + [None], dtype=object)
    return pd.Series(cleaned[codes], index=cells.index, dtype="string")


def _empty_rejects() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="string") for c in [*REJECT_COLUMNS, "key"]})
