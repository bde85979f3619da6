"""The stage-to-value mapping file: what marketers edit, so mistakes get named precisely.

``load_mapping`` validates the whole file and reports every problem at once, each with its line,
the stage it belongs to and how to fix it; a file with any problem never reaches an upload.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pycountry
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from funnelvalue.amounts import AMOUNT_FORMATS, MAX_VALUE, is_ambiguous, read_amount
from funnelvalue.errors import ConfigError
from funnelvalue.leads import CANONICAL, canonical_header
from funnelvalue.yamlfile import YamlDocument, load_yaml

_CUSTOMER_ID = re.compile(r"^\d{3}-?\d{3}-?\d{4}$")


def stage_key(crm_value: str) -> str:
    """How CRM stage names are compared: trimmed and case-insensitive."""
    return " ".join(crm_value.split()).casefold()


def check_currency(code: str) -> str:
    """ISO 4217 code, upper-cased; raises ValueError with a hint otherwise."""
    upper = code.strip().upper()
    if pycountry.currencies.get(alpha_3=upper) is None:
        raise ValueError(f"'{code}' is not an ISO 4217 currency code (e.g. EUR, USD, GBP)")
    return upper


class FromColumn(BaseModel):
    """A value read per row from an export column, e.g. the deal amount for 'won'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_column: str = Field(min_length=1)
    default: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class Expected(BaseModel):
    """The stage's expected value, recomputed every run: P(last stage | this stage) x the
    average value of the last stage, over a trailing window; ``default`` until the window
    holds ``min_sample`` leads that reached the stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: float = Field(ge=0, allow_inf_nan=False)
    window_days: int = Field(default=90, ge=7, le=730)
    min_sample: int = Field(default=20, ge=1)


class MultiplyBy(BaseModel):
    """Scale the stage's value by a lead column (a score band, a segment): lead scoring from
    the CRM reaches bidding. Values are matched ignoring case; others get ``default``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    values: dict[str, float] = Field(min_length=1)
    default: float = Field(default=1.0, ge=0, allow_inf_nan=False)

    @field_validator("values")
    @classmethod
    def _non_negative(cls, raw: dict[str, float]) -> dict[str, float]:
        negative = [k for k, v in raw.items() if not (math.isfinite(v) and v >= 0)]
        if negative:
            raise ValueError(f"multipliers must be finite and >= 0 ({', '.join(negative)} are not)")
        return {stage_key(str(k)): float(v) for k, v in raw.items()}


class Stage(BaseModel):
    """One funnel stage: which CRM values mean it, which conversion action and value it sends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1, description="your name for the stage", examples=["lead", "qualified", "won"]
    )
    crm_values: list[str] = Field(
        min_length=1,
        description="the CRM's stage names that mean this stage (ignoring case and spaces)",
        examples=[["New", "Open"], ["Closed Won"]],
    )
    conversion_action: str = Field(
        min_length=1,
        description="the Google Ads conversion action: its name, numeric id or resource name",
        examples=["CRM lead", "123456789"],
    )
    value: float | FromColumn | Expected = Field(
        description="what the conversion is worth: a number, {from_column: amount, default: "
        "1000}, or {expected: {default: 150}} (estimated from the funnel)",
        examples=[150, {"from_column": "amount", "default": 1000}, {"expected": {"default": 150}}],
    )
    multiply_by: MultiplyBy | None = Field(
        default=None, description="scale the value by a column's value (e.g. product line)"
    )

    @field_validator("crm_values", mode="before")
    @classmethod
    def _one_value_is_a_list(cls, raw: Any) -> Any:
        return [raw] if isinstance(raw, str) else raw

    @field_validator("value", mode="before")
    @classmethod
    def _fixed_or_from_column(cls, raw: Any, info: ValidationInfo) -> float | FromColumn | Expected:
        if isinstance(raw, bool) or raw is None:
            raise ValueError(_VALUE_HINT)
        if isinstance(raw, int | float):
            if not math.isfinite(raw):
                raise ValueError(f"value {raw} is not a number a conversion can carry")
            if raw < 0:
                raise ValueError(f"value {raw} is negative; conversion values must be >= 0")
            return float(raw)
        if isinstance(raw, str):
            amount_format = (info.context or {}).get("amount_format")
            return cls._fixed_or_from_column(read_amount(raw, amount_format), info)
        if isinstance(raw, dict) and "expected" in raw:
            if set(raw) != {"expected"} or not isinstance(raw["expected"], dict):
                raise ValueError("write an expected value as {expected: {default: 150}}")
            return Expected.model_validate(raw["expected"])
        if isinstance(raw, dict):
            return FromColumn.model_validate(raw)
        raise ValueError(_VALUE_HINT)


_VALUE_HINT = (
    "value must be a number (e.g. 150), {from_column: amount, default: 1000} or "
    "{expected: {default: 150}}"
)


class Mapping(BaseModel):
    """The whole mapping file. Stages are ordered: top of the funnel first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str | None = Field(
        default=None,
        description="the Google Ads account, 10 digits (dashes optional)",
        examples=["123-456-7890"],
    )
    currency: str = Field(
        description="ISO 4217 code of the values; a currency column overrides it per row",
        examples=["EUR", "USD"],
    )
    timezone: str = Field(
        default="UTC",
        description="IANA time zone of CRM times written without an offset",
        examples=["Europe/Berlin", "America/New_York"],
    )
    stages: list[Stage] = Field(min_length=1, description="the funnel, top stage first")
    ignore: list[str] = Field(
        default_factory=list,
        description="CRM stage names that are not conversions (e.g. lost): not reported",
        examples=[["Closed Lost"]],
    )
    value_strategy: Literal["as_configured", "incremental"] = Field(
        default="as_configured",
        description="incremental: each stage sends its worth minus what the lead was already "
        "credited, so that the stages of one bidding goal add up to the deal "
        "(as_configured: each stage sends its value as it is)",
    )
    backfill_skipped_stages: bool = Field(
        default=False,
        description="a lead that jumps to a later stage also gets the stages it skipped",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="the export's column names -> funnelvalue's (lead_id, stage, ...)",
        examples=[{"Deal ID": "lead_id", "Deal Stage": "stage"}],
    )
    timestamp_format: str | None = Field(
        default=None,
        description="strftime format of the export's times when they are ambiguous",
        examples=["%d/%m/%Y %H:%M"],
    )
    # How the export writes money when it could be read two ways (1.500): e.g. "1.234,56".
    amount_format: str | None = Field(
        default=None,
        description="how the export writes money when it could be read two ways (1.500)",
        examples=list(AMOUNT_FORMATS)[:2],
    )
    max_value: float = Field(
        default=MAX_VALUE,
        gt=0,
        allow_inf_nan=False,
        description="a value above this is invalid (a typo, or cents read as units)",
    )
    lookback_days: int = Field(
        default=90,
        ge=1,
        le=90,
        description="your conversion actions' click-through window: older rows are skipped",
    )
    phone_country_code: str | None = Field(
        default=None,
        description="country calling code for phone numbers written without one",
        examples=["49", "+1"],
    )
    consent_ad_user_data: Literal["GRANTED", "DENIED"] | None = Field(
        default=None, description="ad_user_data consent for rows whose export has none"
    )

    @field_validator("customer_id", mode="before")
    @classmethod
    def _customer_id(cls, raw: Any) -> Any:
        if raw is None:
            return None
        text = str(raw).strip()
        if not _CUSTOMER_ID.match(text):
            raise ValueError(
                f"'{raw}' is not a Google Ads customer id (10 digits, e.g. 123-456-7890)"
            )
        return text.replace("-", "")

    @field_validator("amount_format")
    @classmethod
    def _amount_format(cls, raw: str | None) -> str | None:
        if raw is not None and raw not in AMOUNT_FORMATS:
            listed = ", ".join(f'"{f}"' for f in AMOUNT_FORMATS)
            raise ValueError(f"'{raw}' is not an amount format; write one of {listed}")
        return raw

    @field_validator("currency")
    @classmethod
    def _currency(cls, raw: str) -> str:
        return check_currency(raw)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, raw: str) -> str:
        try:
            ZoneInfo(raw)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"'{raw}' is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)"
            ) from None
        return raw

    @field_validator("phone_country_code", mode="before")
    @classmethod
    def _phone_country_code(cls, raw: Any) -> Any:
        if raw is None:
            return None
        text = str(raw).strip().lstrip("+")
        if not text.isdigit() or not 1 <= len(text) <= 3:
            raise ValueError(f"'{raw}' is not a country calling code (e.g. 49 or +1)")
        return text

    @model_validator(mode="after")
    def _values_within_max(self) -> Mapping:
        too_large = [
            f"stage '{s.name}' value {s.value:,.2f}"
            for s in self.stages
            if isinstance(s.value, float) and s.value > self.max_value
        ]
        if too_large:
            raise ValueError(
                f"{'; '.join(too_large)} is above max_value {self.max_value:,.0f}: a typo, or "
                "raise max_value"
            )
        return self

    @cached_property
    def stage_index(self) -> dict[str, int]:
        """Normalised CRM value -> position of its stage in the funnel."""
        return {
            stage_key(value): position
            for position, stage in enumerate(self.stages)
            for value in stage.crm_values
        }

    @cached_property
    def ignored(self) -> frozenset[str]:
        return frozenset(stage_key(v) for v in self.ignore)

    @property
    def value_columns(self) -> set[str]:
        """Lead columns the values are read from (from_column, multiply_by): sources fetch them."""
        columns = {s.value.from_column for s in self.stages if isinstance(s.value, FromColumn)}
        return columns | {s.multiply_by.column for s in self.stages if s.multiply_by}

    @property
    def expected_stages(self) -> dict[int, Expected]:
        return {i: s.value for i, s in enumerate(self.stages) if isinstance(s.value, Expected)}


def load_mapping(path: Path) -> Mapping:
    """Load and validate the mapping file; every problem is reported at once, with its line."""
    document = load_yaml(path, "mapping file")
    if not isinstance(document.data, dict):
        raise ConfigError(
            f"{path}: the mapping file must be a set of keys (currency:, stages:, ...); "
            "run `funnelvalue mapping init` for a commented starter file"
        )
    problems: list[str] = []
    mapping: Mapping | None = None
    amount_format = document.data.get("amount_format")
    context = {"amount_format": amount_format if amount_format in AMOUNT_FORMATS else None}
    try:
        mapping = Mapping.model_validate(document.data, context=context)
    except ValidationError as exc:
        problems.extend(_describe_error(document, err) for err in exc.errors())
    problems.extend(_consistency_problems(document))
    if problems:
        problems.sort(key=lambda p: int(m.group(1)) if (m := re.match(r"line (\d+)", p)) else 0)
        noun = "problem" if len(problems) == 1 else "problems"
        raise ConfigError(
            f"{path} has {len(problems)} {noun} (nothing is sent until they are fixed)", problems
        )
    assert mapping is not None
    return mapping


def _where(document: YamlDocument, loc: Sequence[str | int]) -> str:
    line = document.line_of(loc)
    parts: list[str] = []
    stages = document.data.get("stages") if isinstance(document.data, dict) else None
    for i, part in enumerate(loc):
        if tuple(loc[:1]) == ("stages",) and i == 1 and isinstance(part, int):
            name = None
            if isinstance(stages, list) and part < len(stages) and isinstance(stages[part], dict):
                name = stages[part].get("name")
            parts.append(f"stage '{name}'" if name else f"stage #{part + 1}")
        elif i == 0 and part == "stages" and len(loc) > 1:
            continue
        else:
            parts.append(str(part))
    place = " → ".join(parts) or "file"
    return f"line {line}, {place}" if line else place


def _describe_error(document: YamlDocument, err: Any) -> str:
    skip = ("float", "FromColumn", "Expected", "MultiplyBy", "function-before[...]")
    loc = [p for p in err["loc"] if p not in skip]
    kind = err["type"]
    where = _where(document, loc)
    if kind == "missing":
        return f"{where}: missing — add `{loc[-1]}: ...`{_MISSING_HINTS.get(str(loc[-1]), '')}"
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc)
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" (allowed: {', '.join(allowed)})"
        return f"{where}: unknown key '{key}'{hint}"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


_MISSING_HINTS = {
    "currency": " (ISO 4217, e.g. EUR)",
    "stages": " (a list of funnel stages, top first)",
    "conversion_action": " (the Google Ads conversion action's name or id)",
    "crm_values": ' (the CRM stage names that mean this stage, e.g. ["Closed Won"])',
    "value": " (a number, or {from_column: amount, default: 1000})",
    "name": " (a short name for the stage, e.g. qualified)",
}


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    if len(loc) >= 3 and loc[0] == "stages" and loc[2] == "multiply_by":
        return list(MultiplyBy.model_fields)
    if len(loc) >= 3 and loc[0] == "stages" and loc[2] == "value":
        return [*FromColumn.model_fields, "expected"]
    if len(loc) >= 2 and loc[0] == "stages":
        return list(Stage.model_fields)
    return list(Mapping.model_fields)


def _consistency_problems(document: YamlDocument) -> list[str]:
    """Checks across stages that field validation cannot see, on the raw data."""
    data = document.data
    problems: list[str] = []
    stages = data.get("stages") if isinstance(data.get("stages"), list) else []
    names = Counter(
        s.get("name") for s in stages if isinstance(s, dict) and isinstance(s.get("name"), str)
    )
    owner: dict[str, int] = {}
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            problems.append(
                f"{_where(document, ['stages', i])}: each stage must be a set of keys "
                "(name:, crm_values:, conversion_action:, value:)"
            )
            continue
        if names.get(stage.get("name"), 0) > 1:
            problems.append(
                f"{_where(document, ['stages', i, 'name'])}: stage name "
                f"'{stage['name']}' is used twice; stage names must be unique"
            )
        values = stage.get("crm_values")
        for value in [values] if isinstance(values, str) else values or []:
            key = stage_key(str(value))
            if key in owner and owner[key] != i:
                other = stages[owner[key]].get("name", f"#{owner[key] + 1}")
                problems.append(
                    f"{_where(document, ['stages', i, 'crm_values'])}: CRM value "
                    f"'{value}' is already mapped to stage '{other}'; a CRM value "
                    "can mean only one stage"
                )
            owner.setdefault(key, i)
    problems.extend(_ambiguous_numbers(document, stages))
    last = stages[-1] if stages and isinstance(stages[-1], dict) else None
    if last is not None and isinstance(last.get("value"), dict) and "expected" in last["value"]:
        problems.append(
            f"{_where(document, ['stages', len(stages) - 1, 'value'])}: the last stage's values "
            "are what expected values are computed from: give it a number or "
            "{from_column: amount, default: ...}"
        )
    ignore = data.get("ignore")
    for value in ignore if isinstance(ignore, list) else []:
        if stage_key(str(value)) in owner:
            stage = stages[owner[stage_key(str(value))]].get("name")
            problems.append(
                f"{_where(document, ['ignore'])}: '{value}' is both ignored and "
                f"mapped to stage '{stage}'; remove it from one of them"
            )
    columns = data.get("columns")
    value_columns = {
        canonical_header(str(s["value"]["from_column"]))
        for s in stages
        if isinstance(s, dict)
        and isinstance(s.get("value"), dict)
        and s["value"].get("from_column")
    } | {
        canonical_header(str(s["multiply_by"]["column"]))
        for s in stages
        if isinstance(s, dict)
        and isinstance(s.get("multiply_by"), dict)
        and s["multiply_by"].get("column")
    }
    for source, target in columns.items() if isinstance(columns, dict) else []:
        if str(target) not in CANONICAL and canonical_header(str(target)) not in value_columns:
            close = difflib.get_close_matches(str(target), CANONICAL, n=1)
            hint = (
                f" — did you mean '{close[0]}'?" if close else f" (one of: {', '.join(CANONICAL)})"
            )
            problems.append(
                f"{_where(document, ['columns', source])}: '{source}' is renamed to "
                f"'{target}', which is not a lead column{hint}"
            )
    return problems


def _ambiguous_numbers(document: YamlDocument, stages: list[Any]) -> list[str]:
    """`value: 1.500` is one and a half to YAML; a marketer may have meant fifteen hundred.
    Refuse to guess: the number must be written so it means one thing."""
    problems = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            continue
        for loc in (["value"], ["value", "default"], ["value", "expected", "default"]):
            node = document.node_at(["stages", i, *loc])
            text = getattr(node, "value", None)
            is_float = str(getattr(node, "tag", "")).endswith(":float")
            if isinstance(text, str) and is_float and is_ambiguous(text):
                whole, part = text.split(".")
                problems.append(
                    f"{_where(document, ['stages', i, *loc])}: {text} reads as "
                    f"{float(text):g}; write {whole}{part} for {int(whole + part):,} or "
                    f"{float(text):g} for {float(text):g} (numbers in this file use a "
                    "decimal point and no thousands separator)"
                )
    return problems


STARTER = """\
# funnelvalue mapping: which CRM stage becomes which Google Ads conversion, worth how much.
# Stages are ordered top of the funnel first. Check it with:  funnelvalue mapping check

customer_id: "123-456-7890"      # your Google Ads account (dashes optional)
currency: EUR                    # ISO 4217; a `currency` column in the export overrides it per row
timezone: Europe/Berlin          # for CRM times written without an offset

stages:
  - name: lead
    crm_values: ["New", "Open"]  # CRM stage names, matched ignoring case and extra spaces
    conversion_action: "CRM lead"  # conversion action name (or numeric id) in Google Ads
    value: 10
  - name: qualified
    crm_values: ["Sales Qualified Lead", "Engaging"]
    conversion_action: "CRM qualified"
    value: 150
  - name: won
    crm_values: ["Closed Won", "Won"]
    conversion_action: "CRM won"
    value: {from_column: amount, default: 1000}   # the deal amount; 1000 when it is empty

ignore: ["Lost", "Disqualified"]   # CRM stages that are not conversions (not reported as unknown)
backfill_skipped_stages: true      # a lead that jumps lead -> won also counts as 'qualified'

# Optional:
# columns:                         # your export's headers -> funnelvalue's names
#   "Deal Stage": stage
#   "Record ID": lead_id
#   "Last Stage Change": stage_changed_at
# timestamp_format: "%d/%m/%Y %H:%M"   # when times are not ISO 8601 (2026-11-02 14:30)
# amount_format: "1.234,56"        # when amounts could be read two ways (1.500): or "1,234.56"
# max_value: 10000000              # a larger value is a typo (the default)
# lookback_days: 90                # your conversion actions' click-through window (max 90)
# phone_country_code: 49           # for phone numbers written without +country code
# consent_ad_user_data: GRANTED    # EEA: ad_user_data consent for rows whose export has none
#
# Other ways to value a stage (see `funnelvalue advise` for what your data suggests):
#   value: {expected: {default: 150, window_days: 90}}   # P(won | this stage) x average won
#   multiply_by: {column: score_band, values: {high: 1.5, medium: 1.0, low: 0.5}}
"""


def mapping_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the mapping file, from the models above, for editors
    (the yaml-language-server line `mapping init` writes). The models accept a few shorter
    spellings before validating (one CRM value as a string, a value as an amount text, an
    ``{expected: ...}`` wrapper); the schema says so, so a valid file is never flagged."""
    schema = Mapping.model_json_schema()
    stage = schema["$defs"]["Stage"]["properties"]
    described = {k: stage["value"][k] for k in ("description", "examples") if k in stage["value"]}
    expected = Expected.model_json_schema()
    stage["value"] = {
        **described,
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "description": 'an amount as written, e.g. "1.500,00"'},
            FromColumn.model_json_schema(),
            {
                "type": "object",
                "properties": {"expected": expected},
                "required": ["expected"],
                "additionalProperties": False,
            },
        ],
    }
    values = stage["crm_values"]
    stage["crm_values"] = {
        k: v for k, v in values.items() if k in ("description", "examples", "title")
    } | {
        "anyOf": [
            {"type": "string"},
            {k: v for k, v in values.items() if k not in ("title", "description", "examples")},
        ]
    }
    root = schema["properties"]
    root["customer_id"] = {k: v for k, v in root["customer_id"].items() if k != "anyOf"} | {
        "anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]
    }
    root["phone_country_code"] = {
        k: v for k, v in root["phone_country_code"].items() if k != "anyOf"
    } | {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "funnelvalue mapping",
        "description": "Which CRM stage becomes which Google Ads conversion, worth how much.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
