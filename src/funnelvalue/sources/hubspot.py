"""HubSpot through its CRM v3 REST API: deals by pipeline stage, or contacts by lifecycle stage.

Each stage a record has entered becomes its own row, timed by HubSpot's "date entered"
properties (``hs_v2_date_entered_<stage>``, older portals ``hs_date_entered_<stage>`` /
``hs_lifecyclestage_<stage>_date``), so a deal that went lead -> qualified -> won gives three
conversions with their own times. The click id, email and phone live on the deal's contact.

Incremental runs use the search API (records modified since the watermark). Search returns at
most 10,000 results per query, so a larger catch-up is read in windows: sorted by modification
time, each window restarts at the last time seen. A first run (no watermark) pages the list API,
which has no such cap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd
import requests

from funnelvalue import retrying
from funnelvalue.errors import ConfigError, SourceError
from funnelvalue.leads import CANONICAL, canonical_header, normalise
from funnelvalue.mapping import Mapping
from funnelvalue.retrying import Retryable
from funnelvalue.settings import HubSpotSettings, Settings
from funnelvalue.sources.base import Reading, with_retries

log = logging.getLogger(__name__)
T = TypeVar("T")

SEARCH_WINDOW = 10_000  # HubSpot's search API never pages past this many results
SEARCH_PAGE = 200
LIST_PAGE = 100
ASSOCIATION_BATCH = 1_000
READ_BATCH = 100
SEARCH_INTERVAL = 0.22  # seconds between search requests: HubSpot allows 5 a second per token
BURST_RESERVE = 2  # calls left in HubSpot's burst window at which the client waits it out

# The API version of each endpoint family, in one place: HubSpot supports /crm/v4
# associations until March 2027 and /crm/v3 until September 2027; their date-versioned
# successors (first version 2026-03, e.g. /crm/associations/2026-03/...) are a one-line move.
OBJECTS = "/crm/v3/objects"
PIPELINES = "/crm/v3/pipelines"
PROPERTIES = "/crm/v3/properties"
ASSOCIATIONS = "/crm/v4/associations"

# What a Service Key (or a legacy private app, or an OAuth token) needs, per mode.
SCOPES = {
    "deals": ("crm.objects.deals.read", "crm.schemas.deals.read", "crm.objects.contacts.read"),
    "contacts": ("crm.objects.contacts.read", "crm.schemas.contacts.read"),
}
TOKEN_HELP = (
    "create a Service Key in HubSpot (Development -> Keys -> Service keys; older menus: "
    "Settings -> Integrations -> Service Keys) with the scopes {scopes}, and put it in "
    "FUNNELVALUE_HUBSPOT__ACCESS_TOKEN (.env); a legacy private app token or an OAuth access "
    "token works the same way"
)


def scopes_for(mode: str) -> str:
    return ", ".join(SCOPES[mode])


class HubSpotClient:
    """requests with the token, a timeout, retries for 429/5xx, and HubSpot's errors in words.

    It also keeps under the limits instead of only recovering from them: search requests are
    spaced SEARCH_INTERVAL apart (HubSpot allows 5 a second per token), and when a response
    says the burst allowance is nearly used up (X-HubSpot-RateLimit-Remaining), the next call
    waits for the window to pass.
    """

    def __init__(self, token: str, base_url: str, timeout: float, mode: str = "deals") -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.mode = mode  # deals | contacts: which scopes the errors ask for
        self._last_search = 0.0
        self._pause = 0.0  # seconds to wait before the next call (burst window nearly used up)
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        )

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body=body)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            self._keep_under_limits(path)
            try:
                response = self.session.request(
                    method, self.base_url + path, params=params, json=body, timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise Retryable(f"cannot reach HubSpot ({type(exc).__name__})") from exc
            self._note_limits(response)
            return self._checked(response)

        return with_retries("HubSpot", f"{method} {path}", once)

    def _keep_under_limits(self, path: str) -> None:
        wait = self._pause
        if path.endswith("/search"):
            wait = max(wait, SEARCH_INTERVAL - (time.monotonic() - self._last_search))
            self._last_search = time.monotonic() + max(wait, 0.0)
        self._pause = 0.0
        if wait > 0:
            retrying.sleep(wait)

    def _note_limits(self, response: requests.Response) -> None:
        remaining = response.headers.get("X-HubSpot-RateLimit-Remaining")
        interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
        if (
            remaining is not None
            and interval
            and remaining.isdigit()
            and interval.isdigit()
            and int(remaining) <= BURST_RESERVE
        ):
            self._pause = int(interval) / 1000
            log.info("HubSpot burst allowance nearly used; waiting %.1f s", self._pause)

    def _checked(self, response: requests.Response) -> dict[str, Any]:
        status = response.status_code
        scopes = scopes_for(self.mode)
        if status == 429 or status >= 500:
            raise Retryable(
                f"HTTP {status} {_message(response)}", retry_after=_retry_after(response)
            )
        if status == 401:
            raise ConfigError(
                "HubSpot refused the access token (HTTP 401; expired or revoked?); "
                + TOKEN_HELP.format(scopes=scopes)
            )
        if status == 403:
            missing = _missing_scopes(response)
            needs = f"it lacks {', '.join(missing)}" if missing else f"it needs {scopes}"
            raise ConfigError(
                f"HubSpot denied access (HTTP 403: {_message(response)}): {needs}; add the "
                "scopes to the Service Key (or app) and keep the same token"
            )
        if status >= 400:
            raise SourceError(f"HubSpot answered HTTP {status}: {_message(response)}")
        data: dict[str, Any] = response.json() if response.content else {}
        return data

    def close(self) -> None:
        self.session.close()


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason or ""
    message = body.get("message", "") if isinstance(body, dict) else ""
    category = body.get("category", "") if isinstance(body, dict) else ""
    return f"{category}: {message}".strip(": ")


def _missing_scopes(response: requests.Response) -> list[str]:
    """The scopes a MISSING_SCOPES answer names (errors[].context.requiredGranularScopes)."""
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors", []) if isinstance(body, dict) else []
    found = [
        scope
        for error in errors
        if isinstance(error, dict)
        for scope in (error.get("context") or {}).get("requiredGranularScopes", [])
    ]
    return list(dict.fromkeys(found))


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, (moment - datetime.now(moment.tzinfo)).total_seconds())


@dataclass(frozen=True)
class Stage:
    id: str
    label: str
    date_properties: tuple[str, ...]  # newest convention first


@dataclass(frozen=True)
class ObjectKind:
    """What differs between the deal funnel and the lifecycle funnel."""

    name: str  # deals | contacts
    stage_property: str
    modified_property: str
    created_property: str


DEALS = ObjectKind("deals", "dealstage", "hs_lastmodifieddate", "createdate")
CONTACTS = ObjectKind("contacts", "lifecyclestage", "lastmodifieddate", "createdate")


@dataclass
class HubSpotSource(Reading):
    client: HubSpotClient
    config: HubSpotSettings
    mapping: Mapping
    incremental: ClassVar[bool] = True
    pipeline_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings, mapping: Mapping) -> HubSpotSource:
        config = settings.hubspot
        if config.access_token is None or not config.access_token.get_secret_value():
            raise ConfigError(
                "source hubspot has no access token yet; "
                + TOKEN_HELP.format(scopes=scopes_for(config.object))
            )
        client = HubSpotClient(
            config.access_token.get_secret_value(),
            config.base_url,
            config.timeout_seconds,
            config.object,
        )
        return cls(client, config, mapping)

    @property
    def kind(self) -> ObjectKind:
        return DEALS if self.config.object == "deals" else CONTACTS

    @property
    def name(self) -> str:
        return f"hubspot:{self.config.object}"

    def _leads(self, since: datetime | None) -> pd.DataFrame:
        try:
            stages = self._stages()
            records = list(self._records(stages, since))
            contacts = self._deal_contacts(records) if self.kind is DEALS else {}
        finally:
            self.client.close()
        log.info("HubSpot: %d %s changed since %s", len(records), self.kind.name, since or "ever")
        frame = self._rows(records, stages, contacts)
        return normalise(frame, timezone=self.mapping.timezone)

    # -- stages -------------------------------------------------------------------------

    def _stages(self) -> list[Stage]:
        if self.kind is CONTACTS:
            options = self.client.get(f"{PROPERTIES}/contacts/lifecyclestage")["options"]
            return [
                Stage(
                    o["value"],
                    o["label"],
                    (
                        f"hs_v2_date_entered_{o['value']}",
                        f"hs_lifecyclestage_{o['value']}_date",
                    ),
                )
                for o in options
            ]
        pipelines = self.client.get(f"{PIPELINES}/deals")["results"]
        wanted = set(self.config.pipelines)
        if wanted:
            known = {p["id"] for p in pipelines} | {p["label"] for p in pipelines}
            unknown = sorted(wanted - known)
            if unknown:
                raise ConfigError(
                    f"hubspot.pipelines names {', '.join(unknown)}, which this portal does not "
                    f"have (pipelines: {', '.join(p['label'] for p in pipelines)})"
                )
            pipelines = [p for p in pipelines if p["id"] in wanted or p["label"] in wanted]
        self.pipeline_ids = [p["id"] for p in pipelines]
        return [
            Stage(
                s["id"], s["label"], (f"hs_v2_date_entered_{s['id']}", f"hs_date_entered_{s['id']}")
            )
            for p in pipelines
            for s in p["stages"]
        ]

    # -- records -------------------------------------------------------------------------

    def _properties(self, stages: Sequence[Stage]) -> list[str]:
        kind = self.kind
        wanted = [kind.stage_property, kind.modified_property, kind.created_property]
        if kind is DEALS:
            wanted += ["pipeline", "amount", "deal_currency_code"]
        else:
            wanted += self._contact_properties()
        wanted += [p for stage in stages for p in stage.date_properties]
        # Columns the mapping reads values from (from_column) are properties of the record.
        wanted += sorted(self.mapping.value_columns - set(CANONICAL))
        return list(dict.fromkeys(wanted))

    def _contact_properties(self) -> list[str]:
        c = self.config
        return [c.click_id_property, c.email_property, c.phone_property]

    def _records(self, stages: Sequence[Stage], since: datetime | None) -> Iterator[dict[str, Any]]:
        properties = self._properties(stages)
        pipelines = set(self.pipeline_ids)
        records = self._list(properties) if since is None else self._search(properties, since)
        for record in records:
            props = record["properties"]
            if (
                self.kind is DEALS
                and self.config.pipelines
                and props.get("pipeline") not in pipelines
            ):
                continue
            modified = pd.Timestamp(props.get(self.kind.modified_property) or record["updatedAt"])
            if self._high_water is None or modified > self._high_water:
                self._high_water = modified
            yield record

    def _list(self, properties: list[str]) -> Iterator[dict[str, Any]]:
        """Every record, through the list API (no 10,000 cap)."""
        params: dict[str, Any] = {"limit": LIST_PAGE, "properties": ",".join(properties)}
        while True:
            page = self.client.get(f"{OBJECTS}/{self.kind.name}", params)
            yield from page.get("results", [])
            after = page.get("paging", {}).get("next", {}).get("after")
            if not after:
                return
            params = {**params, "after": after}

    def _search(self, properties: list[str], since: datetime) -> Iterator[dict[str, Any]]:
        """Records modified since ``since``, in windows of at most SEARCH_WINDOW results."""
        modified = self.kind.modified_property
        start = pd.Timestamp(since)
        start = start.tz_localize("UTC") if start.tzinfo is None else start
        seen: set[str] = set()
        while True:
            filters: list[dict[str, Any]] = [
                {"propertyName": modified, "operator": "GTE", "value": str(_millis(start))}
            ]
            if self.kind is DEALS and self.config.pipelines:
                filters.append(
                    {"propertyName": "pipeline", "operator": "IN", "values": self.pipeline_ids}
                )
            body: dict[str, Any] = {
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
                "properties": properties,
                "limit": SEARCH_PAGE,
            }
            last: pd.Timestamp | None = None
            while True:
                page = self.client.post(f"{OBJECTS}/{self.kind.name}/search", body)
                for record in page.get("results", []):
                    last = pd.Timestamp(record["properties"].get(modified) or record["updatedAt"])
                    if record["id"] not in seen:
                        seen.add(record["id"])
                        yield record
                after = page.get("paging", {}).get("next", {}).get("after")
                if not after:
                    return
                if int(after) >= SEARCH_WINDOW:
                    break  # the window is full: start a new search where this one ended
                body = {**body, "after": after}
            if last is None or last <= start:
                raise SourceError(
                    f"more than {SEARCH_WINDOW:,} HubSpot {self.kind.name} share the modification "
                    f"time {start}; run once with --full-refresh to read them through the list API"
                )
            start = last

    def _deal_contacts(self, deals: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Deal id -> the properties of its contact (the first one with a click id)."""
        links = self._associations([d["id"] for d in deals])
        contact_ids = sorted({c for cs in links.values() for c in cs}, key=_numeric)
        contacts: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(contact_ids, READ_BATCH):
            page = self.client.post(
                f"{OBJECTS}/contacts/batch/read",
                {"properties": self._contact_properties(), "inputs": [{"id": i} for i in chunk]},
            )
            for result in page.get("results", []):
                contacts[str(result["id"])] = result["properties"]
        click = self.config.click_id_property
        chosen: dict[str, dict[str, Any]] = {}
        for deal, linked in links.items():
            found = [contacts[c] for c in sorted(linked, key=_numeric) if c in contacts]
            with_click = [c for c in found if c.get(click)]
            if with_click or found:
                chosen[deal] = (with_click or found)[0]
        return chosen

    def _associations(self, deal_ids: Sequence[str]) -> dict[str, list[str]]:
        """Deal id -> its contact ids. A deal with more contacts than one page holds comes
        back with its own ``paging.next.after``: that deal is asked again with the cursor
        until its list is complete (the batch endpoint pages per record, not per request)."""
        links: dict[str, list[str]] = {}
        inputs: list[dict[str, str]] = [{"id": str(i)} for i in deal_ids]
        asked: set[tuple[str, str]] = set()  # a cursor handed out twice would loop forever
        while inputs:
            more: list[dict[str, str]] = []
            for chunk in _chunks(inputs, ASSOCIATION_BATCH):
                page = self.client.post(
                    f"{ASSOCIATIONS}/deals/contacts/batch/read", {"inputs": list(chunk)}
                )
                for result in page.get("results", []):
                    deal = str(result["from"]["id"])
                    links.setdefault(deal, []).extend(str(t["toObjectId"]) for t in result["to"])
                    after = (result.get("paging") or {}).get("next", {}).get("after")
                    if after and (deal, str(after)) not in asked:
                        asked.add((deal, str(after)))
                        more.append({"id": deal, "after": str(after)})
            inputs = more
        return links

    # -- rows ----------------------------------------------------------------------------

    def _rows(
        self,
        records: Sequence[dict[str, Any]],
        stages: Sequence[Stage],
        contacts: dict[str, dict[str, Any]],
    ) -> pd.DataFrame:
        """One row per record per stage entered; the current stage if no date says when."""
        kind, config = self.kind, self.config
        ids = pd.Index([str(r["id"]) for r in records], name="lead_id", dtype="object")
        props = _frame([r["properties"] for r in records], ids)
        people = props if kind is CONTACTS else _frame([contacts.get(i, {}) for i in ids], ids)
        # When each stage was entered: one column per stage label (pipelines may share labels).
        labels = list(dict.fromkeys(s.label for s in stages))
        entered = pd.DataFrame(
            {
                label: _first_present(
                    props, [p for s in stages if s.label == label for p in s.date_properties]
                )
                for label in labels
            },
            index=ids,
        )
        dated = entered.reset_index().melt(
            id_vars="lead_id", var_name="stage", value_name="stage_changed_at"
        )
        dated = dated[dated["stage_changed_at"].notna()]
        raw_stage = _column(props, kind.stage_property)
        current = pd.DataFrame(
            {
                "lead_id": ids,
                "stage": raw_stage.map({s.id: s.label for s in stages}).fillna(raw_stage).array,
                "stage_changed_at": _column(props, kind.modified_property).array,
            }
        )
        reached = pd.MultiIndex.from_frame(dated[["lead_id", "stage"]])
        undated = current["stage"].notna() & ~pd.MultiIndex.from_frame(
            current[["lead_id", "stage"]]
        ).isin(reached)
        if undated.any():
            message = (
                f"{int(undated.sum())} HubSpot {kind.name} have no 'date entered' for their "
                "current stage; their last modification time is used instead"
            )
            log.warning(message)
            self._warnings.append(message)
        rows = pd.concat([dated, current[undated]], ignore_index=True)
        extra = sorted(self.mapping.value_columns - set(CANONICAL))
        facts = pd.DataFrame(
            {
                "created_at": _column(props, kind.created_property),
                "gclid": _column(people, config.click_id_property),
                "email": _column(people, config.email_property),
                "phone": _column(people, config.phone_property),
                "amount": _column(props, "amount"),
                "currency": _column(props, "deal_currency_code"),
                **{canonical_header(c): _column(props, c) for c in extra},
            },
            index=ids,
        )
        frame = rows.merge(facts, left_on="lead_id", right_index=True, how="left")
        frame["source_row"] = np.arange(1, len(frame) + 1)
        return frame.reset_index(drop=True)


def _frame(properties: list[dict[str, Any]], index: pd.Index) -> pd.DataFrame:
    """HubSpot sends unset properties as null or "": both are missing here."""
    frame = (
        pd.DataFrame.from_records(properties, index=index)
        if properties
        else pd.DataFrame(index=index)
    )
    return frame.mask(frame == "")


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series(pd.NA, index=frame.index, dtype="object")


def _first_present(frame: pd.DataFrame, names: Sequence[str]) -> pd.Series:
    """Per row, the first of ``names`` that has a value (newest property convention first)."""
    result = pd.Series(pd.NA, index=frame.index, dtype="object")
    for name in names:
        result = result.mask(result.isna(), _column(frame, name))
    return result


def _millis(moment: pd.Timestamp) -> int:
    return int(moment.timestamp() * 1000)


def _numeric(value: str) -> tuple[int, str]:
    return (int(value), value) if value.isdigit() else (0, value)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
