"""The ledger's record of asynchronous requests: it records the verdicts the destination
decided, for exactly the rows each request carried."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
from sqlalchemy import text

from funnelvalue.conversions import build
from funnelvalue.destinations.base import outcomes
from funnelvalue.leads import normalise
from funnelvalue.ledger import Ledger
from funnelvalue.ledger.requests import MAX_SUBMISSIONS
from funnelvalue.mapping import Mapping
from funnelvalue.order_ids import order_ids
from tests.conftest import CUSTOMER, HEADER, funnel_rows

DESTINATION = "data-manager:" + CUSTOMER


def submit(ledger: Ledger, rows: pd.DataFrame, requests: list[str]) -> int:
    """One run that submits ``rows`` split over ``requests`` (in turn)."""
    run_id, _ = ledger.runs.start("run", "src", DESTINATION, CUSTOMER)
    ledger.runs.mark_pending(run_id, rows, DESTINATION)
    sent = outcomes(rows["key"], "submitted")
    sent["request_id"] = [requests[n % len(requests)] for n in range(len(rows))]
    ledger.runs.finish(
        run_id, outcomes=sent, rejects=pd.DataFrame(), watermark=None, summary={}, exit_code=0
    )
    return run_id


def statuses(ledger: Ledger) -> dict[str, tuple[str, str | None]]:
    frame = ledger.views.conversions_frame()
    return {
        str(request): (
            str(group["status"].iloc[0]),
            None if pd.isna(group["error_code"].iloc[0]) else str(group["error_code"].iloc[0]),
        )
        for request, group in frame.groupby("request_id")
    }


def verdict(request: str, state: str, errors: dict[str, int] | None = None) -> dict[str, object]:
    return {"request_id": request, "state": state, "error_counts": errors or {}, "message": "m"}


@pytest.fixture
def conversions(mapping: Mapping, now: pd.Timestamp) -> pd.DataFrame:
    frame = pd.DataFrame(funnel_rows(10, now), columns=HEADER).astype("string")
    built = build(normalise(frame, timezone="UTC"), mapping, now, CUSTOMER).conversions
    return built.assign(order_id=order_ids(built["key"]))


@pytest.fixture
def ledger(open_ledger: Callable[..., Ledger], ledger_url: str) -> Ledger:
    return open_ledger(ledger_url)


def test_each_verdict_moves_only_its_own_rows(ledger: Ledger, conversions: pd.DataFrame) -> None:
    names = ["ok", "part", "dup", "fail", "wait"]
    submit(ledger, conversions, names)
    assert sorted(ledger.requests.open(DESTINATION)) == sorted(names)
    counts = ledger.requests.record(
        pd.DataFrame(
            [
                verdict("ok", "success"),
                verdict("part", "partial", {"CLICK_NOT_FOUND": 1}),
                verdict("dup", "duplicate", {"DUPLICATE_TRANSACTION_ID": 3}),
                verdict("fail", "failed", {"INTERNAL_ERROR": 3}),
                verdict("wait", "processing"),
            ]
        )
    )
    assert counts == {"success": 1, "partial": 1, "duplicate": 1, "failed": 1, "processing": 1}
    assert statuses(ledger) == {
        "ok": ("uploaded", None),
        "part": ("partial", "PARTIAL_SUCCESS"),
        "dup": ("duplicate", None),
        "fail": ("pending", "REQUEST_FAILED"),
        "wait": ("submitted", None),
    }
    frame = ledger.views.conversions_frame().set_index("request_id")
    assert set(frame.loc[["dup"], "message"]) == {"already in Google Ads"}
    assert set(frame.loc[["part"], "message"]) == {"m"}
    assert ledger.requests.open(DESTINATION) == ["wait"]


def test_a_request_that_keeps_failing_is_rejected_after_the_last_attempt(
    ledger: Ledger, conversions: pd.DataFrame
) -> None:
    half = len(conversions) // 2
    failing, recovering = conversions.iloc[:half], conversions.iloc[half:]
    for attempt in range(1, MAX_SUBMISSIONS + 1):
        submit(ledger, failing, [f"a{attempt}"])
        submit(ledger, recovering, [f"b{attempt}"])
        last = attempt == MAX_SUBMISSIONS
        verdicts = [verdict(f"b{attempt}", "success" if last else "failed")]
        ledger.requests.record(pd.DataFrame([*verdicts, verdict(f"a{attempt}", "failed")]))
        expected = {"rejected", "uploaded"} if last else {"pending"}
        assert set(ledger.views.status_counts()) == expected, attempt
    rows = ledger.views.conversions_frame().set_index("key")
    refused = rows.loc[failing["key"]]
    assert set(refused["status"]) == {"rejected"}
    assert set(refused["message"]) == {f"failed {MAX_SUBMISSIONS} times: m"}
    assert set(refused["error_code"]) == {"REQUEST_FAILED"}
    assert set(rows.loc[recovering["key"], "status"]) == {"uploaded"}  # its own verdict only


def test_open_requests_are_per_destination_and_oldest_first(
    ledger: Ledger, conversions: pd.DataFrame
) -> None:
    half = len(conversions) // 2
    submit(ledger, conversions.iloc[:half], ["b-new"])
    with ledger.db.tx() as conn:
        conn.execute(text("UPDATE requests SET submitted_at = '2026-01-02 00:00:00'"))
    submit(ledger, conversions.iloc[half:], ["a-old"])
    with ledger.db.tx() as conn:
        older = "UPDATE requests SET submitted_at = '2026-01-01' WHERE request_id = 'a-old'"
        conn.execute(text(older))
    assert ledger.requests.open(DESTINATION) == ["a-old", "b-new"]
    assert ledger.requests.open("data-manager:999") == []


def test_the_summary_counts_events_the_oldest_open_and_the_reasons(
    ledger: Ledger, conversions: pd.DataFrame
) -> None:
    submit(ledger, conversions, ["r1", "r2", "r3"])
    with ledger.db.tx() as conn:
        conn.execute(
            text("UPDATE requests SET submitted_at = '2026-01-01 00:00:00' WHERE request_id = 'r2'")
        )
    assert ledger.requests.summary()["oldest_open"] == "2026-01-01T00:00:00+00:00"
    ledger.requests.record(
        pd.DataFrame(
            [
                verdict("r1", "partial", {"A": 1, "B": 5}),
                verdict("r3", "failed", {"A": 2}),
            ]
        )
    )
    summary = ledger.requests.summary()
    events = {k: v["events"] for k, v in summary["requests"].items()}
    assert events == {"partial": 6, "submitted": 5, "failed": 5}
    assert {k: v["requests"] for k, v in summary["requests"].items()} == {
        "partial": 1,
        "submitted": 1,
        "failed": 1,
    }
    assert summary["oldest_open"] == "2026-01-01T00:00:00+00:00"
    assert list(summary["failure_reasons"].items()) == [("B", 5), ("A", 3)]  # most first
    ledger.requests.record(pd.DataFrame([verdict("r2", "success")]))
    assert ledger.requests.summary()["oldest_open"] is None  # nothing open any more
    with ledger.db.engine.connect() as conn:
        checked = conn.execute(text("SELECT request_id, checked_at FROM requests")).all()
    assert all(at is not None for _, at in checked)  # each verdict records when it was asked


def test_only_submitted_outcomes_with_a_request_id_become_requests(
    ledger: Ledger, conversions: pd.DataFrame
) -> None:
    run_id, _ = ledger.runs.start("run", "src", DESTINATION, CUSTOMER)
    ledger.runs.mark_pending(run_id, conversions, DESTINATION)
    mixed = outcomes(conversions["key"], "submitted")
    mixed["request_id"] = "r1"
    mixed.loc[mixed.index[0], "status"] = "uploaded"  # a validate-only "uploaded" carries one too
    mixed.loc[mixed.index[1], "request_id"] = None
    ledger.runs.finish(
        run_id, outcomes=mixed, rejects=pd.DataFrame(), watermark=None, summary={}, exit_code=0
    )
    assert ledger.requests.summary()["requests"] == {
        "submitted": {"requests": 1, "events": len(conversions) - 2}
    }
    with ledger.db.engine.connect() as conn:
        assert conn.execute(text("SELECT run_id FROM requests")).scalar() == run_id


def test_a_retry_verdict_makes_its_rows_due_in_six_hours_and_is_bounded(
    ledger: Ledger, conversions: pd.DataFrame
) -> None:
    for attempt in range(1, MAX_SUBMISSIONS + 1):
        submit(ledger, conversions, [f"r{attempt}"])
        before = pd.Timestamp.now(tz="UTC").tz_localize(None)
        ledger.requests.record(
            pd.DataFrame([verdict(f"r{attempt}", "retry", {"TOO_RECENT_CLICK": 1})])
        )
        rows = ledger.views.conversions_frame()
        if attempt < MAX_SUBMISSIONS:
            assert set(rows["status"]) == {"retry_after"}
            due = pd.to_datetime(rows["retry_at"]).dt.tz_localize(None)
            assert ((due - before) > pd.Timedelta(hours=5, minutes=59)).all()
            assert ((due - before) < pd.Timedelta(hours=6, minutes=1)).all()
    assert set(rows["status"]) == {"partial"}  # Google took some; never sent a 4th time
    assert set(rows["message"]) == {f"too recent {MAX_SUBMISSIONS} times: m"}


def test_an_unknown_status_is_waited_on_then_given_up_on(
    ledger: Ledger, conversions: pd.DataFrame
) -> None:
    submit(ledger, conversions, ["young", "old"])
    with ledger.db.tx() as conn:
        conn.execute(
            text("UPDATE requests SET submitted_at = '2020-01-01' WHERE request_id = 'old'")
        )
    counts = ledger.requests.record(
        pd.DataFrame([verdict("young", "unknown"), verdict("old", "unknown")])
    )
    assert counts == {"unknown": 1, "failed": 1}
    assert statuses(ledger) == {
        "young": ("submitted", None),
        "old": ("pending", "REQUEST_FAILED"),
    }
    assert ledger.requests.open(DESTINATION) == ["young"]
    message = ledger.views.conversions_frame().query("status == 'pending'")["message"].iloc[0]
    assert "REQUEST_STATUS_UNKNOWN" in message
