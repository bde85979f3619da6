"""Click ids and user identifiers: what Google accepts, normalised and hashed, vectorised.

Raw emails and phone numbers stop here: only their SHA-256 hex digests leave this module, and
rejection reasons never quote them.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from funnelvalue.frames import arrow_text, labels

# Click ids are URL-safe base64 text; anything shorter than this is a placeholder or a typo.
CLICK_ID_PATTERN = r"^[A-Za-z0-9_\-]{16,512}$"
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$"
_GMAIL_DOMAINS = r"@(?:gmail|googlemail)\.com$"


def valid_click_id(values: pd.Series) -> pd.Series:
    """Whether each value has a click id's shape (missing: no), by Arrow's RE2 directly:
    pandas' fullmatch adds a pass to fill and one to convert (0.19 -> 0.12 s per 700k)."""
    found = pc.match_substring_regex(arrow_text(values), CLICK_ID_PATTERN)
    flags = found.fill_null(False).to_numpy(zero_copy_only=False)
    return pd.Series(flags, index=values.index, dtype=bool)


def normalise_email(values: pd.Series) -> pd.Series:
    """Trim and lowercase; drop dots in the local part of gmail addresses (Google's rule).

    Returns missing for empty or malformed addresses.
    """
    email = values.str.strip().str.lower()
    gmail = email.str.contains(_GMAIL_DOMAINS, na=False)
    if gmail.any():  # Google's rule for its own addresses: no dots, no +suffix
        local_domain = email[gmail].str.split("@", n=1, expand=True)
        local = (
            local_domain[0].str.replace(r"\+.*$", "", regex=True).str.replace(".", "", regex=False)
        )
        email[gmail] = local + "@" + local_domain[1]
    return email.where(email.str.fullmatch(_EMAIL).fillna(False).astype(bool))


def normalise_phone(values: pd.Series, country_code: str | None) -> pd.Series:
    """E.164 (+4915112345678) by libphonenumber's rules for every country (the phonenumbers
    package): a national number gets ``country_code`` (Italy keeps its leading 0, the US has
    no trunk 0 to drop), ``00`` and ``+`` prefixes are understood. Each distinct value is
    parsed once. Missing where the number is not a valid number of its country (Google could
    not match it anyway).
    """
    region = _region(country_code)
    present = values.dropna()
    out = pd.Series(pd.NA, index=values.index, dtype="string")
    if present.empty:
        return out
    codes, uniques = pd.factorize(present)
    formatted = np.array([_e164(str(raw), region) for raw in uniques], dtype=object)
    out[present.index] = formatted[codes]
    return out


def _region(country_code: str | None) -> str | None:
    """The region libphonenumber reads national numbers in: 49 -> DE, 1 -> US, 39 -> IT."""
    if not country_code:
        return None
    region = phonenumbers.region_code_for_country_code(int(country_code))
    return None if region == phonenumbers.UNKNOWN_REGION else region


def _e164(raw: str, region: str | None) -> str | None:
    text = raw.strip()
    if text.startswith("00"):  # the international prefix most of the world dials
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):  # a number its country could have issued
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def sha256_hex(values: pd.Series) -> pd.Series:
    """SHA-256 hex of each present value, hashing each distinct value once."""
    codes, digests = sha256_codes(values)
    return pd.Series(labels(digests, codes), index=values.index)


def sha256_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(each value's code into ``digests``, -1 where missing; the SHA-256 hex digest of each
    distinct value): a caller places them into a longer column without another pass."""
    codes, uniques = pd.factorize(values)
    return codes, sha256_hexes(pa.array(uniques, pa.string())) if len(uniques) else []


def sha256_hexes(texts: pa.Array | pa.ChunkedArray) -> list[str]:
    """The SHA-256 hex digest of each text's UTF-8 bytes, taken as Arrow holds them: no
    Python str is encoded value by value (300k emails: 0.35 -> 0.15 s). No nulls."""
    sha256 = hashlib.sha256
    return [sha256(data).hexdigest() for data in texts.cast(pa.binary()).to_pylist()]
