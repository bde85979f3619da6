from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from funnelvalue.amounts import read_amounts
from funnelvalue.conversions import Built, build
from funnelvalue.formatting import format_conversion_time, format_wall_time
from funnelvalue.leads import normalise
from funnelvalue.mapping import Mapping, load_mapping
from funnelvalue.order_ids import order_ids
from tests.conftest import CUSTOMER, HEADER, funnel_rows, gclid, ts


def built_from(rows: list[dict[str, Any]], mapping: Mapping, now: pd.Timestamp) -> Built:
    frame = pd.DataFrame(rows, columns=HEADER).astype("string")
    frame["source_row"] = range(2, len(frame) + 2)
    return build(normalise(frame, timezone=mapping.timezone), mapping, now, CUSTOMER)


def row(lead: str, stage: str, when: pd.Timestamp, **extra: Any) -> dict[str, Any]:
    return {
        "lead_id": lead,
        "stage": stage,
        "stage_changed_at": ts(when),
        "gclid": gclid(lead),
        **extra,
    }


def reasons(built: Built) -> dict[str, str]:
    return dict(zip(built.rejects["lead_id"], built.rejects["reason"], strict=True))


def test_funnel_maps_each_stage_to_its_action_and_value(
    mapping: Mapping, now: pd.Timestamp
) -> None:
    built = built_from(funnel_rows(20, now), mapping, now)
    conv = built.conversions
    assert built.rejects.empty
    assert conv.groupby("stage").size().to_dict() == {"lead": 20, "qualified": 10, "won": 2}
    won = conv[conv["stage"] == "won"].set_index("lead_id")
    assert won.loc["L10", "value"] == 1010
    assert won.loc["L10", "conversion_action"] == "CRM won"
    assert set(conv.loc[conv["stage"] == "qualified", "value"]) == {150}
    assert conv["key"].str.startswith(f"{CUSTOMER}|").all()
    ids = order_ids(conv["key"])
    assert ids.str.fullmatch(r"[0-9a-f]{24}").all()
    assert ids.is_unique


def test_order_id_is_stable_and_carries_no_pii(mapping: Mapping, now: pd.Timestamp) -> None:
    rows = [row("L1", "New", now - pd.Timedelta(days=1), email="jane@example.com")]
    first = built_from(rows, mapping, now).conversions
    again = built_from(rows, mapping, now + pd.Timedelta(hours=1)).conversions
    assert order_ids(first["key"]).tolist() == order_ids(again["key"]).tolist()
    expected = hashlib.sha256(f"{CUSTOMER}|CRM lead|L1".encode()).hexdigest()[:24]
    assert order_ids(first["key"]).tolist() == [expected]  # a hash of the key: no email
    assert first["key"].iloc[0] == f"{CUSTOMER}|CRM lead|L1"


def test_the_key_is_what_google_counts_never_a_label(mapping: Mapping, now: pd.Timestamp) -> None:
    """Renaming a stage, or naming its action by id, leaves every key as it was."""
    rows = [row("L1", "New", now - pd.Timedelta(days=1))]
    by_id = {"CRM lead": "101", "CRM qualified": "102", "CRM won": "103"}
    first = build(
        normalise(pd.DataFrame(rows, columns=HEADER).astype("string"), timezone="UTC"),
        mapping,
        now,
        CUSTOMER,
        identities=by_id,
    ).conversions
    assert first["key"].tolist() == [f"{CUSTOMER}|101|L1"]
    assert first["action_identity"].tolist() == ["101"]
    renamed = mapping.model_copy(
        update={
            "stages": [
                mapping.stages[0].model_copy(
                    update={"name": "inquiry", "conversion_action": "101"}
                ),
                *mapping.stages[1:],
            ]
        }
    )
    again = build(
        normalise(pd.DataFrame(rows, columns=HEADER).astype("string"), timezone="UTC"),
        renamed,
        now,
        CUSTOMER,
        identities={**by_id, "101": "101"},
    ).conversions
    assert again["stage"].tolist() == ["inquiry"]
    assert again["key"].tolist() == first["key"].tolist()


def test_stage_names_match_loosely_ignored_and_unknown_are_counted(
    mapping: Mapping, now: pd.Timestamp
) -> None:
    t = now - pd.Timedelta(days=2)
    built = built_from(
        [
            row("A", "  closed   WON ", t, amount="5"),
            row("B", "lost", t),
            row("C", "Negotiation", t),
            row("D", "Negotiation", t),
            row("E", None, t),
        ],
        mapping,
        now,
    )
    assert built.conversions.set_index("lead_id").loc["A"].query("stage == 'won'")[
        "value"
    ].tolist() == [5]
    assert built.ignored == 1
    assert built.unknown_stages == {"Negotiation": 2}
    why = reasons(built)
    assert why["C"].startswith("unknown CRM stage 'Negotiation'")
    assert why["E"] == "stage is empty"


def test_backfill_adds_skipped_stages_at_the_next_reached_time(
    mapping: Mapping, now: pd.Timestamp
) -> None:
    won_at = now - pd.Timedelta(days=2)
    built = built_from(
        [row("L1", "New", now - pd.Timedelta(days=9)), row("L1", "Won", won_at, amount="700")],
        mapping,
        now,
    )
    conv = built.conversions.set_index("stage")
    assert built.backfilled == 1
    assert conv.loc["qualified", "backfilled"]
    assert conv.loc["qualified", "conversion_time"] == won_at
    assert conv.loc["qualified", "value"] == 150
    assert conv.loc["qualified", "click_id"] == gclid("L1")


def test_conversions_come_in_time_order_then_lead_then_stage(
    mapping: Mapping, now: pd.Timestamp
) -> None:
    """Ties in time go by lead (in the order the file first names them), then stage; a
    backfilled stage sits at its donor's time, not after the rows read from the file."""
    t0, t1, t2 = (now - pd.Timedelta(days=d) for d in (9, 5, 2))
    built = built_from(
        [
            row("L3", "New", t2),
            row("L2", "Won", t1, amount="700"),  # backfills lead and qualified at t1
            row("L1", "New", t1),
            row("L1", "Engaging", t0),
        ],
        mapping,
        now,
    )
    conv = built.conversions
    assert list(zip(conv["lead_id"], conv["stage"], strict=True)) == [
        ("L1", "qualified"),
        ("L2", "lead"),
        ("L2", "qualified"),
        ("L2", "won"),
        ("L1", "lead"),
        ("L3", "lead"),
    ]
    assert conv["conversion_time"].is_monotonic_increasing


def test_backfill_off_and_top_stage_only(
    mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    plain = load_mapping(mapping_file(backfill_skipped_stages=False, timezone="UTC"))
    built = built_from([row("L1", "Won", now - pd.Timedelta(days=1), amount="1")], plain, now)
    assert built.conversions["stage"].tolist() == ["won"]
    full = load_mapping(mapping_file(timezone="UTC"))
    built = built_from([row("L1", "Won", now - pd.Timedelta(days=1), amount="1")], full, now)
    assert sorted(built.conversions["stage"]) == ["lead", "qualified", "won"]


def test_repeated_stage_keeps_the_first_time_and_shares_lead_facts(
    mapping: Mapping, now: pd.Timestamp
) -> None:
    first = now - pd.Timedelta(days=5)
    rows = [
        row("L1", "New", first),
        {**row("L1", "Open", now - pd.Timedelta(days=4)), "gclid": None},
    ]
    built = built_from(rows, mapping, now)
    assert built.merged_duplicates == 1
    assert built.conversions["conversion_time"].tolist() == [first]
    # a stage-history export with the click id on one row only still sends the others
    rows = [row("L2", "New", first), {**row("L2", "Sales Qualified Lead", now), "gclid": None}]
    conv = built_from(rows, mapping, now).conversions
    assert conv["click_id"].tolist() == [gclid("L2"), gclid("L2")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1054", 1054.0),
        ("1,054.50", 1054.5),
        ("1.054,50", 1054.5),
        ("€ 99", 99.0),
        ("99,5", 99.5),
        ("1,234,567", 1234567.0),
        ("EUR 12.30", 12.3),
        ("n/a", None),
    ],
)
def test_amounts_as_crms_write_them(raw: str, expected: float | None) -> None:
    value = read_amounts(pd.Series([raw], dtype="string"))[0].iloc[0]
    assert (pd.isna(value) and expected is None) or value == expected


def test_value_rules(mapping_file: Callable[..., Path], now: pd.Timestamp) -> None:
    stages = [
        {
            "name": "won",
            "crm_values": ["Won"],
            "conversion_action": "W",
            "value": {"from_column": "deal_size"},
        }
    ]
    mapping = load_mapping(mapping_file(stages=stages, timezone="UTC"))
    t = now - pd.Timedelta(days=1)
    rows = [
        row("A", "Won", t, deal_size="12"),
        row("B", "Won", t),
        row("C", "Won", t, deal_size="lots"),
        row("D", "Won", t, deal_size="-3"),
    ]
    frame = pd.DataFrame(rows).reindex(columns=[*HEADER, "deal_size"]).astype("string")
    built = build(normalise(frame, timezone="UTC"), mapping, now, CUSTOMER)
    assert built.conversions["value"].tolist() == [12]
    why = reasons(built)
    assert why["B"] == "deal_size is empty and stage 'won' has no default value"
    assert why["C"] == "deal_size is not a number"
    assert why["D"] == "deal_size is negative; values must be >= 0"


def test_default_value_and_currency_override(mapping: Mapping, now: pd.Timestamp) -> None:
    t = now - pd.Timedelta(days=1)
    built = built_from(
        [
            row("A", "Won", t),
            row("B", "Won", t, amount="10", currency="usd"),
            row("C", "Won", t, amount="10", currency="EURO"),
        ],
        mapping,
        now,
    )
    won = built.conversions[built.conversions["stage"] == "won"].set_index("lead_id")
    assert won.loc["A", "value"] == 1000
    assert won.loc["A", "currency"] == "EUR"
    assert won.loc["B", "currency"] == "USD"
    assert reasons(built)["C"] == "currency is not an ISO 4217 code (e.g. EUR, USD)"


def test_identifier_choice_and_rejections(
    mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    mapping = load_mapping(mapping_file(timezone="UTC", phone_country_code="49"))
    t = now - pd.Timedelta(days=1)
    braid = "0AAAAADxyz1234567890abcdef"
    rows = [
        row("G", "New", t, gbraid=braid, email="g@example.com"),  # gclid wins over both
        {**row("GB", "New", t, gbraid=braid), "gclid": None},
        {**row("WB", "New", t, wbraid=braid), "gclid": None},
        {**row("BOTH", "New", t, gbraid=braid, wbraid=braid), "gclid": None},
        {**row("BAD", "New", t), "gclid": "abc"},
        {**row("MAIL", "New", t, email="Jane.Doe@gmail.com"), "gclid": None},
        {**row("TEL", "New", t, phone="0151 23456789"), "gclid": None},
        {**row("JUNK", "New", t, email="jane(at)example", phone="12"), "gclid": None},
        {**row("NONE", "New", t), "gclid": None},
    ]
    built = built_from(rows, mapping, now)
    kinds = built.conversions.set_index("lead_id")["click_id_kind"].to_dict()
    assert kinds == {
        "G": "gclid",
        "GB": "gbraid",
        "WB": "wbraid",
        "MAIL": "email/phone",
        "TEL": "email/phone",
    }
    conv = built.conversions.set_index("lead_id")
    mail = hashlib.sha256(b"janedoe@gmail.com").hexdigest()  # gmail: no dots, lowercase
    assert conv.loc["MAIL", "hashed_email"] == mail
    assert len(conv.loc["TEL", "hashed_phone"]) == 64
    hashes = conv[["hashed_email", "hashed_phone"]].notna()
    assert hashes.to_dict("index") == {
        "G": {"hashed_email": False, "hashed_phone": False},
        "GB": {"hashed_email": False, "hashed_phone": False},
        "WB": {"hashed_email": False, "hashed_phone": False},
        "MAIL": {"hashed_email": True, "hashed_phone": False},
        "TEL": {"hashed_email": False, "hashed_phone": True},
    }
    assert pd.isna(conv.loc["MAIL", "click_id"])
    why = reasons(built)
    assert why["BOTH"].startswith("both gbraid and wbraid are set")
    assert why["BAD"].startswith("gclid is malformed (3 characters;")
    assert "email/phone given is not usable" in why["JUNK"]
    assert "jane" not in why["JUNK"]  # reasons never quote personal data
    assert why["NONE"] == "no click id (gclid, gbraid, wbraid) and no email or phone"


def test_time_rules(mapping: Mapping, now: pd.Timestamp) -> None:
    rows = [
        row("FUTURE", "New", now + pd.Timedelta(hours=2)),
        row("EARLY", "New", now - pd.Timedelta(days=2), created_at=ts(now - pd.Timedelta(days=1))),
        row("OLD", "New", now - pd.Timedelta(days=91)),
        row(
            "OLDCLICK",
            "New",
            now - pd.Timedelta(days=3),
            created_at=ts(now - pd.Timedelta(days=95)),
        ),
        row("NOTIME", "New", now),
        row("OK", "New", now - pd.Timedelta(days=89)),
    ]
    rows[4]["stage_changed_at"] = None
    built = built_from(rows, mapping, now)
    assert built.conversions["lead_id"].tolist() == ["OK"]
    why = reasons(built)
    assert why["FUTURE"].startswith("stage_changed_at is in the future")
    assert why["EARLY"].startswith("stage was reached before the lead was created")
    assert why["OLD"].startswith("older than the 90-day click lookback")
    assert why["OLDCLICK"].startswith("older than the 90-day click lookback")
    assert why["NOTIME"].startswith("stage_changed_at is empty")


def test_consent_values(mapping: Mapping, now: pd.Timestamp) -> None:
    t = now - pd.Timedelta(days=1)
    built = built_from(
        [
            row("A", "New", t, consent_ad_user_data="granted"),
            row("B", "New", t, consent_ad_user_data="No"),
            row("C", "New", t, consent_ad_user_data="maybe"),
            row("D", "New", t),
        ],
        mapping,
        now,
    )
    consent = built.conversions.set_index("lead_id")["consent"]
    assert consent["A"] == "GRANTED"
    assert consent["B"] == "DENIED"
    assert pd.isna(consent["D"])
    assert reasons(built)["C"].startswith("consent_ad_user_data must be GRANTED or DENIED")


def test_mapping_consent_default_fills_only_empty_cells(
    mapping_file: Callable[..., Path], now: pd.Timestamp
) -> None:
    mapping = load_mapping(mapping_file(timezone="UTC", consent_ad_user_data="GRANTED"))
    t = now - pd.Timedelta(days=1)
    built = built_from(
        [row("A", "New", t, consent_ad_user_data="denied"), row("B", "New", t)], mapping, now
    )
    assert built.conversions.set_index("lead_id")["consent"].to_dict() == {
        "A": "DENIED",
        "B": "GRANTED",
    }


def test_a_row_with_several_problems_lists_them_all(mapping: Mapping, now: pd.Timestamp) -> None:
    bad = {**row("X", "Won", now + pd.Timedelta(days=1), amount="abc"), "gclid": "bad"}
    rejects = built_from([bad], mapping, now).rejects.set_index("stage")
    assert rejects.loc[["lead", "qualified"], "crm_stage"].tolist() == ["Won", "Won"]
    reason = rejects.loc["won", "reason"]
    assert "amount is not a number" in reason
    assert "abc" not in reason  # the cell is not quoted: it could hold anything
    assert "gclid is malformed" in reason
    assert "in the future" in reason


def test_every_row_is_accounted_for(mapping: Mapping, now: pd.Timestamp) -> None:
    rows = funnel_rows(50, now)
    rows += [
        row("U", "Huh", now),
        row("I", "Lost", now),
        {**row("N", "New", now), "gclid": "x"},
        row("L0", "New", now - pd.Timedelta(days=1)),
    ]  # a repeat of L0's first stage
    built = built_from(rows, mapping, now)
    original = built.conversions[~built.conversions["backfilled"]]
    assert (
        len(original) + len(built.rejects) + built.ignored + built.merged_duplicates
        == built.rows_read
        == len(rows)
    )


def test_conversion_time_format(now: pd.Timestamp) -> None:
    times = pd.Series(pd.to_datetime(["2026-11-02 13:30:00", "2026-07-02 12:30:05"], utc=True))
    assert format_conversion_time(times, "Europe/Berlin").tolist() == [
        "2026-11-02 14:30:00+01:00",
        "2026-07-02 14:30:05+02:00",
    ]
    assert format_conversion_time(times, "Asia/Kolkata").iloc[0] == "2026-11-02 19:00:00+05:30"


def test_a_row_skipped_and_invalid_is_invalid_with_the_invalid_code(
    mapping: Mapping, now: pd.Timestamp
) -> None:
    """No identifier alone would skip the row; a time in the future makes it invalid, and
    the code names what the user must fix, not the first problem found."""
    late = {**row("X", "New", now + pd.Timedelta(days=1)), "gclid": None}
    alone = {**row("Y", "New", now - pd.Timedelta(days=1)), "gclid": None}
    rejects = built_from([late, alone], mapping, now).rejects.set_index("lead_id")
    assert rejects.loc["X", ["reason_code", "kind"]].tolist() == ["time_in_future", "invalid"]
    assert "no click id" in rejects.loc["X", "reason"]
    assert rejects.loc["Y", ["reason_code", "kind"]].tolist() == ["no_identifier", "skipped"]


def test_an_empty_time_and_an_unreadable_one_have_their_own_codes(
    mapping: Mapping, now: pd.Timestamp
) -> None:
    empty = row("E", "New", now)
    empty["stage_changed_at"] = None
    garbled = row("G", "New", now)
    garbled["stage_changed_at"] = "soon"
    rejects = built_from([empty, garbled], mapping, now).rejects.set_index("lead_id")
    assert rejects["reason_code"].to_dict() == {"E": "time_empty", "G": "time_unreadable"}
    assert rejects.loc["G", "reason"].startswith("stage_changed_at")


def test_wall_time_is_the_zone_clock_to_the_second() -> None:
    times = pd.Series(
        pd.to_datetime(
            ["2026-03-29 00:59:59.9", None, "2026-03-29 01:00:00"], utc=True, format="ISO8601"
        ),
        index=[4, 2, 0],
    )
    wall = format_wall_time(times, "Europe/Berlin")
    assert wall.tolist() == ["2026-03-29 01:59:59", pd.NA, "2026-03-29 03:00:00"]
    assert wall.index.tolist() == [4, 2, 0]


def test_checks_join_into_one_reason_and_the_first_invalid_code_per_row() -> None:
    """Per row with a problem: every reason in check order, the first invalid code (else the
    first code) and the kind; rows without a problem are not in the result."""
    import numpy as np

    from funnelvalue.conversions import Problems, _join_checks
    from funnelvalue.vocabulary import Reason

    value, identifier, age = Problems(5), Problems(5), Problems(5)
    value.add(np.array([1, 3]), "value is negative", Reason.VALUE_NEGATIVE)
    identifier.add(np.array([0, 3, 4]), "no click id", Reason.NO_IDENTIFIER)
    identifier.add(np.array([1]), "gclid is malformed", Reason.CLICK_ID_MALFORMED)
    age.add(np.array([0, 1, 4]), "older than the lookback", Reason.EXPIRED)
    bad, reasons, codes, kinds = _join_checks([value, identifier, age])
    assert bad.tolist() == [True, True, False, True, True]
    assert reasons.tolist() == [
        "no click id; older than the lookback",
        "value is negative; gclid is malformed; older than the lookback",
        "value is negative; no click id",
        "no click id; older than the lookback",
    ]
    assert codes.tolist() == ["no_identifier", "value_negative", "value_negative", "no_identifier"]
    assert kinds.tolist() == ["skipped", "invalid", "invalid", "skipped"]
    skipped_first = Problems(1)
    skipped_first.add(np.array([0]), "no click id", Reason.NO_IDENTIFIER)
    invalid_later = Problems(1)
    invalid_later.add(np.array([0]), "currency", Reason.CURRENCY_INVALID)
    _, _, codes, kinds = _join_checks([skipped_first, invalid_later])
    assert (codes.tolist(), kinds.tolist()) == (["currency_invalid"], ["invalid"])


def test_order_ids_hash_the_keys_utf8_bytes() -> None:
    """24 hex characters of the key's SHA-256, a lead id with non-ASCII letters included."""
    keys = pd.Series([f"{CUSTOMER}|CRM lead|Müller-7", f"{CUSTOMER}|won|L1"], index=[5, 9])
    expected = [hashlib.sha256(k.encode("utf-8")).hexdigest()[:24] for k in keys]
    ids = order_ids(keys)
    assert ids.tolist() == expected
    assert ids.index.tolist() == [5, 9]
    assert order_ids(keys.iloc[:0]).tolist() == []  # a run with nothing new


def test_backfill_gives_each_lead_its_skipped_stages_from_its_next_reached_row() -> None:
    """Per lead (codes as pd.factorize gives them, with a code no row has): every stage below
    the highest reached and not reached itself, borrowed from the next stage reached."""
    import numpy as np

    from funnelvalue.conversions import _backfill

    leads = np.array([2, 0, 2, 3])
    positions = np.array([0, 2, 3, 1])
    rows = np.array([11, 10, 12, 13])
    donors, missing = _backfill(leads, positions, rows, 4)
    assert list(zip(donors.tolist(), missing.tolist(), strict=True)) == [
        (10, 0),  # lead 0 reached stage 2 only: stages 0 and 1 from row 10
        (10, 1),
        (12, 1),  # lead 2 reached 0 and 3: stages 1 and 2 from row 12
        (12, 2),
        (13, 0),  # lead 3 reached 1: stage 0 from row 13
    ]
