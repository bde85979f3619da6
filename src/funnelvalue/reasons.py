"""Why a row did not become a conversion: a code beside the words, and which kind it is.

*Invalid* rows hold data someone must fix (in the CRM or the mapping): they make exit code 1
and the red table. *Skipped* rows are simply not attributable to an ad click (no identifier,
the click is older than the lookback): counted per reason, never an alarm.
"""

from __future__ import annotations

INVALID = "invalid"
SKIPPED = "skipped"

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
CURRENCY_INVALID = "currency_invalid"
CLICK_ID_MALFORMED = "click_id_malformed"
BOTH_BRAIDS = "both_braids"
IDENTIFIER_UNUSABLE = "identifier_unusable"
CONSENT_INVALID = "consent_invalid"
NO_IDENTIFIER = "no_identifier"
EXPIRED = "expired"

SKIPPED_CODES = frozenset({NO_IDENTIFIER, EXPIRED})


def kind_of(code: str) -> str:
    return SKIPPED if code in SKIPPED_CODES else INVALID
