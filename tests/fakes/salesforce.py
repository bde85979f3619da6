"""A Salesforce org behind `responses`: SOAP login, describe, SOQL query with queryMore paging.

Shaped after the REST API docs: records carry `attributes`, datetimes look like
`2026-11-02T14:30:00.000+0000`, query pages end with `nextRecordsUrl` until `done`, every
response reports `Sforce-Limit-Info: api-usage=used/total`, errors are lists of
`{message, errorCode}`. The SOQL it understands is what funnelvalue sends: SELECT ... FROM ...
with `>=` on a datetime, `= 'text'` and `IN (...)` conditions joined by AND.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import responses
from requests import PreparedRequest

INSTANCE = "https://funnelvalue-dev.my.salesforce.com"
VERSION = "62.0"
API = f"{INSTANCE}/services/data/v{VERSION}"
SESSION = "00DRO000000test!AQ0AQ.session-token"
PASSWORD = "hunter2-secret"
Reply = tuple[int, dict[str, str], str]
FIELDS = {
    "Lead": [
        "Id",
        "Status",
        "CreatedDate",
        "LastModifiedDate",
        "SystemModstamp",
        "Email",
        "Phone",
        "IsConverted",
        "ConvertedOpportunityId",
        "ConvertedDate",
    ],
    "Opportunity": [
        "Id",
        "StageName",
        "Amount",
        "CreatedDate",
        "LastModifiedDate",
        "SystemModstamp",
        "CurrencyIsoCode",
    ],
    "OpportunityHistory": ["Id", "OpportunityId", "StageName", "Amount", "CreatedDate"],
    "LeadHistory": ["Id", "LeadId", "Field", "OldValue", "NewValue", "CreatedDate"],
}
_SELECT = re.compile(r"^SELECT (?P<columns>.+?) FROM (?P<object>\w+)(?: WHERE (?P<where>.+))?$")


def sf_time(moment: pd.Timestamp) -> str:
    return moment.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass
class FakeSalesforce:
    clock: pd.Timestamp
    click_field: str = "GCLID__c"
    opportunity_fields: list[str] = field(default_factory=list)  # custom fields there
    records: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {
            "Lead": {},
            "Opportunity": {},
            "LeadHistory": {},
            "OpportunityHistory": {},
        }
    )
    failures: list[Reply] = field(default_factory=list)
    page_size: int = 2000
    api_used: int = 120
    api_total: int = 15_000
    queries: list[str] = field(default_factory=list)
    _cursors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _serial: int = 0

    # -- building the org ---------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}RO{self._serial:013d}"

    def tick(self, seconds: float = 1.0) -> pd.Timestamp:
        self.clock += pd.Timedelta(seconds=seconds)
        return self.clock

    def _touch(self, record: dict[str, Any]) -> None:
        now = sf_time(self.tick())
        record["LastModifiedDate"] = record["SystemModstamp"] = now

    def add_lead(
        self,
        created: pd.Timestamp,
        *,
        gclid: str | None,
        status: str = "Open - Not Contacted",
        email: str | None = None,
        phone: str | None = None,
    ) -> str:
        lead_id = self._id("00Q")
        self.records["Lead"][lead_id] = {
            "Id": lead_id,
            "Status": status,
            "CreatedDate": sf_time(created),
            "Email": email,
            "Phone": phone,
            self.click_field: gclid,
            "IsConverted": False,
            "ConvertedOpportunityId": None,
            "ConvertedDate": None,
        }
        self._touch(self.records["Lead"][lead_id])
        return lead_id

    def set_status(self, lead_id: str, status: str, at: pd.Timestamp) -> None:
        lead = self.records["Lead"][lead_id]
        history_id = self._id("017")
        self.records["LeadHistory"][history_id] = {
            "Id": history_id,
            "LeadId": lead_id,
            "Field": "Status",
            "OldValue": lead["Status"],
            "NewValue": status,
            "CreatedDate": sf_time(at),
        }
        lead["Status"] = status
        self._touch(lead)

    def add_opportunity(
        self, stage: str, at: pd.Timestamp, *, amount: float | None = None, **custom: Any
    ) -> str:
        opportunity_id = self._id("006")
        self.records["Opportunity"][opportunity_id] = {
            "Id": opportunity_id,
            "StageName": stage,
            "Amount": amount,
            "CreatedDate": sf_time(at),
            "CurrencyIsoCode": "EUR",
            **custom,
        }
        self.move(opportunity_id, stage, at)
        return opportunity_id

    def convert(self, lead_id: str, stage: str, at: pd.Timestamp, amount: float) -> str:
        self.set_status(lead_id, "Qualified", at)
        opportunity_id = self.add_opportunity(stage, at, amount=amount)
        lead = self.records["Lead"][lead_id]
        lead.update(
            IsConverted=True, ConvertedOpportunityId=opportunity_id, ConvertedDate=sf_time(at)
        )
        self._touch(lead)
        return opportunity_id

    def move(self, opportunity_id: str, stage: str, at: pd.Timestamp, **changes: Any) -> None:
        opportunity = self.records["Opportunity"][opportunity_id]
        history_id = self._id("008")
        self.records["OpportunityHistory"][history_id] = {
            "Id": history_id,
            "OpportunityId": opportunity_id,
            "StageName": stage,
            "Amount": changes.get("Amount", opportunity["Amount"]),
            "CreatedDate": sf_time(at),
        }
        opportunity.update(StageName=stage, **changes)
        self._touch(opportunity)

    # -- the API ----------------------------------------------------------------------

    def install(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(
            responses.POST,
            re.compile(r"https://(login|test)\.salesforce\.com/services/Soap/u/[\d.]+"),
            callback=self._login,
        )
        rsps.add_callback(
            responses.GET,
            re.compile(re.escape(API) + r"/sobjects/(\w+)/describe/?$"),
            callback=self._guarded(self._describe),
        )
        rsps.add_callback(
            responses.GET,
            re.compile(re.escape(API) + r"/query/?(\?.*)?$"),
            callback=self._guarded(self._query),
        )
        rsps.add_callback(
            responses.GET,
            re.compile(re.escape(API) + r"/query/(?P<cursor>[\w-]+)$"),
            callback=self._guarded(self._query_more),
        )

    def _headers(self) -> dict[str, str]:
        return {
            "Sforce-Limit-Info": f"api-usage={self.api_used}/{self.api_total}",
            "Content-Type": "application/json;charset=UTF-8",
        }

    def _guarded(self, handler: Any) -> Any:
        def serve(request: PreparedRequest) -> Reply:
            self.api_used += 1
            if request.headers.get("Authorization") != f"Bearer {SESSION}":
                body = [
                    {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
                ]
                return 401, self._headers(), json.dumps(body)
            if self.failures:
                status, headers, body = self.failures.pop(0)
                return status, {**self._headers(), **headers}, body
            status, headers, body = handler(request)
            return status, {**self._headers(), **headers}, body

        return serve

    def _login(self, request: PreparedRequest) -> Reply:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        if f"<n1:password>{PASSWORD}" not in body:
            fault = (
                '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
                'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                'xmlns:sf="urn:fault.partner.soap.sforce.com" '
                'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
                "<soapenv:Fault><faultcode>sf:INVALID_LOGIN</faultcode><faultstring>"
                "INVALID_LOGIN: Invalid username, password, security token; or user locked out."
                '</faultstring><detail><sf:LoginFault xsi:type="sf:LoginFault">'
                "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>"
                "Invalid username, password, security token; or user locked out."
                "</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault>"
                "</soapenv:Body></soapenv:Envelope>"
            )
            return 500, {"Content-Type": "text/xml"}, fault
        ok = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<metadataServerUrl>{INSTANCE}/services/Soap/m/{VERSION}/00DRO</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
            f"<serverUrl>{INSTANCE}/services/Soap/u/{VERSION}/00DRO</serverUrl>"
            f"<sessionId>{SESSION}</sessionId><userId>005RO0000012345</userId>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return 200, {"Content-Type": "text/xml"}, ok

    def _describe(self, request: PreparedRequest) -> Reply:
        name = urlparse(str(request.url)).path.split("/")[5]
        fields = list(FIELDS[name])
        fields += [self.click_field] if name == "Lead" else self.opportunity_fields
        body = {"name": name, "fields": [{"name": f, "type": "string"} for f in fields]}
        return 200, {}, json.dumps(body)

    def _query(self, request: PreparedRequest) -> Reply:
        soql = parse_qs(urlparse(str(request.url)).query)["q"][0]
        self.queries.append(soql)
        parsed = _SELECT.match(soql)
        if parsed is None:
            raise AssertionError(f"fake cannot read {soql!r}")
        obj = parsed["object"]
        columns = [c.strip() for c in parsed["columns"].split(",")]
        known = set(FIELDS[obj])
        known |= {self.click_field} if obj == "Lead" else set(self.opportunity_fields)
        for name in columns:
            if name not in known:
                error = {
                    "message": f"No such column '{name}' on entity '{obj}'.",
                    "errorCode": "INVALID_FIELD",
                }
                return 400, {}, json.dumps([error])
        rows = list(self.records[obj].values())
        for condition in (parsed["where"] or "").split(" AND ") if parsed["where"] else []:
            rows = [r for r in rows if _matches(r, condition)]
        rows.sort(key=lambda r: r.get("CreatedDate") or "")
        records = [
            {
                "attributes": {"type": obj, "url": f"/services/data/v{VERSION}/sobjects/{obj}/"},
                **{c: r.get(c) for c in columns},
            }
            for r in rows
        ]
        return self._page(records, len(records))

    def _page(self, records: list[dict[str, Any]], total: int) -> Reply:
        page, rest = records[: self.page_size], records[self.page_size :]
        body: dict[str, Any] = {"totalSize": total, "done": not rest, "records": page}
        if rest:
            cursor = f"01gRO00000{len(self._cursors):07d}-{total - len(rest)}"
            self._cursors[cursor] = rest
            body["nextRecordsUrl"] = f"/services/data/v{VERSION}/query/{cursor}"
        return 200, {}, json.dumps(body)

    def _query_more(self, request: PreparedRequest) -> Reply:
        cursor = urlparse(str(request.url)).path.rsplit("/", 1)[-1]
        rest = self._cursors.pop(cursor)
        return self._page(rest, len(rest) + int(cursor.rsplit("-", 1)[1]))


def _matches(record: dict[str, Any], condition: str) -> bool:
    if match := re.fullmatch(r"(\w+) >= (\S+)", condition):
        value = record.get(match[1])
        return value is not None and pd.Timestamp(value) >= pd.Timestamp(match[2])
    if match := re.fullmatch(r"(\w+) = '([^']*)'", condition):
        return bool(record.get(match[1]) == match[2])
    if match := re.fullmatch(r"(\w+) IN \((.*)\)", condition):
        wanted = {v.strip().strip("'") for v in match[2].split(",")}
        return record.get(match[1]) in wanted
    raise AssertionError(f"fake cannot evaluate {condition!r}")
