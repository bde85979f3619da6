"""Secrets and personal data never reach a log line, a message, the ledger or a report.

The rule is kept at the source (rejection reasons name the column and the problem, never the
cell) and enforced again at every way out: error messages (``FunnelvalueError.__str__``), log
records (``RedactingFilter`` on the handlers) and whatever the pipeline stores. ``scrub``
removes credential-shaped strings (bearer tokens, HubSpot and Google tokens, JWTs, Salesforce
session ids, ``password=…`` pairs, passwords in URLs), the exact values of the secrets the
settings hold, and e-mail addresses and international phone numbers.

At the bottom of the house with ``vocabulary``: it imports nothing from funnelvalue.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

HIDDEN = "[redacted]"

_CREDENTIALS = [
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bpat-[a-z]{2,4}\d?-[0-9A-Za-z-]{8,}"),  # HubSpot private app / service keys
    re.compile(r"\bya29\.[0-9A-Za-z._-]{10,}"),  # Google OAuth access tokens
    re.compile(r"\b1//[0-9A-Za-z._-]{10,}"),  # Google OAuth refresh tokens
    re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"),  # Google API keys
    re.compile(r"\beyJ[0-9A-Za-z_-]{6,}\.[0-9A-Za-z_-]{6,}\.[0-9A-Za-z_-]{6,}"),  # JWTs
    re.compile(r"\b00D[0-9A-Za-z]{12,15}![0-9A-Za-z._]{20,}"),  # Salesforce session ids
]
# key=value / "key": "value" pairs whose value is a secret: keep the key, hide the value.
_PAIRS = re.compile(
    r"(?i)\b((?:(?:access|refresh|id)_?)?token|client_secret|consumer_secret|password|passwd|pwd|"
    r"api_?key|developer_token|security_token|secret|authorization)"
    r"(\"?'?\s*[:=]\s*\"?'?)[^\s\"'&,;}]+"
)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")
# An address, but not the user part of a URL (postgresql://fv@db.example.com keeps its host).
EMAIL = re.compile(
    r"(?<![\w.%+/:-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
PHONE = re.compile(r"(?<![\w+])\+\d[\d\s().-]{6,}\d")

_secrets: set[str] = set()

# Each pattern with what replaces a match, in the order applied.
_REPLACEMENTS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    *[(pattern, HIDDEN) for pattern in _CREDENTIALS],
    (_PAIRS, lambda m: f"{m.group(1)}{m.group(2)}{HIDDEN}"),
    (_URL_PASSWORD, rf"\1{HIDDEN}@"),
    (EMAIL, "[e-mail]"),
    (PHONE, "[phone]"),
]


def _scoped(pattern: re.Pattern[str]) -> str:
    """A pattern's text with its leading inline flags scoped to it, to join into one."""
    flags = re.match(r"\(\?([aiLmsux]+)\)", pattern.pattern)
    if flags is None:
        return f"(?:{pattern.pattern})"
    return f"(?{flags.group(1)}:{pattern.pattern[flags.end() :]})"


# Every pattern as one search: text that none of them matches anywhere (nearly every cell and
# message) is returned after one pass instead of eleven substitutions.
_ANY = re.compile("|".join(_scoped(pattern) for pattern, _ in _REPLACEMENTS))


def remember(*values: str | None) -> None:
    """Secrets the settings hold: their exact values are hidden wherever they appear."""
    _secrets.update(v for v in values if v and len(v) >= 6)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    hidden = {*_secrets, *secrets}
    if _ANY.search(text) is None and not any(secret in text for secret in hidden):
        return text  # nothing to hide: every replacement would leave it as it is
    return _scrub_all(text, hidden)


def _scrub_all(text: str, hidden: set[str]) -> str:
    for secret in sorted(hidden, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    for pattern, replacement in _REPLACEMENTS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Scrubs every record a handler writes (its arguments are merged in first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_text is None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
