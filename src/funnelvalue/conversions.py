"""Leads -> offline conversions: stage matching, values, identifiers and every local check.

Everything here is column-wise pandas; per-row Python runs only over distinct values (stage
names, emails to hash) or over the rows already rejected (to join their reasons). Each check
adds a reason to the rows it fails, so a rejected row lists all its problems at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping as MappingT
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pycountry

from funnelvalue.amounts import ambiguity_hint, read_amounts
from funnelvalue.identifiers import normalise_email, normalise_phone, sha256_hex, valid_click_id
from funnelvalue.leads import LEAD_LEVEL, canonical_header
from funnelvalue.mapping import Expected, FromColumn, Mapping, stage_key
from funnelvalue.redact import scrub
from funnelvalue.vocabulary import (
    CONVERSION_COLUMNS,
    REJECT_COLUMNS,
    SKIPPED_REASONS,
    ClickIdKind,
    Reason,
    RowKind,
)

CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)
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


def order_ids(keys: pd.Series) -> pd.Series:
    """A short, stable hash of the key: unique per conversion, no PII, same on every replay."""
    digests = [
        hashlib.sha256(k.encode("utf-8")).hexdigest()[:24] for k in keys.to_numpy(dtype=object)
    ]
    return pd.Series(digests, index=keys.index, dtype="string")


def build(
    leads: pd.DataFrame,
    mapping: Mapping,
    now: pd.Timestamp,
    customer_id: str,
    *,
    identities: MappingT[str, str] | None = None,
    keep_funnel: bool = False,
) -> Built:
    """Map normalised leads (see ``leads.normalise``) to conversions and rejects.

    ``identities`` maps each conversion action label of the mapping to the action as the
    destination's Google counts it (default: the label, as the import file's Conversion
    Name). ``keep_funnel`` also returns every placed stage row, rejected or not.
    """
    rows_read = len(leads)
    latest = leads["stage_changed_at"].max() if rows_read else None
    if "source_row" not in leads.columns:
        leads = leads.assign(source_row=np.arange(1, rows_read + 1))
    stage_names = [s.name for s in mapping.stages]
    rejected: list[pd.DataFrame] = []

    # 1. Which funnel stage each row means; rows that cannot be placed are rejected here.
    codes, uniques = pd.factorize(leads["stage"])
    keys = [stage_key(str(u)) for u in uniques]
    position = np.array([mapping.stage_index.get(k, -1) for k in keys] + [-1])[codes]
    ignored = np.array([k in mapping.ignored for k in keys] + [False])[codes]
    stage_missing = leads["stage"].isna().to_numpy()
    unknown = (position < 0) & ~ignored & ~stage_missing
    early = leads["time_error"].copy()
    early_code = pd.Series(pd.NA, index=leads.index, dtype="string")
    early_code[early.notna()] = Reason.TIME_UNREADABLE
    early_code[early.str.startswith("stage_changed_at is empty").fillna(False)] = Reason.TIME_EMPTY
    # A stage name is shown (the user needs it to fix the mapping), scrubbed: a shifted row
    # can put an address in the stage column.
    shown_stage = leads.loc[unknown, "stage"].map(scrub, na_action="ignore").astype("string")
    early[unknown] = (
        "unknown CRM stage '"
        + shown_stage
        + "': add it to a stage's crm_values or to ignore in the mapping"
    )
    early_code[unknown] = Reason.UNKNOWN_STAGE
    early[stage_missing] = "stage is empty"
    early_code[stage_missing] = Reason.STAGE_EMPTY
    too_long = (leads["lead_id"].str.len() > MAX_LEAD_ID).fillna(False).to_numpy(dtype=bool)
    early[too_long] = f"lead_id is longer than {MAX_LEAD_ID} characters: not a CRM id"
    early_code[too_long] = Reason.LEAD_ID_TOO_LONG
    no_lead = leads["lead_id"].isna().to_numpy()
    early[no_lead] = "lead_id is empty"
    early_code[no_lead] = Reason.LEAD_ID_EMPTY
    if "row_error" in leads.columns:  # the source could not split the row into columns
        malformed = leads["row_error"].notna().to_numpy()
        early[malformed] = leads.loc[malformed, "row_error"]
        early_code[malformed] = Reason.ROW_MALFORMED
        ignored = ignored & ~malformed
    bad_early = (early.notna().to_numpy()) & ~ignored
    if bad_early.any():
        rejected.append(
            _rejects(
                leads[bad_early],
                early[bad_early],
                early_code[bad_early],
                np.full(bad_early.sum(), -1),
                stage_names,
            )
        )
    unknown_stages = shown_stage.value_counts().to_dict()
    kept = np.flatnonzero(~bad_early & ~ignored)

    # 2. One conversion per lead and stage: the first time it was reached (then file order).
    lead_codes = pd.factorize(leads["lead_id"])[0]
    times = leads["stage_changed_at"].to_numpy(dtype="datetime64[us]").view("int64")
    by_time = kept[np.lexsort((kept, times[kept]))]
    first = ~pd.Series(lead_codes[by_time] * len(stage_names) + position[by_time]).duplicated()
    chosen = by_time[first.to_numpy()]
    rows, positions = chosen, position[chosen]
    backfilled = np.zeros(len(rows), dtype=bool)
    if mapping.backfill_skipped_stages and len(stage_names) > 1:
        extra_rows, extra_positions = _backfill(lead_codes[rows], positions, rows, len(stage_names))
        rows = np.concatenate([rows, extra_rows])
        positions = np.concatenate([positions, extra_positions])
        backfilled = np.concatenate([backfilled, np.ones(len(extra_rows), dtype=bool)])
    order = np.lexsort((positions, lead_codes[rows], times[rows]))
    rows, positions, backfilled = rows[order], positions[order], backfilled[order]

    # 3. Take each row's columns once; lead-level facts (click id, email...) from any of the
    #    lead's rows when this one lacks them: stage histories often carry them on one row.
    frame = _materialise(leads, rows, lead_codes, kept)
    frame["crm_stage"] = leads["stage"].take(rows).to_numpy()
    frame["stage_position"] = positions
    frame["backfilled"] = backfilled
    merged = len(kept) - len(chosen)
    del leads  # the caller holds no other reference: free the input before validating

    # 4. Values, currency, identifiers, times.
    frame["stage"] = pd.Series(
        np.array(stage_names, dtype=object)[frame["stage_position"]],
        index=frame.index,
        dtype="string",
    )
    actions = np.array([s.conversion_action for s in mapping.stages], dtype=object)
    frame["conversion_action"] = pd.Series(
        actions[frame["stage_position"]], index=frame.index, dtype="string"
    )
    known = identities or {}
    identity = np.array([known.get(str(a), str(a)) for a in actions], dtype=object)
    frame["action_identity"] = pd.Series(
        identity[frame["stage_position"]], index=frame.index, dtype="string"
    )
    base, value_check = _values(frame, mapping)
    frame["value_factor"], notes = _multipliers(frame, mapping)
    frame["value"] = (base * frame["value_factor"]).round(2)
    frame["currency"], currency_check = _currency(frame, mapping)
    frame["consent"], consent_check = _consent(frame, mapping.consent_ad_user_data)
    identifier_check = _identifiers(frame, mapping)
    joined, reason_codes, kinds = _join_checks(
        [
            value_check,
            currency_check,
            identifier_check,
            _time_checks(frame, mapping, now),
            consent_check,
        ]
    )
    bad = joined.notna()
    frame["customer_id"] = customer_id
    if bad.any():
        refused = _rejects(
            frame[bad],
            joined[bad],
            reason_codes[bad],
            frame["stage_position"][bad].to_numpy(),
            stage_names,
            kinds[bad],
        )
        refused["key"] = idempotency_key(
            customer_id, frame.loc[bad, "action_identity"], frame.loc[bad, "lead_id"]
        ).to_numpy()
        rejected.append(refused)
    funnel = _funnel(frame, identifier_check[0]) if keep_funnel else None
    frame["conversion_time"] = frame["stage_changed_at"].dt.floor("s")
    kept_columns = [c for c in CONVERSION_COLUMNS if c != "key"]
    good = frame.loc[~bad, kept_columns] if bad.any() else frame[kept_columns]
    del frame  # only the columns a conversion needs live on
    good["key"] = idempotency_key(customer_id, good["action_identity"], good["lead_id"])
    rejects = pd.concat(rejected, ignore_index=True) if rejected else _empty_rejects()
    return Built(
        conversions=good[CONVERSION_COLUMNS].reset_index(drop=True),
        rejects=rejects.sort_values("source_row", kind="stable").reset_index(drop=True),
        rows_read=rows_read,
        ignored=int(ignored.sum()),
        merged_duplicates=merged,
        backfilled=int(backfilled.sum()),
        unknown_stages={str(k): int(v) for k, v in unknown_stages.items()},
        latest_change=None if latest is None or pd.isna(latest) else latest,
        notes=notes,
        funnel=funnel,
    )


Check = tuple[pd.Series, pd.Series]  # (reason text, reason code) per row, NA where fine


def _join_checks(checks: list[Check]) -> tuple[pd.Series, pd.Series, pd.Series]:
    """All of a row's problems in one text, column by column (no per-row Python); its code
    (the first invalid one, else the first) and its kind (invalid if any problem is)."""
    joined, first_code = checks[0]
    index = joined.index
    first_invalid = pd.Series(pd.NA, index=index, dtype="string")
    for reasons, codes in checks[1:]:
        joined = (joined + "; " + reasons).fillna(joined).fillna(reasons)
        first_code = first_code.fillna(codes)
    for _, codes in checks:
        first_invalid = first_invalid.fillna(codes.where(~codes.isin(SKIPPED_REASONS)))
    code = first_invalid.fillna(first_code)
    kind = pd.Series(RowKind.SKIPPED, index=index, dtype="string").mask(
        first_invalid.notna(), RowKind.INVALID
    )
    return joined, code, kind


def _backfill(
    leads: np.ndarray, positions: np.ndarray, rows: np.ndarray, n_stages: int
) -> tuple[np.ndarray, np.ndarray]:
    """The stages a lead skipped, as (donor row, position): timed at the next stage reached.

    A lead that jumps from 'lead' to 'won' did pass 'qualified' in reality; counting it keeps
    the middle of the funnel honest for bidding. The added row borrows the later row's facts.
    """
    if len(rows) == 0:
        return rows, positions
    compact, lead_index = np.unique(leads, return_inverse=True)
    donor = np.full((len(compact), n_stages), -1, dtype=np.int64)
    donor[lead_index, positions] = rows
    reached = donor >= 0
    for position in range(n_stages - 2, -1, -1):
        gap = donor[:, position] < 0
        donor[gap, position] = donor[gap, position + 1]
    lead_rows, missing = np.nonzero(~reached & (donor >= 0))
    return donor[lead_rows, missing], missing


def _materialise(
    leads: pd.DataFrame, rows: np.ndarray, lead_codes: np.ndarray, kept: np.ndarray
) -> pd.DataFrame:
    columns: dict[str, object] = {}
    repeated = bool(pd.Series(lead_codes[kept]).duplicated().any())
    for column in leads.columns:
        if column in ("stage", "time_error", "row_error"):
            continue
        source = rows
        if repeated and column in LEAD_LEVEL:
            source = _fill_from_lead(leads[column], rows, lead_codes, kept)
        columns[column] = (
            leads[column].take(source).to_numpy()
            if isinstance(leads[column].dtype, np.dtype)
            else leads[column].take(source).array
        )
    return pd.DataFrame(columns)


def _fill_from_lead(
    values: pd.Series, rows: np.ndarray, lead_codes: np.ndarray, kept: np.ndarray
) -> np.ndarray:
    """Row indices to read ``values`` from: the row itself, or the lead's first row with one."""
    present = kept[values.notna().to_numpy()[kept]]
    first_with_value = np.full(lead_codes.max() + 1, -1, dtype=np.int64)
    first_with_value[lead_codes[present[::-1]]] = present[::-1]
    fallback = first_with_value[lead_codes[rows]]
    use_fallback = values.isna().to_numpy()[rows] & (fallback >= 0)
    return np.where(use_fallback, fallback, rows)


def _values(frame: pd.DataFrame, mapping: Mapping) -> tuple[pd.Series, Check]:
    values = pd.Series(np.nan, index=frame.index, dtype="float64")
    reasons = pd.Series(pd.NA, index=frame.index, dtype="string")
    codes = pd.Series(pd.NA, index=frame.index, dtype="string")
    for position, stage in enumerate(mapping.stages):
        rows = frame["stage_position"] == position
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
        empty = raw.isna()
        if rule.default is not None:
            parsed[empty] = rule.default
        else:
            reasons[empty[empty].index] = (
                f"{column} is empty and stage '{stage.name}' has no default value"
            )
            codes[empty[empty].index] = Reason.VALUE_EMPTY
        too_large = problem.isna() & (parsed > mapping.max_value)
        problem[too_large] = Reason.VALUE_TOO_LARGE
        negative = problem.isna() & (parsed < 0)
        problem[negative] = Reason.VALUE_NEGATIVE
        for code, words in _value_problems(column, mapping).items():
            hit = problem == code
            reasons[hit[hit].index] = words
            codes[hit[hit].index] = code
        values[rows] = parsed.where(problem.isna())
    return values, (reasons, codes)


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


def _funnel(frame: pd.DataFrame, identifier_reasons: pd.Series) -> pd.DataFrame:
    created = frame["created_at"] if "created_at" in frame.columns else pd.NaT
    return pd.DataFrame(
        {
            "lead_id": frame["lead_id"],
            "stage_position": frame["stage_position"],
            "reached_at": frame["stage_changed_at"],
            "created_at": created,
            "value": frame["value"],
            "identified": identifier_reasons.isna(),
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


def _currency(frame: pd.DataFrame, mapping: Mapping) -> tuple[pd.Series, Check]:
    currency = frame["currency"].str.upper().fillna(mapping.currency)
    bad = ~currency.isin(CURRENCIES)
    reasons = pd.Series(pd.NA, index=frame.index, dtype="string")
    reasons[bad] = "currency is not an ISO 4217 code (e.g. EUR, USD)"
    codes = pd.Series(pd.NA, index=frame.index, dtype="string").mask(bad, Reason.CURRENCY_INVALID)
    return currency.astype("string"), (reasons, codes)


def _identifiers(frame: pd.DataFrame, mapping: Mapping) -> Check:
    """Pick one identifier per row: gclid, else gbraid or wbraid, else hashed email/phone."""
    gclid, gbraid, wbraid = frame["gclid"], frame["gbraid"], frame["wbraid"]
    has_g, has_gb, has_wb = gclid.notna(), gbraid.notna(), wbraid.notna()
    kind = pd.Series(pd.NA, index=frame.index, dtype="string")
    kind[has_wb] = ClickIdKind.WBRAID
    kind[has_gb] = ClickIdKind.GBRAID
    kind[has_g] = ClickIdKind.GCLID
    click_id = gclid.fillna(gbraid).fillna(wbraid).astype("string")
    reasons = pd.Series(pd.NA, index=frame.index, dtype="string")
    codes = pd.Series(pd.NA, index=frame.index, dtype="string")
    both_braids = ~has_g & has_gb & has_wb
    reasons[both_braids] = (
        "both gbraid and wbraid are set; Google accepts only one "
        "(keep the one from the landing page URL)"
    )
    codes[both_braids] = Reason.BOTH_BRAIDS
    malformed = kind.notna() & ~both_braids & ~valid_click_id(click_id)
    reasons[malformed] = (
        kind[malformed]
        + " is malformed ("
        + click_id[malformed].str.len().astype("string")
        + " characters; click ids are 16+ characters of A-Z a-z 0-9 _ -)"
    )
    codes[malformed] = Reason.CLICK_ID_MALFORMED

    # Emails and phones matter only where there is no click id: normalise just those rows.
    no_click = kind.isna()
    email = normalise_email(frame.loc[no_click, "email"])
    phone = normalise_phone(frame.loc[no_click, "phone"], mapping.phone_country_code)
    usable = email.notna() | phone.notna()
    user = pd.Series(False, index=frame.index)
    user[usable.index] = usable
    kind[user] = ClickIdKind.USER
    frame["click_id_kind"] = kind
    frame["click_id"] = click_id.where(~no_click)
    for column, values in (("hashed_email", email), ("hashed_phone", phone)):
        hashed = pd.Series(pd.NA, index=frame.index, dtype="string")
        hashed[values.index] = sha256_hex(values.where(usable))
        frame[column] = hashed
    nothing = no_click & ~user
    offered = frame["email"].notna() | frame["phone"].notna()
    reasons[nothing & offered] = (
        "no click id, and the email/phone given is not usable (email must look like "
        "name@example.com; phone needs +country code or phone_country_code in the mapping)"
    )
    codes[nothing & offered] = Reason.IDENTIFIER_UNUSABLE
    reasons[nothing & ~offered] = "no click id (gclid, gbraid, wbraid) and no email or phone"
    codes[nothing & ~offered] = Reason.NO_IDENTIFIER
    return reasons, codes


def _time_checks(frame: pd.DataFrame, mapping: Mapping, now: pd.Timestamp) -> Check:
    reasons = pd.Series(pd.NA, index=frame.index, dtype="string")
    codes = pd.Series(pd.NA, index=frame.index, dtype="string")
    time = frame["stage_changed_at"]
    created = frame["created_at"]
    future = time > now + timedelta(minutes=5)
    reasons[future] = "stage_changed_at is in the future (check the export's timezone)"
    codes[future] = Reason.TIME_IN_FUTURE
    before_created = created.notna() & (time < created)
    reasons[before_created] = (
        "stage was reached before the lead was created (created_at); usually a timezone mix-up"
    )
    codes[before_created] = Reason.BEFORE_CREATED
    oldest = created.where(created < time, time)  # the click is at or before the lead
    expired = oldest < now - timedelta(days=mapping.lookback_days)
    expired &= reasons.isna()
    reasons[expired] = (
        f"older than the {mapping.lookback_days}-day click lookback: Google would reject it "
        "as expired"
    )
    codes[expired] = Reason.EXPIRED
    return reasons, codes


def _consent(frame: pd.DataFrame, default: str | None) -> tuple[pd.Series, Check]:
    raw = frame["consent_ad_user_data"].str.upper()
    codes, uniques = pd.factorize(raw)  # map the few distinct values, not every row
    mapped = np.array([CONSENT.get(str(u)) for u in uniques] + [None], dtype=object)
    consent = pd.Series(mapped[codes], index=raw.index, dtype="string")
    reasons = pd.Series(pd.NA, index=frame.index, dtype="string")
    bad = raw.notna() & consent.isna()
    reasons[bad] = "consent_ad_user_data must be GRANTED or DENIED (or yes/no, true/false, 1/0)"
    flags = pd.Series(pd.NA, index=frame.index, dtype="string").mask(bad, Reason.CONSENT_INVALID)
    if default is not None:  # the mapping's answer for rows whose export says nothing
        consent = consent.mask(raw.isna(), default)
    return consent, (reasons, flags)


def _rejects(
    rows: pd.DataFrame,
    reasons: pd.Series,
    codes: pd.Series,
    positions: np.ndarray,
    stage_names: list[str],
    kinds: pd.Series | None = None,
) -> pd.DataFrame:
    names = np.array([*stage_names, None], dtype=object)
    crm_stage = rows["crm_stage"] if "crm_stage" in rows.columns else rows["stage"]
    if kinds is None:
        kinds = codes.map({r.value: r.kind.value for r in Reason}).astype("string")
    return pd.DataFrame(
        {
            "source_row": rows["source_row"].to_numpy(),
            "lead_id": _shown(rows["lead_id"]).to_numpy(),
            "crm_stage": _shown(crm_stage).to_numpy(),
            "stage": pd.array(
                names[np.where(positions >= 0, positions, len(stage_names))], dtype="string"
            ),
            "reason": reasons.astype("string").to_numpy(),
            "reason_code": codes.astype("string").to_numpy(),
            "kind": kinds.astype("string").to_numpy(),
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
