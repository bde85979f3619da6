"""A HubSpot portal behind `responses`: pipelines, deals, contacts, associations and search.

Shaped after HubSpot's CRM v3/v4 docs: properties come back as strings (datetimes as ISO with
milliseconds and Z), unset ones as null; list pages use `paging.next.after` cursors, search
pages numeric offsets that stop at 10,000 with a 400; batch reads cap their inputs (100 for
objects, 1,000 for associations); errors carry `status`, `message`, `category`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import responses
from requests import PreparedRequest

BASE = "https://api.hubapi.com"
TOKEN = "pat-na1-test-token"
PIPELINE = {
    "id": "default",
    "label": "Sales Pipeline",
    "displayOrder": 0,
    "archived": False,
    "stages": [
        {"id": stage_id, "label": label, "displayOrder": n, "archived": False, "metadata": meta}
        for n, (stage_id, label, meta) in enumerate(
            [
                ("appointmentscheduled", "Appointment Scheduled", {"probability": "0.2"}),
                ("qualifiedtobuy", "Qualified To Buy", {"probability": "0.4"}),
                ("contractsent", "Contract Sent", {"probability": "0.8"}),
                ("closedwon", "Closed Won", {"isClosed": "true", "probability": "1.0"}),
                ("closedlost", "Closed Lost", {"isClosed": "true", "probability": "0.0"}),
            ]
        )
    ],
}
LIFECYCLE = [
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"),
    ("opportunity", "Opportunity"),
    ("customer", "Customer"),
]
SEARCH_WINDOW = 10_000
Reply = tuple[int, dict[str, str], str]


def iso(moment: pd.Timestamp) -> str:
    return (
        moment.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{moment.microsecond // 1000:03d}Z"
    )


def _error(status: int, message: str, category: str, **extra: Any) -> Reply:
    body = {
        "status": "error",
        "message": message,
        "correlationId": "0f0e-test",
        "category": category,
    }
    return status, {}, json.dumps({**body, **extra})


@dataclass
class FakeHubSpot:
    """Records per object type (``deals``, ``contacts``) as id -> properties."""

    clock: pd.Timestamp
    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"deals": {}, "contacts": {}}
    )
    links: dict[str, list[str]] = field(default_factory=dict)  # deal id -> contact ids
    failures: list[Reply] = field(default_factory=list)  # served before the real answers
    burst_remaining: int | None = None  # X-HubSpot-RateLimit-Remaining on every answer
    requests: list[tuple[str, str]] = field(default_factory=list)
    pipeline_filter_used: bool = False
    max_searches: int | None = None  # more searches than this: a 400 (a client stuck in a loop)
    scopes: set[str] | None = None  # what the token was granted (None: every scope)
    association_page: int = 500  # contacts per deal in one batch-read result, then paging
    _next_id: int = 1000

    # -- building the portal ---------------------------------------------------------

    def tick(self, seconds: float = 1.0) -> pd.Timestamp:
        self.clock += pd.Timedelta(seconds=seconds)
        return self.clock

    def add_contact(
        self, *, gclid: str | None, email: str | None = None, phone: str | None = None, **props: Any
    ) -> str:
        self._next_id += 1
        contact_id = str(self._next_id)
        now = iso(self.tick())
        self.objects["contacts"][contact_id] = {
            "hs_object_id": contact_id,
            "createdate": now,
            "lastmodifieddate": now,
            "email": email,
            "phone": phone,
            "hs_google_click_id": gclid,
            **props,
        }
        return contact_id

    def add_deal(
        self,
        stages: list[tuple[str, pd.Timestamp]],
        *,
        amount: str | None = None,
        contact: str | None = None,
        currency: str | None = None,
        legacy_dates: bool = False,
        **props: Any,
    ) -> str:
        self._next_id += 1
        deal_id = str(self._next_id)
        created = stages[0][1] if stages else self.clock
        self.objects["deals"][deal_id] = {
            "hs_object_id": deal_id,
            "createdate": iso(created),
            "pipeline": "default",
            "amount": amount,
            "deal_currency_code": currency,
            **props,
        }
        for stage, when in stages:
            self.move_deal(deal_id, stage, when, legacy=legacy_dates)
        if contact:
            self.links[deal_id] = [contact]
        return deal_id

    def move_deal(
        self, deal_id: str, stage: str, when: pd.Timestamp, *, legacy: bool = False
    ) -> None:
        deal = self.objects["deals"][deal_id]
        deal["dealstage"] = stage
        prefix = "hs_date_entered_" if legacy else "hs_v2_date_entered_"
        deal[prefix + stage] = iso(when)
        self.touch("deals", deal_id)

    def touch(self, kind: str, record_id: str, **props: Any) -> None:
        record = self.objects[kind][record_id]
        record.update(props)
        record["hs_lastmodifieddate" if kind == "deals" else "lastmodifieddate"] = iso(self.tick())

    # -- the API ---------------------------------------------------------------------

    def install(self, rsps: responses.RequestsMock) -> None:
        # Each endpoint with the scope HubSpot's reference lists for it.
        routes: list[tuple[str, str, str, Callable[[PreparedRequest], Reply]]] = [
            (
                "GET",
                r"/crm/v3/pipelines/deals$",
                "crm.schemas.deals.read",
                lambda r: (200, {}, json.dumps({"results": [PIPELINE]})),
            ),
            (
                "GET",
                r"/crm/v3/properties/contacts/lifecyclestage$",
                "crm.schemas.contacts.read",
                self._lifecycle,
            ),
            ("GET", r"/crm/v3/objects/deals(\?.*)?$", "crm.objects.deals.read", self._list),
            ("GET", r"/crm/v3/objects/contacts(\?.*)?$", "crm.objects.contacts.read", self._list),
            ("POST", r"/crm/v3/objects/deals/search$", "crm.objects.deals.read", self._search),
            (
                "POST",
                r"/crm/v3/objects/contacts/search$",
                "crm.objects.contacts.read",
                self._search,
            ),
            (
                "POST",
                r"/crm/v4/associations/deals/contacts/batch/read$",
                "crm.objects.contacts.read",
                self._associations,
            ),
            (
                "POST",
                r"/crm/v3/objects/contacts/batch/read$",
                "crm.objects.contacts.read",
                self._batch_read,
            ),
        ]
        for method, pattern, scope, handler in routes:
            rsps.add_callback(
                method,
                re.compile(re.escape(BASE) + pattern),
                callback=self._guarded(handler, scope),
            )

    def _guarded(
        self, handler: Callable[[PreparedRequest], Reply], scope: str
    ) -> Callable[[PreparedRequest], Reply]:
        def serve(request: PreparedRequest) -> Reply:
            self.requests.append((str(request.method), urlparse(str(request.url)).path))
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return _error(
                    401,
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    "INVALID_AUTHENTICATION",
                )
            if self.scopes is not None and scope not in self.scopes:
                return _error(
                    403,
                    "This app hasn't been granted all required scopes to make this call. "
                    "Read more about required scopes here: https://developers.hubspot.com/scopes.",
                    "MISSING_SCOPES",
                    errors=[
                        {
                            "message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": [scope]},
                        }
                    ],
                    links={"scopes": "https://developers.hubspot.com/scopes"},
                )
            if self.failures:
                return self.failures.pop(0)
            status, headers, body = handler(request)
            if self.burst_remaining is not None:
                headers = {
                    **headers,
                    "X-HubSpot-RateLimit-Max": "100",
                    "X-HubSpot-RateLimit-Remaining": str(self.burst_remaining),
                    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                }
            return status, headers, body

        return serve

    def _lifecycle(self, request: PreparedRequest) -> Reply:
        options = [
            {"label": label, "value": value, "displayOrder": n, "hidden": False}
            for n, (value, label) in enumerate(LIFECYCLE)
        ]
        body = {
            "name": "lifecyclestage",
            "label": "Lifecycle Stage",
            "type": "enumeration",
            "options": options,
        }
        return 200, {}, json.dumps(body)

    def _record(self, kind: str, record_id: str, wanted: list[str]) -> dict[str, Any]:
        props = self.objects[kind][record_id]
        modified = props.get("hs_lastmodifieddate") or props.get("lastmodifieddate")
        default = [
            "createdate",
            "hs_object_id",
            "hs_lastmodifieddate" if kind == "deals" else "lastmodifieddate",
        ]
        return {
            "id": record_id,
            "properties": {name: props.get(name) for name in dict.fromkeys(default + wanted)},
            "createdAt": props["createdate"],
            "updatedAt": modified,
            "archived": False,
        }

    def _list(self, request: PreparedRequest) -> Reply:
        url = urlparse(str(request.url))
        kind = url.path.rsplit("/", 1)[-1]
        query = parse_qs(url.query)
        limit = min(int(query.get("limit", ["10"])[0]), 100)
        wanted = query.get("properties", [""])[0].split(",")
        ids = sorted(self.objects[kind], key=int)
        after = query.get("after", [None])[0]
        start = 0 if after is None else next(n for n, i in enumerate(ids) if int(i) > int(after))
        page = ids[start : start + limit]
        body: dict[str, Any] = {"results": [self._record(kind, i, wanted) for i in page]}
        if start + limit < len(ids):
            cursor = page[-1]
            body["paging"] = {"next": {"after": cursor, "link": f"{BASE}{url.path}?after={cursor}"}}
        return 200, {}, json.dumps(body)

    def _search(self, request: PreparedRequest) -> Reply:
        kind = urlparse(str(request.url)).path.split("/")[4]
        searches = sum(path.endswith("/search") for _, path in self.requests)
        if self.max_searches is not None and searches > self.max_searches:
            return _error(400, "fake: the client searches in a loop", "VALIDATION_ERROR")
        body = json.loads(request.body or b"{}")
        limit = int(body.get("limit", 10))
        if limit > 200:
            return _error(400, "limit must be at most 200", "VALIDATION_ERROR")
        after = int(body.get("after", 0))
        if after >= SEARCH_WINDOW:
            return _error(
                400,
                "There was a problem with the request.",
                "VALIDATION_ERROR",
                errors=[
                    {"message": f"Cannot page beyond {SEARCH_WINDOW:,} results", "in": "after"}
                ],
            )
        matches = list(self.objects[kind].items())
        for group in body.get("filterGroups", []):
            for rule in group["filters"]:
                name, op = rule["propertyName"], rule["operator"]
                if name == "pipeline":
                    self.pipeline_filter_used = True
                if op == "GTE":
                    edge = pd.Timestamp(int(rule["value"]), unit="ms", tz="UTC")
                    matches = [
                        (i, p) for i, p in matches if p.get(name) and pd.Timestamp(p[name]) >= edge
                    ]
                elif op == "IN":
                    matches = [(i, p) for i, p in matches if p.get(name) in rule["values"]]
                else:
                    raise AssertionError(f"fake does not know operator {op}")
        for sort in body.get("sorts", []):
            key = sort["propertyName"]
            matches.sort(
                key=lambda item: (item[1].get(key) or "", int(item[0])),
                reverse=sort["direction"] == "DESCENDING",
            )
        page = matches[after : after + limit]
        reply: dict[str, Any] = {
            "total": len(matches),
            "results": [self._record(kind, i, body.get("properties", [])) for i, _ in page],
        }
        if after + limit < len(matches):
            reply["paging"] = {"next": {"after": str(after + limit)}}
        return 200, {}, json.dumps(reply)

    def _associations(self, request: PreparedRequest) -> Reply:
        inputs = json.loads(request.body or b"{}")["inputs"]
        if len(inputs) > 1000:
            return _error(400, "Batch input may not exceed 1000 inputs", "VALIDATION_ERROR")
        results, errors = [], []
        for item in inputs:
            linked = self.links.get(item["id"], [])
            start = int(item.get("after") or 0)  # the cursor this fake hands out: an offset
            page = linked[start : start + self.association_page]
            if page:
                result: dict[str, Any] = {
                    "from": {"id": item["id"]},
                    "to": [
                        {
                            "toObjectId": int(c),
                            "associationTypes": [
                                {"category": "HUBSPOT_DEFINED", "typeId": 3, "label": None}
                            ],
                        }
                        for c in page
                    ],
                }
                if start + self.association_page < len(linked):  # present only when more
                    cursor = str(start + self.association_page)
                    result["paging"] = {"next": {"after": cursor, "link": None}}
                results.append(result)
            else:
                errors.append(
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": "No deal is associated",
                        "context": {"fromObjectId": [item["id"]]},
                    }
                )
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": "2026-11-23T10:00:00.000Z",
            "completedAt": "2026-11-23T10:00:00.100Z",
        }
        if errors:
            body |= {"numErrors": len(errors), "errors": errors}
        return (207 if errors else 200), {}, json.dumps(body)

    def _batch_read(self, request: PreparedRequest) -> Reply:
        body = json.loads(request.body or b"{}")
        if len(body["inputs"]) > 100:
            return _error(400, "Batch input may not exceed 100 inputs", "VALIDATION_ERROR")
        found = [i["id"] for i in body["inputs"] if i["id"] in self.objects["contacts"]]
        reply = {
            "status": "COMPLETE",
            "results": [self._record("contacts", i, body.get("properties", [])) for i in found],
        }
        return 200, {}, json.dumps(reply)
