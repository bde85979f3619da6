from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from funnelvalue.errors import ConfigError
from funnelvalue.mapping import STARTER, FromColumn, load_mapping, stage_key


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    return caught.value.problems or [str(caught.value)]


def test_starter_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(STARTER)
    mapping = load_mapping(path)
    assert [s.name for s in mapping.stages] == ["lead", "qualified", "won"]
    assert mapping.customer_id == "1234567890"
    assert mapping.currency == "EUR"
    assert isinstance(mapping.stages[2].value, FromColumn)
    assert mapping.stages[2].value.default == 1000
    assert mapping.stage_index[stage_key("  sales   QUALIFIED lead ")] == 1
    assert stage_key("Lost") in mapping.ignored


def test_every_problem_is_reported_at_once_with_line_and_stage(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        """\
currency: EURO
timezone: Europe/Berlinn
stages:
  - name: lead
    crm_values: [New]
    conversion_action: CRM lead
    vaule: 10
  - name: won
    crm_values: [Won, new]
    value: -5
ignore: [Won]
"""
    )
    problems = problems_of(path)
    text = "\n".join(problems)
    assert "line 1, currency: 'EURO' is not an ISO 4217 currency code" in text
    assert "line 2, timezone: 'Europe/Berlinn' is not an IANA time zone" in text
    assert "line 7, stage 'lead' → vaule: unknown key 'vaule' — did you mean 'value'?" in text
    assert "line 4, stage 'lead' → value: missing" in text
    assert "stage 'won' → conversion_action: missing" in text
    assert "line 10, stage 'won' → value: value -5 is negative" in text
    assert "CRM value 'new' is already mapped to stage 'lead'" in text
    assert "'Won' is both ignored and mapped to stage 'won'" in text
    assert len(problems) == 8


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("currency: EUR\nstages:\n  - name: lead\n   crm_values: [New\n")
    message = str(problems_of(path)[0])
    assert "not valid YAML: line 4: the indentation does not line up" in message
    assert "4 | crm_values: [New" in message  # the line itself


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "currency: EUR\nstages:\n  - name:lead\n    crm_values: [x]\n",
            "a missing space after ':'",
        ),
        ('currency: "EUR\ntimezone: UTC\n', "line 1: a quote opened here is never closed"),
        ("currency: EUR\n\ttimezone: UTC\n", "line 2: a tab: YAML indents with spaces only"),
        ("stages:\n  - name: a\n    crm_values\n    value: 1\n", "a missing ':'"),
    ],
)
def test_yaml_mistakes_are_said_in_plain_words(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    assert words in problems_of(path)[0]


def test_repeated_key_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(STARTER.replace("timezone: Europe/Berlin", "timezone: UTC\ntimezone: CET"))
    assert any("key 'timezone' appears twice" in p for p in problems_of(path))


def test_value_must_be_number_or_from_column(mapping_file: Callable[..., Path]) -> None:
    stages = [
        {"name": "won", "crm_values": ["Won"], "conversion_action": "a", "value": "lots"},
        {
            "name": "x",
            "crm_values": "Only one",
            "conversion_action": "b",
            "value": {"column": "amount"},
        },
    ]
    problems = problems_of(mapping_file(stages=stages))
    assert any("value 'lots' is not a number" in p for p in problems)
    assert any("unknown key 'column'" in p and "from_column" in p for p in problems)


def test_duplicate_stage_names_and_bad_columns(mapping_file: Callable[..., Path]) -> None:
    stage = {"name": "lead", "crm_values": ["A"], "conversion_action": "a", "value": 1}
    other = {**stage, "crm_values": ["B"]}
    path = mapping_file(stages=[stage, other], columns={"Deal Stage": "stgae"})
    text = "\n".join(problems_of(path))
    assert "stage name 'lead' is used twice" in text
    assert (
        "'Deal Stage' is renamed to 'stgae', which is not a lead column — did you mean"
        " 'stage'?" in text
    )


def test_customer_id_and_phone_code_are_normalised(mapping_file: Callable[..., Path]) -> None:
    mapping = load_mapping(mapping_file(customer_id=1234567890, phone_country_code="+49"))
    assert mapping.customer_id == "1234567890"
    assert mapping.phone_country_code == "49"
    assert any("customer id" in p for p in problems_of(mapping_file(customer_id="12-34")))


def test_missing_file_and_wrong_shape(tmp_path: Path) -> None:
    assert "does not exist" in problems_of(tmp_path / "nope.yaml")[0]
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert "mapping init" in problems_of(path)[0]


def test_empty_stages_and_lookback_bounds(mapping_file: Callable[..., Path]) -> None:
    text = "\n".join(problems_of(mapping_file(stages=[], lookback_days=120)))
    assert "stages" in text
    assert "lookback_days" in text


def test_expected_and_multiply_by_are_read_and_checked(
    mapping_file: Callable[..., Path],
) -> None:
    lead = {"name": "lead", "crm_values": ["New"], "conversion_action": "a"}
    won = {"name": "won", "crm_values": ["Won"], "conversion_action": "c", "value": 900}
    good = mapping_file(
        stages=[
            {
                **lead,
                "value": {"expected": {"default": 20, "window_days": 60}},
                "multiply_by": {"column": "Score Band", "values": {"High": 1.5, "low": 0.5}},
            },
            won,
        ]
    )
    loaded = load_mapping(good)
    assert loaded.expected_stages[0].default == 20
    assert loaded.expected_stages[0].window_days == 60
    assert loaded.stages[0].multiply_by is not None
    assert loaded.stages[0].multiply_by.values == {"high": 1.5, "low": 0.5}
    assert loaded.value_columns == {"Score Band"}

    bad = mapping_file(
        "bad.yaml",
        stages=[
            {**lead, "value": {"expected": {"defualt": 20}}, "multiply_by": {"column": "x"}},
            {**won, "value": {"expected": {"default": 1}}},
        ],
    )
    text = "\n".join(problems_of(bad))
    assert "unknown key 'defualt' — did you mean 'default'?" in text
    assert "multiply_by → values: missing" in text
    assert "the last stage's values are what expected values are computed from" in text
