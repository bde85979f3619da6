"""Salesforce through simple-salesforce: Lead statuses and Opportunity stages as one funnel.

The click id is usually a custom field on the Lead (``GCLID__c``, filled by the web-to-lead
form). When a Lead converts, its Opportunity's stages are rows of the *same* lead (the Lead's
Id), so the Opportunity inherits the Lead's click id, email and phone; an Opportunity created
without a Lead is its own lead. Stage times come from OpportunityHistory (always kept) and
LeadHistory (kept when Field History Tracking is on for Lead Status).

Incremental runs select records by ``SystemModstamp`` (Salesforce's own "anything changed"
clock). Every query goes through query_all (queryMore paging); the org's daily API usage is
checked from the response headers and the run stops before exhausting it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceRefusedRequest,
)

from funnelvalue.errors import ConfigError, SourceError
from funnelvalue.leads import normalise
from funnelvalue.mapping import Mapping
from funnelvalue.retrying import Retryable
from funnelvalue.settings import SalesforceSettings, Settings
from funnelvalue.sources.base import Reading, with_retries

log = logging.getLogger(__name__)

T = TypeVar("T")

IDS_PER_QUERY = 200  # 18-character ids: keeps each SOQL statement far below its length limit
API_USAGE_WARN = 0.8
API_USAGE_STOP = 0.95  # leave the rest of the day's API calls to the org's other integrations


class _TimeoutSession(requests.Session):
    """simple-salesforce sets no timeout; a hung connection must not hang the daily job."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


@dataclass
class SalesforceSource(Reading):
    config: SalesforceSettings
    mapping: Mapping
    connect: Callable[[], Salesforce]
    incremental: ClassVar[bool] = True

    @classmethod
    def from_settings(cls, settings: Settings, mapping: Mapping) -> SalesforceSource:
        config = settings.salesforce
        login = _login(config)  # checks that one way of logging in is complete
        return cls(config, mapping, login)

    @property
    def name(self) -> str:
        where = self.config.instance_url or self.config.username or self.config.domain
        return f"salesforce:{where}"

    def _leads(self, since: datetime | None) -> pd.DataFrame:
        sf = self._call("log in", self.connect)
        fields = {obj: self._fields(sf, obj) for obj in ("Lead", "Opportunity")}
        click = self.config.click_id_field
        if click not in fields["Lead"]:
            raise ConfigError(
                f"Salesforce Leads have no field {click} (salesforce.click_id_field); "
                + _candidates(fields["Lead"])
            )
        opportunity_click = self.config.opportunity_click_id_field
        if opportunity_click and opportunity_click not in fields["Opportunity"]:
            raise ConfigError(
                f"Salesforce Opportunities have no field {opportunity_click} "
                "(salesforce.opportunity_click_id_field); " + _candidates(fields["Opportunity"])
            )
        if opportunity_click is None and click in fields["Opportunity"]:
            opportunity_click = click
        reader = _Reader(self, sf)
        where = "" if since is None else f" WHERE SystemModstamp >= {_soql_time(since)}"
        lead_columns = (
            f"Id, Status, CreatedDate, LastModifiedDate, SystemModstamp, Email, Phone, {click}, "
            "IsConverted, ConvertedOpportunityId"
        )
        opportunity_columns = "Id, StageName, Amount, CreatedDate, LastModifiedDate, SystemModstamp"
        if "CurrencyIsoCode" in fields["Opportunity"]:
            opportunity_columns += ", CurrencyIsoCode"
        if opportunity_click:
            opportunity_columns += f", {opportunity_click}"

        leads = reader.query(f"SELECT {lead_columns} FROM Lead{where}")
        opportunities = reader.query(f"SELECT {opportunity_columns} FROM Opportunity{where}")
        # A Lead that changed after converting may fix its Opportunity's rows (a click id
        # added late): read those Opportunities too, and the Leads behind changed ones.
        known = {o["Id"] for o in opportunities}
        converted = {x["ConvertedOpportunityId"] for x in leads if x["ConvertedOpportunityId"]}
        opportunities += reader.query_in(
            f"SELECT {opportunity_columns} FROM Opportunity", "Id", sorted(converted - known)
        )
        linked = {x["ConvertedOpportunityId"] for x in leads}
        leads += reader.query_in(
            f"SELECT {lead_columns} FROM Lead",
            "ConvertedOpportunityId",
            sorted({o["Id"] for o in opportunities} - linked),
        )
        for record in (*leads, *opportunities):
            stamp = pd.Timestamp(record["SystemModstamp"])
            if self._high_water is None or stamp > self._high_water:
                self._high_water = stamp
        history = reader.query_in(
            "SELECT OpportunityId, StageName, CreatedDate FROM OpportunityHistory",
            "OpportunityId",
            [o["Id"] for o in opportunities],
        )
        lead_history = (
            reader.query_in(
                "SELECT LeadId, OldValue, NewValue, CreatedDate FROM LeadHistory "
                "WHERE Field = 'Status'",
                "LeadId",
                [x["Id"] for x in leads],
            )
            if "Lead" in self.config.objects
            else []
        )
        log.info(
            "Salesforce: %d leads, %d opportunities changed since %s",
            len(leads),
            len(opportunities),
            since or "ever",
        )
        frame = self._rows(leads, opportunities, history, lead_history, click, opportunity_click)
        return normalise(frame, timezone=self.mapping.timezone)

    # -- calls ---------------------------------------------------------------------------

    def _fields(self, sf: Salesforce, obj: str) -> set[str]:
        described = self._call(f"describe {obj}", lambda: getattr(sf, obj).describe())
        return {f["name"] for f in described["fields"]}

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """One Salesforce call: retried when transient, its errors in words."""

        def once() -> T:
            try:
                return call()
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise Retryable(f"cannot reach Salesforce ({type(exc).__name__})") from exc
            except SalesforceGeneralError as exc:
                if exc.status >= 500 or exc.status == 429:  # 429: any API's "slow down"
                    raise Retryable(f"HTTP {exc.status} {_content(exc)}") from exc
                raise

        try:
            return with_retries("Salesforce", what, once)
        except SalesforceAuthenticationFailed as exc:
            raise ConfigError(
                f"Salesforce login failed ({exc.code}: {exc.auth_message}); check the "
                "FUNNELVALUE_SALESFORCE__* credentials in .env"
            ) from exc
        except SalesforceExpiredSession as exc:
            raise ConfigError(
                "Salesforce refused the session (HTTP 401: expired or invalid access token); "
                "renew FUNNELVALUE_SALESFORCE__ACCESS_TOKEN or log in with a username instead"
            ) from exc
        except SalesforceRefusedRequest as exc:
            if "REQUEST_LIMIT_EXCEEDED" in str(exc.content):
                raise SourceError(
                    "Salesforce's daily API request limit is used up; the run stops and the "
                    "next one picks up from the same watermark",
                    transient=True,
                ) from exc
            raise ConfigError(
                f"Salesforce refused {what} (HTTP 403: {_content(exc)}); the user needs read "
                "access to Leads, Opportunities and their history"
            ) from exc
        except SalesforceError as exc:
            raise ConfigError(f"Salesforce rejected {what}: {_content(exc)}") from exc

    def check_api_usage(self, sf: Salesforce) -> None:
        usage = sf.api_usage.get("api-usage")
        if usage is None or not usage.total:
            return
        share = usage.used / usage.total
        if share >= API_USAGE_STOP:
            raise SourceError(
                f"Salesforce API usage is at {usage.used:,} of {usage.total:,} requests today; "
                "stopped to leave the rest to the org's other integrations",
                transient=True,
            )
        if share >= API_USAGE_WARN:
            message = f"Salesforce API usage is at {usage.used:,} of {usage.total:,} today"
            if message not in self._warnings:
                log.warning(message)
                self._warnings.append(message)

    # -- rows ----------------------------------------------------------------------------

    def _rows(
        self,
        leads: list[dict[str, Any]],
        opportunities: list[dict[str, Any]],
        history: list[dict[str, Any]],
        lead_history: list[dict[str, Any]],
        click: str,
        opportunity_click: str | None,
    ) -> pd.DataFrame:
        if not leads and not opportunities:
            return pd.DataFrame(columns=["lead_id", "stage", "stage_changed_at", "source_row"])
        lead = _frame(
            leads,
            [
                "Id",
                "Status",
                "CreatedDate",
                "LastModifiedDate",
                "Email",
                "Phone",
                click,
                "ConvertedOpportunityId",
            ],
        )
        opp = _frame(
            opportunities,
            ["Id", "StageName", "Amount", "CreatedDate", "LastModifiedDate", "CurrencyIsoCode"]
            + ([opportunity_click] if opportunity_click else []),
        )
        people = pd.DataFrame(
            {
                "lead_id": lead["Id"],
                "created_at": lead["CreatedDate"],
                "gclid": lead[click],
                "email": lead["Email"],
                "phone": lead["Phone"],
            }
        )
        parts = []
        if "Lead" in self.config.objects:
            parts.append(
                self._lead_stages(
                    lead,
                    _frame(lead_history, ["LeadId", "OldValue", "NewValue", "CreatedDate"]),
                    people,
                )
            )
        if "Opportunity" in self.config.objects:
            parts.append(
                self._opportunity_stages(
                    lead,
                    opp,
                    _frame(history, ["OpportunityId", "StageName", "CreatedDate"]),
                    people,
                    opportunity_click,
                )
            )
        frame = pd.concat(parts, ignore_index=True)
        frame["source_row"] = np.arange(1, len(frame) + 1)
        return frame

    def _lead_stages(
        self, lead: pd.DataFrame, history: pd.DataFrame, people: pd.DataFrame
    ) -> pd.DataFrame:
        """Each status a Lead had: the first history row's old value at creation, then every
        new value; without history, the current status at the last modification."""
        created = lead.set_index("Id")["CreatedDate"]
        history = history.sort_values("CreatedDate", kind="stable")
        first = history.drop_duplicates("LeadId")
        changes = pd.concat(
            [
                pd.DataFrame(
                    {
                        "lead_id": first["LeadId"],
                        "stage": first["OldValue"],
                        "stage_changed_at": first["LeadId"].map(created),
                    }
                ),
                pd.DataFrame(
                    {
                        "lead_id": history["LeadId"],
                        "stage": history["NewValue"],
                        "stage_changed_at": history["CreatedDate"],
                    }
                ),
            ]
        )
        without = lead[~lead["Id"].isin(history["LeadId"])]
        if len(without) and len(history) == 0:
            message = (
                f"{len(without)} Salesforce Leads have no status history: their current status "
                "is timed at their last change (turn on Field History Tracking for Lead "
                "Status for exact times)"
            )
            log.warning(message)
            self._warnings.append(message)
        current = pd.DataFrame(
            {
                "lead_id": without["Id"],
                "stage": without["Status"],
                "stage_changed_at": without["LastModifiedDate"].where(
                    without["LastModifiedDate"].notna(), without["CreatedDate"]
                ),
            }
        )
        rows = pd.concat([changes, current], ignore_index=True)
        rows = rows[rows["stage"].notna()]
        return rows.merge(people, on="lead_id", how="left")

    def _opportunity_stages(
        self,
        lead: pd.DataFrame,
        opp: pd.DataFrame,
        history: pd.DataFrame,
        people: pd.DataFrame,
        opportunity_click: str | None,
    ) -> pd.DataFrame:
        """Each stage an Opportunity reached (OpportunityHistory), as rows of its Lead."""
        stages = pd.concat(
            [
                pd.DataFrame(
                    {
                        "opportunity": history["OpportunityId"],
                        "stage": history["StageName"],
                        "stage_changed_at": history["CreatedDate"],
                    }
                ),
                # The current stage, in case history lags behind (kept only if not in it).
                pd.DataFrame(
                    {
                        "opportunity": opp["Id"],
                        "stage": opp["StageName"],
                        "stage_changed_at": opp["LastModifiedDate"],
                    }
                ),
            ],
            ignore_index=True,
        ).drop_duplicates(["opportunity", "stage"])
        owner = (
            lead.dropna(subset=["ConvertedOpportunityId"])
            .drop_duplicates("ConvertedOpportunityId")
            .set_index("ConvertedOpportunityId")["Id"]
        )
        facts = opp.set_index("Id")
        owned = stages["opportunity"].map(owner)
        stages["lead_id"] = owned.where(owned.notna(), stages["opportunity"])
        stages["amount"] = stages["opportunity"].map(facts["Amount"])
        stages["currency"] = stages["opportunity"].map(facts["CurrencyIsoCode"])
        rows = stages.merge(people, on="lead_id", how="left")
        own = stages["opportunity"].map(facts["CreatedDate"])
        rows["created_at"] = rows["created_at"].where(rows["created_at"].notna(), own.to_numpy())
        if opportunity_click:
            own_click = rows["opportunity"].map(facts[opportunity_click])
            rows["gclid"] = own_click.where(own_click.notna(), rows["gclid"])
        return rows.drop(columns="opportunity")


@dataclass
class _Reader:
    """SOQL through query_all (queryMore paging), with id lists split into short IN clauses."""

    source: SalesforceSource
    sf: Salesforce

    def query(self, soql: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.source._call(
            "query", lambda: self.sf.query_all(soql)["records"]
        )
        self.source.check_api_usage(self.sf)
        return records

    def query_in(self, soql: str, column: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        joiner = " AND " if " WHERE " in soql else " WHERE "
        records: list[dict[str, Any]] = []
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ", ".join(f"'{_soql_id(i)}'" for i in ids[start : start + IDS_PER_QUERY])
            records += self.query(f"{soql}{joiner}{column} IN ({chunk})")
        return records


def _login(config: SalesforceSettings) -> Callable[[], Salesforce]:
    """The configured way of logging in, checked for completeness before any call."""
    common: dict[str, Any] = {
        "version": config.api_version,
        "session": _TimeoutSession(config.timeout_seconds),
    }
    if config.access_token is not None:
        if not config.instance_url:
            raise ConfigError(
                "salesforce.access_token needs salesforce.instance_url "
                "(e.g. https://yourcompany.my.salesforce.com)"
            )
        return lambda: Salesforce(
            instance_url=config.instance_url, session_id=_secret(config.access_token), **common
        )
    if config.username and config.consumer_key and config.private_key_file:
        return lambda: Salesforce(
            username=config.username,
            consumer_key=config.consumer_key,
            privatekey_file=str(config.private_key_file),
            domain=config.domain,
            **common,
        )
    if config.username and config.password is not None:
        extra: dict[str, Any] = {}
        if config.consumer_key and config.consumer_secret is not None:
            extra = {
                "consumer_key": config.consumer_key,
                "consumer_secret": _secret(config.consumer_secret),
            }
        return lambda: Salesforce(
            username=config.username,
            password=_secret(config.password),
            security_token=_secret(config.security_token),
            domain=config.domain,
            **extra,
            **common,
        )
    if config.consumer_key and config.consumer_secret is not None:
        return lambda: Salesforce(
            consumer_key=config.consumer_key,
            consumer_secret=_secret(config.consumer_secret),
            domain=config.domain,
            **common,
        )
    raise ConfigError(
        "source salesforce needs credentials (in .env or the environment), one of:",
        [
            "FUNNELVALUE_SALESFORCE__USERNAME + __PASSWORD + __SECURITY_TOKEN",
            "FUNNELVALUE_SALESFORCE__INSTANCE_URL + __ACCESS_TOKEN (OAuth)",
            "FUNNELVALUE_SALESFORCE__USERNAME + __CONSUMER_KEY + __PRIVATE_KEY_FILE (JWT)",
            "FUNNELVALUE_SALESFORCE__CONSUMER_KEY + __CONSUMER_SECRET + __DOMAIN "
            "(client credentials)",
        ],
    )


def _secret(value: Any) -> str:
    return "" if value is None else str(value.get_secret_value())


def _frame(records: Iterable[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(list(records))
    for name in columns:
        if name not in frame.columns:
            frame[name] = pd.Series(pd.NA, index=frame.index, dtype="object")
    return frame[columns].astype(object)  # ids stay text even when a frame is empty


def _soql_time(moment: datetime) -> str:
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _soql_id(value: str) -> str:
    if not value.isalnum():
        raise SourceError(f"Salesforce returned an unexpected record id {value!r}")
    return value


def _candidates(fields: set[str]) -> str:
    likely = sorted(f for f in fields if "clid" in f.lower() or "click" in f.lower())
    if likely:
        return f"fields that look like a click id: {', '.join(likely)}"
    return "create a text field for the Google click id (GCLID) and fill it from your forms"


def _content(exc: SalesforceError) -> str:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return "; ".join(f"{c.get('errorCode', '')}: {c.get('message', '')}" for c in content)
    return str(content)[:300]
