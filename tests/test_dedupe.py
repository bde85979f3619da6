"""The dedupe policy on its own: frames in, states out, no database."""

from __future__ import annotations

import pandas as pd

from funnelvalue.ledger.dedupe import KNOWN_COLUMNS, classify, rekey_legacy
from funnelvalue.vocabulary import State

NOW = pd.Timestamp("2026-12-01 12:00", tz="UTC")
SENT_AT = pd.Timestamp("2026-11-20 09:00", tz="UTC")


def built(*keys: str, value: float = 100.0, currency: str = "EUR") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": list(keys),
            "value": value,
            "currency": currency,
            "click_id": [f"click-{k}" for k in keys],
            "hashed_email": pd.NA,
            "hashed_phone": pd.NA,
            "conversion_time": SENT_AT,
        }
    )


def known(rows: list[tuple[str, str, float]], retry_at: pd.Timestamp | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "key": key,
                "status": status,
                "value": value,
                "currency": "EUR",
                "retry_at": None if retry_at is None else retry_at.tz_convert(None),
                "order_id": f"order-{key}",
            }
            for key, status, value in rows
        ],
        columns=KNOWN_COLUMNS,
    )


def states(frame: pd.DataFrame) -> list[str]:
    return frame["state"].tolist()


def test_what_the_ledger_does_not_know_is_new_without_an_order_id() -> None:
    got = classify(built("a", "b"), known([("c", "uploaded", 100.0)]), NOW)
    assert states(got) == [State.NEW, State.NEW]
    assert got["ledger_order_id"].isna().all()


def test_every_done_status_is_never_sent_again_and_keeps_its_order_id() -> None:
    done = ["uploaded", "duplicate", "submitted", "partial", "written"]
    keys = [f"k{n}" for n in range(len(done))]
    got = classify(
        built(*keys), known([(k, s, 100.0) for k, s in zip(keys, done, strict=True)]), NOW
    )
    assert states(got) == [State.SENT] * len(done)
    assert got["ledger_order_id"].tolist() == [f"order-{k}" for k in keys]


def test_a_value_change_above_a_cent_or_a_new_currency_is_a_restatement() -> None:
    ledger = known([("a", "uploaded", 100.0), ("b", "uploaded", 100.004), ("c", "uploaded", 100)])
    rows = built("a", "b", "c", value=100.0)
    rows.loc[0, "value"] = 100.02
    rows.loc[2, "currency"] = "USD"
    assert states(classify(rows, ledger, NOW)) == [State.CHANGED, State.SENT, State.CHANGED]


def test_an_estimated_value_is_fixed_once_sent() -> None:
    ledger = known([("a", "uploaded", 80.0), ("b", "uploaded", 80.0)])
    estimated = pd.Series([True, False])
    got = classify(built("a", "b", value=95.0), ledger, NOW, estimated=estimated)
    assert states(got) == [State.SENT, State.CHANGED]


def test_pending_and_failed_go_out_again_with_their_order_ids() -> None:
    got = classify(built("a", "b"), known([("a", "pending", 100.0), ("b", "failed", 100.0)]), NOW)
    assert states(got) == [State.PENDING, State.PENDING]
    assert got["ledger_order_id"].tolist() == ["order-a", "order-b"]


def test_retry_after_waits_until_its_time() -> None:
    rows = built("a")
    later = known([("a", "retry_after", 100.0)], retry_at=NOW + pd.Timedelta(minutes=1))
    due = known([("a", "retry_after", 100.0)], retry_at=NOW)
    unknown = known([("a", "retry_after", 100.0)])
    assert states(classify(rows, later, NOW)) == [State.RETRY_LATER]
    assert states(classify(rows, due, NOW)) == [State.RETRY_DUE]
    assert states(classify(rows, unknown, NOW)) == [State.RETRY_DUE]


def test_a_refused_row_goes_again_only_when_its_identifier_or_time_changed() -> None:
    keys = ("same", "click", "email", "phone", "time", "unseen")
    ledger = known([(k, "rejected", 100.0) for k in keys])
    rows = built(*keys)
    refused = rows.drop(index=5).drop(columns=["value", "currency"])  # "unseen": no payload
    rows.loc[1, "click_id"] = "click-fixed"
    rows.loc[2, "hashed_email"] = "a" * 64
    rows.loc[3, "hashed_phone"] = "b" * 64
    rows.loc[4, "conversion_time"] = SENT_AT + pd.Timedelta(hours=1)
    refused["conversion_time"] = refused["conversion_time"].dt.tz_convert(None)  # as stored
    got = classify(rows, ledger, NOW, refused=refused)
    assert states(got) == [State.REJECTED_BEFORE] + [State.FIXED] * 5
    assert states(classify(rows, ledger, NOW)) == [State.REJECTED_BEFORE] * 6


def test_legacy_rows_become_one_conversion_each_and_the_first_sent_wins() -> None:
    legacy = pd.DataFrame(
        {
            "key": ["c|won label|L1|won", "c|closed label|L1|closed", "c|won label|L2|won"],
            "conversion_action": ["CRM won", "103", "CRM won"],
            "lead_id": ["L1", "L1", "L2"],
            "status": ["pending", "uploaded", "uploaded"],
            "first_run_id": [1, 2, 3],
        }
    )
    adopted, superseded = rekey_legacy(
        legacy, {"CRM won": "103", "103": "103"}, "c", taken=lambda keys: {"c|103|L2"}
    )
    assert adopted["key"].tolist() == ["c|closed label|L1|closed"]  # sent beats pending
    assert adopted["new_key"].tolist() == ["c|103|L1"]
    assert sorted(superseded["key"]) == ["c|won label|L1|won", "c|won label|L2|won"]


def test_every_state_is_the_same_with_the_columns_as_a_sqlite_ledger_reads_them() -> None:
    """The SQLite ledger's rows come as Arrow strings (missing is NA, not NaN): every state
    and order id must come out as from plain columns, keys the ledger lacks included."""
    rows = built("new", "sent", "changed", "pending", "later", "due", "refused", "fixed")
    rows.loc[2, "value"] = 120.0
    rows.loc[7, "click_id"] = "click-fixed"
    plain = known(
        [
            ("sent", "uploaded", 100.0),
            ("changed", "written", 100.0),
            ("pending", "pending", 100.0),
            ("later", "retry_after", 100.0),
            ("due", "retry_after", 100.0),
            ("refused", "rejected", 100.0),
            ("fixed", "rejected", 100.0),
        ]
    )
    plain["retry_at"] = pd.Series(
        [None, None, None, NOW + pd.Timedelta(hours=1), NOW - pd.Timedelta(hours=1), None, None]
    ).dt.tz_convert(None)
    text = pd.StringDtype("pyarrow")
    as_read = plain.astype({"key": text, "status": text, "currency": text, "order_id": text})
    refused = rows.loc[6:7].drop(columns=["value", "currency"])
    refused["conversion_time"] = refused["conversion_time"].dt.tz_convert(None)
    refused.loc[7, "click_id"] = "click-fixed-before"
    expected = [
        State.NEW,
        State.SENT,
        State.CHANGED,
        State.PENDING,
        State.RETRY_LATER,
        State.RETRY_DUE,
        State.REJECTED_BEFORE,
        State.FIXED,
    ]
    for ledger in (plain, as_read):
        got = classify(rows, ledger, NOW, refused=refused)
        assert states(got) == expected
        assert got["ledger_order_id"].isna().tolist() == [True] + [False] * 7
        assert got["ledger_order_id"].iloc[1:].tolist() == [f"order-{k}" for k in rows["key"][1:]]
