"""The words every part shares: frame columns, and the enums for click-id kinds, outcomes,
ledger states, run and request states, and reasons a row is left out.

At the bottom of the house: it imports nothing from funnelvalue, and every other module takes
its words from here rather than spelling them as literals. The enums are ``StrEnum``: a value
*is* its string, so it goes into pandas, SQL and JSON unchanged (``Outcome.UPLOADED ==
"uploaded"``) and a ledger written by an older version reads the same.
"""

from __future__ import annotations

from enum import StrEnum

# -- frames -----------------------------------------------------------------------------------

# A built conversion (conversions.build): what can be sent, with where it came from.
CONVERSION_COLUMNS = [
    "key",
    "customer_id",
    "lead_id",
    "stage",
    "stage_position",
    "crm_stage",
    "conversion_action",
    "action_identity",  # the action as Google counts it: part of the key, never a label
    "conversion_time",
    "value",
    "value_factor",  # multiply_by's factor (1 without one): expected values are scaled by it
    "currency",
    "click_id_kind",
    "click_id",
    "hashed_email",
    "hashed_phone",
    "consent",
    "backfilled",
    "source_row",
]
# A row left out (``key`` is set too on rows that would have been a conversion, e.g. older
# than the lookback, so one already sent is recognised rather than reported every day).
REJECT_COLUMNS = ["source_row", "lead_id", "crm_stage", "stage", "reason", "reason_code", "kind"]
# What the ledger keeps of a conversion to send it again without the CRM (besides its key).
PAYLOAD = [
    "customer_id",
    "conversion_action",
    "action_identity",
    "lead_id",
    "stage",
    "order_id",
    "conversion_time",
    "value",
    "currency",
    "click_id_kind",
    "click_id",
    "hashed_email",
    "hashed_phone",
    "consent",
]
# What a destination says about each row it was given (plus ``request_id`` when asynchronous).
OUTCOME_COLUMNS = ["key", "status", "error_code", "message", "retry_at"]


class ClickIdKind(StrEnum):
    """How a conversion is matched to its ad click."""

    GCLID = "gclid"
    GBRAID = "gbraid"  # iOS app-to-web
    WBRAID = "wbraid"  # iOS web-to-app; Google cannot adjust these later
    USER = "email/phone"  # no click id: enhanced conversions for leads (hashed e-mail/phone)


BRAIDS = frozenset({ClickIdKind.GBRAID, ClickIdKind.WBRAID})


# -- what became of a conversion --------------------------------------------------------------


class Outcome(StrEnum):
    """A conversion's status in the ledger, and in the outcome frame a destination returns."""

    PENDING = "pending"  # marked before sending; a crash leaves it so, the next run resends
    UPLOADED = "uploaded"  # Google accepted it
    DUPLICATE = "duplicate"  # Google already had it (same order id): done
    WRITTEN = "written"  # in an import file, which Google has not necessarily fetched yet
    SUBMITTED = "submitted"  # an asynchronous destination took it; the verdict comes later
    PARTIAL = "partial"  # its request was confirmed with failures Google did not attribute
    REJECTED = "rejected"  # Google refused it for a reason in the row: fix it in the CRM
    RETRY_AFTER = "retry_after"  # refused for now (e.g. a click too recent), with a time
    FAILED = "failed"  # not sent (the destination stopped first): sent again next run
    HELD = "held"  # refused until the account changes (e.g. data terms): sent again next run


# Went out: never sent again (a value change goes as a restatement).
DONE = frozenset(
    {Outcome.UPLOADED, Outcome.DUPLICATE, Outcome.SUBMITTED, Outcome.PARTIAL, Outcome.WRITTEN}
)
# Counted as "sent" in a run's summary (a submitted one is counted as submitted).
DELIVERED = frozenset({Outcome.UPLOADED, Outcome.DUPLICATE, Outcome.WRITTEN})
# Not out yet: the next run sends these again.
UNSENT = frozenset({Outcome.PENDING, Outcome.FAILED, Outcome.HELD})


class Restatement(StrEnum):
    """A value change sent as an adjustment: restated, or an Outcome's ``retry_after`` (too
    young) or ``rejected`` (too old, a wbraid, refused: the old value stands)."""

    RESTATED = "restated"


class State(StrEnum):
    """A built conversion compared with the ledger: what the run does with it."""

    NEW = "new"
    SENT = "already sent"
    CHANGED = "value changed"  # sent, with another value: restated, never re-uploaded
    PENDING = "pending"  # marked or failed before: sent again
    RETRY_DUE = "retry due"
    RETRY_LATER = "retry later"
    REJECTED_BEFORE = "rejected before"  # the same row Google refused: not sent again
    FIXED = "fixed since rejected"  # refused before, its identifier or time changed since


TO_SEND = frozenset({State.NEW, State.PENDING, State.RETRY_DUE, State.FIXED})


class RunStatus(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # a signal, or a process that died (found by the next run)


class RequestState(StrEnum):
    """An asynchronous request's verdict, as the destination decided it from Google's answer."""

    SUBMITTED = "submitted"  # not confirmed yet
    PROCESSING = "processing"  # asked; Google is not done
    UNKNOWN = "unknown"  # asked; Google does not know yet (given up on after a bound)
    SUCCESS = "success"
    PARTIAL = "partial"  # some events failed; Google does not say which
    DUPLICATE = "duplicate"  # failed only because Google already had every event: done
    RETRY = "retry"  # some events were too recent (TOO_RECENT_CLICK): all sent again later
    FAILED = "failed"  # failed as a whole: its rows go out again


# -- why a row was left out -------------------------------------------------------------------


class RowKind(StrEnum):
    """*Invalid* rows hold data someone must fix (in the CRM or the mapping): they make exit
    code 1 and the red table. *Skipped* rows are simply not attributable to an ad click (no
    identifier, a click older than the lookback): counted per reason, never an alarm."""

    INVALID = "invalid"
    SKIPPED = "skipped"


class Reason(StrEnum):
    """The code beside a rejected row's words: what status, the report and alerts group by."""

    ROW_MALFORMED = "row_malformed"  # not as many fields as the header: cells unusable
    UNKNOWN_STAGE = "unknown_stage"
    STAGE_EMPTY = "stage_empty"
    LEAD_ID_EMPTY = "lead_id_empty"
    LEAD_ID_TOO_LONG = "lead_id_too_long"
    TIME_UNREADABLE = "time_unreadable"
    TIME_EMPTY = "time_empty"
    TIME_IN_FUTURE = "time_in_future"
    BEFORE_CREATED = "before_created"
    VALUE_EMPTY = "value_empty"
    VALUE_NOT_A_NUMBER = "value_not_a_number"
    VALUE_NEGATIVE = "value_negative"
    VALUE_AMBIGUOUS = "value_ambiguous"  # 1.500: fifteen hundred or one and a half?
    VALUE_TOO_LARGE = "value_too_large"  # infinite, or above the mapping's max_value
    CURRENCY_INVALID = "currency_invalid"
    CLICK_ID_MALFORMED = "click_id_malformed"
    BOTH_BRAIDS = "both_braids"
    IDENTIFIER_UNUSABLE = "identifier_unusable"
    CONSENT_INVALID = "consent_invalid"
    NO_IDENTIFIER = "no_identifier"
    EXPIRED = "expired"

    @property
    def kind(self) -> RowKind:
        return RowKind.SKIPPED if self in SKIPPED_REASONS else RowKind.INVALID


SKIPPED_REASONS = frozenset({Reason.NO_IDENTIFIER, Reason.EXPIRED})
