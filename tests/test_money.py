"""Money is never misread: a value that could mean two things is refused with the fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from funnelvalue.amounts import read_amounts
from funnelvalue.cli import app
from funnelvalue.errors import ConfigError
from funnelvalue.mapping import STARTER, load_mapping
from funnelvalue.vocabulary import Reason
from tests.test_conversions import built_from, row


def won_values(
    mapping_file: Callable[..., Path], now: pd.Timestamp, amounts: list[str], **mapping: Any
) -> tuple[dict[str, float], dict[str, str]]:
    loaded = load_mapping(mapping_file(timezone="UTC", currency="EUR", **mapping))
    t = now - pd.Timedelta(days=1)
    built = built_from(
        [row(f"L{n}", "Won", t, amount=a) for n, a in enumerate(amounts)], loaded, now
    )
    won = built.conversions[built.conversions["stage"] == "won"]
    values = dict(zip(won["lead_id"], won["value"], strict=True))
    rejected = built.rejects[built.rejects["stage"] == "won"]
    return values, dict(zip(rejected["lead_id"], rejected["reason_code"], strict=True))


def test_a_value_that_reads_two_ways_is_invalid_until_the_format_is_declared(
    mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    amounts = ["3.254", "1.500", "1.500,00", "1,054.50", "99,5", "1054"]
    values, refused = won_values(mapping_file, now, amounts)
    assert refused == {"L0": Reason.VALUE_AMBIGUOUS, "L1": Reason.VALUE_AMBIGUOUS}
    assert values == {"L2": 1500.0, "L3": 1054.5, "L4": 99.5, "L5": 1054.0}

    values, refused = won_values(mapping_file, now, amounts, amount_format="1.234,56")
    assert values == {"L0": 3254.0, "L1": 1500.0, "L2": 1500.0, "L4": 99.5, "L5": 1054.0}
    assert refused == {"L3": Reason.VALUE_NOT_A_NUMBER}  # 1,054.50 is not that format

    values, refused = won_values(mapping_file, now, amounts, amount_format="1,234.56")
    assert values == {"L0": 3.25, "L1": 1.5, "L3": 1054.5, "L5": 1054.0}  # in cents
    assert set(refused) == {"L2", "L4"}


def test_the_reason_names_the_fix_and_not_the_cell(
    mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    loaded = load_mapping(mapping_file(timezone="UTC"))
    t = now - pd.Timedelta(days=1)
    built = built_from([row("A", "Won", t, amount="1.500")], loaded, now)
    reason = built.rejects.set_index("stage").loc["won", "reason"]
    assert 'amount_format: "1.234,56"' in reason
    assert "1.500 is 1500 in Germany" in reason  # the example, not the row's own cell


@pytest.mark.parametrize("amount", ["1e309", "inf", "NaN", "20000000", "1.2.3", "(100)"])
def test_infinite_absurd_and_malformed_amounts_are_invalid(
    amount: str, mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    values, refused = won_values(mapping_file, now, [amount])
    assert values == {}
    assert refused["L0"] in {Reason.VALUE_NOT_A_NUMBER, Reason.VALUE_TOO_LARGE}


def test_max_value_is_the_mappings_to_raise(
    mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    assert won_values(mapping_file, now, ["20000000"], max_value=50_000_000)[0] == {"L0": 2e7}
    assert won_values(mapping_file, now, ["20000000"])[1] == {"L0": Reason.VALUE_TOO_LARGE}


def test_numbers_that_are_already_numbers_are_taken_as_they_are() -> None:
    values, problem = read_amounts(pd.Series([1500.0, 3.254, float("inf")]), "1.234,56")
    assert values.tolist()[:2] == [1500.0, 3.254]
    assert problem.tolist()[2] == Reason.VALUE_TOO_LARGE


def mapping_text(tmp_path: Path, old: str, new: str) -> Path:
    assert old in STARTER
    path = tmp_path / "mapping.yaml"
    path.write_text(STARTER.replace(old, new), encoding="utf-8")
    return path


def problems_in(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"1.500,00"', 1500.0),
        ('"1,500.00"', 1500.0),
        ("1500", 1500.0),
        ("1_500", 1500.0),
        ("1.5", 1.5),
        ("0.125", 0.125),
    ],
)
def test_mapping_values_that_mean_one_thing(tmp_path: Path, value: str, expected: float) -> None:
    loaded = load_mapping(mapping_text(tmp_path, "value: 150", f"value: {value}"))
    assert loaded.stages[1].value == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("1.500", "line 16, stage 'qualified' → value: 1.500 reads as 1.5; write 1500 for 1,500"),
        ('"1.500"', "line 16, stage 'qualified' → value: value '1.500': it could be read two ways"),
        ('"1,500"', "it could be read two ways"),
        (".inf", "is not a number a conversion can carry"),
        (".nan", "is not a number a conversion can carry"),
        ("20000000", "above max_value 10,000,000"),
    ],
)
def test_mapping_values_that_do_not(tmp_path: Path, value: str, words: str) -> None:
    assert words in problems_in(mapping_text(tmp_path, "value: 150", f"value: {value}"))


def test_defaults_and_formats_are_checked_too(tmp_path: Path) -> None:
    default = "value: {from_column: amount, default: 1000}"
    nan_default = mapping_text(tmp_path, default, "value: {from_column: amount, default: .nan}")
    assert "stage 'won' → value → default: Input should be a finite number" in (
        problems_in(nan_default)
    )
    assert "reads as 1.5" in problems_in(
        mapping_text(tmp_path, default, "value: {from_column: amount, default: 1.500}")
    )
    bad_format = mapping_text(
        tmp_path, "currency: EUR ", 'amount_format: "1.234.56"\ncurrency: EUR '
    )
    assert "is not an amount format; write one of" in problems_in(bad_format)


def test_mapping_check_refuses_nan_with_the_line_and_exit_2(tmp_path: Path) -> None:
    path = mapping_text(tmp_path, "value: 150", "value: .nan")
    result = CliRunner().invoke(app, ["mapping", "check", "--mapping", str(path)])
    assert result.exit_code == 2
    assert "line 16" in result.output
    assert "valid" not in result.output.split("error:")[0]
