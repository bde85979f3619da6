"""Click ids and user identifiers: what Google accepts, normalised and hashed, vectorised.

Raw emails and phone numbers stop here: only their SHA-256 hex digests leave this module, and
rejection reasons never quote them.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

# Click ids are URL-safe base64 text; anything shorter than this is a placeholder or a typo.
CLICK_ID_PATTERN = r"^[A-Za-z0-9_\-]{16,512}$"
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$"
_GMAIL_DOMAINS = r"@(?:gmail|googlemail)\.com$"


def valid_click_id(values: pd.Series) -> pd.Series:
    return values.str.fullmatch(CLICK_ID_PATTERN).fillna(False).astype(bool)


def normalise_email(values: pd.Series) -> pd.Series:
    """Trim and lowercase; drop dots in the local part of gmail addresses (Google's rule).

    Returns missing for empty or malformed addresses.
    """
    email = values.str.strip().str.lower()
    gmail = email.str.contains(_GMAIL_DOMAINS, na=False)
    if gmail.any():
        local_domain = email[gmail].str.split("@", n=1, expand=True)
        email[gmail] = local_domain[0].str.replace(".", "", regex=False) + "@" + local_domain[1]
    return email.where(email.str.fullmatch(_EMAIL).fillna(False).astype(bool))


def normalise_phone(values: pd.Series, country_code: str | None) -> pd.Series:
    """E.164 (+4915112345678): separators removed, 00 -> +, national numbers get the country code.

    Returns missing where the result is not 8 to 15 digits after the +.
    """
    phone = values.str.replace(r"[\s\-().\/]", "", regex=True)
    phone = phone.str.replace(r"^00", "+", regex=True)
    if country_code:
        national = phone.str.fullmatch(r"\d+").fillna(False).astype(bool)
        phone = phone.mask(national, "+" + country_code + phone.str.replace(r"^0", "", regex=True))
    return phone.where(phone.str.fullmatch(r"\+\d{8,15}").fillna(False).astype(bool))


def sha256_hex(values: pd.Series) -> pd.Series:
    """SHA-256 hex of each present value, hashing each distinct value once."""
    present = values.dropna()
    if present.empty:
        return pd.Series(pd.NA, index=values.index, dtype="string")
    codes, uniques = pd.factorize(present)
    digests = np.array(
        [hashlib.sha256(str(u).encode("utf-8")).hexdigest() for u in uniques], dtype=object
    )
    out = pd.Series(pd.NA, index=values.index, dtype="string")
    out[present.index] = digests[codes]
    return out
