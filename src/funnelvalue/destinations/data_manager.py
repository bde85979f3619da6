"""Google's Data Manager API destination (IngestionService) with the official client.

The path Google sends new advertisers since June 2026. It is asynchronous: IngestEvents accepts
a batch and answers with a request id; the outcome arrives later through RetrieveRequestStatus,
per destination, as counts by reason rather than per row. So rows go ``submitted`` with their
request id, and every later run (and ``funnelvalue status``) polls the open requests; see
Ledger.confirm_requests for what each outcome does to the rows.

One request carries one conversion action (Destination: operating account = the Google Ads
customer, product_destination_id = the action's numeric id) and at most 2,000 events, each with
its click id or hashed email/phone, value, currency, consent and ``transaction_id`` = our
order id, so a replay after a crash is recognised by Google as a duplicate.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import pandas as pd

from funnelvalue.destinations.base import outcomes
from funnelvalue.destinations.sending import (
    CALL_TIMEOUT,
    TRANSIENT_GRPC,
    batches,
    call_rpc,
    grpc_code,
    send_in_batches,
)
from funnelvalue.errors import ConfigError, DestinationError
from funnelvalue.settings import DataManagerSettings
from funnelvalue.vocabulary import ClickIdKind, Outcome, RequestState

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/datamanager"
TOO_RECENT = {"TOO_RECENT_CLICK"}  # safe to send again: transaction ids deduplicate
_RESOURCE_ID = re.compile(r"^customers/\d+/conversionActions/(\d+)$")
PLAIN_WORDS = {
    "DUPLICATE_TRANSACTION_ID": "already in Google Ads",
    "TOO_RECENT_CLICK": "the click is too recent",
    "CLICK_NOT_FOUND": "Google has no click with this id for this account",
    "INVALID_GCLID": "Google cannot read the gclid",
    "EVENT_TOO_OLD": "older than the conversion action's click-through window",
    "CONVERSION_PRECEDES_CLICK": "conversion time before the click (a timezone mistake?)",
    "INVALID_OPERATING_ACCOUNT_FOR_CLICK": "the click belongs to another Google Ads account",
    "NO_CONSENT": "no ad_user_data consent",
    "DENIED_CONSENT": "ad_user_data consent denied",
}


@cache
def _types() -> Any:
    from google.ads import datamanager_v1

    return datamanager_v1


def _credentials(config: DataManagerSettings) -> Any:
    """A service-account key file when configured, else Application Default Credentials."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    from google.oauth2 import service_account

    if config.credentials_file is not None:
        try:
            return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(config.credentials_file), scopes=[SCOPE]
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"data_manager.credentials_file {config.credentials_file} is not a usable "
                f"service-account key: {exc}"
            ) from None
    try:
        credentials, _ = google.auth.default(scopes=[SCOPE])
    except DefaultCredentialsError:
        raise ConfigError(
            "no Google Cloud credentials for the Data Manager API: set "
            "data_manager.credentials_file (a service-account key) or "
            "GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login "
            f"--scopes={SCOPE},https://www.googleapis.com/auth/cloud-platform`"
        ) from None
    return credentials


@dataclass
class DataManagerUpload:
    """Submits conversions for one Google Ads customer and polls what became of them."""

    client: Any  # google.ads.datamanager_v1.IngestionServiceClient
    customer_id: str
    login_customer_id: str | None = None
    action_ids: dict[str, str] = field(default_factory=dict)
    validate_only: bool = False
    event_source: str | None = None  # EventSource name; unset unless configured
    in_flight: int = 1  # requests sent at once (settings.requests_in_flight)

    @classmethod
    def from_settings(
        cls, config: DataManagerSettings, customer_id: str, in_flight: int = 1
    ) -> DataManagerUpload:
        options = {"api_endpoint": config.endpoint} if config.endpoint else None
        client = _types().IngestionServiceClient(
            credentials=_credentials(config), client_options=options
        )
        login = config.login_customer_id.replace("-", "") if config.login_customer_id else None
        return cls(
            client,
            customer_id,
            login,
            dict(config.action_ids),
            event_source=config.event_source,
            in_flight=in_flight,
        )

    @property
    def name(self) -> str:
        return f"data-manager:{self.customer_id}"

    def close(self) -> None:
        self.client.transport.close()

    # -- conversion actions ---------------------------------------------------------------

    def action_id(self, action: str) -> str | None:
        """The numeric id Data Manager needs: given as is, as a resource name, or mapped."""
        if action.isdigit():
            return action
        if match := _RESOURCE_ID.match(action):
            return match[1]
        mapped = self.action_ids.get(action)
        return mapped if mapped and mapped.isdigit() else None

    def action_identities(self, labels: Iterable[str], *, strict: bool) -> dict[str, str]:
        """Mapping labels -> numeric action ids (what Google counts a conversion under); the
        same identities as the Google Ads API destination, so switching between them re-sends
        nothing. ``strict``: a label without an id stops the run before anything is sent."""
        wanted = sorted(set(labels))
        found = {label: ident for label in wanted if (ident := self.action_id(label)) is not None}
        missing = [label for label in wanted if label not in found]
        if strict and missing:
            raise ConfigError(
                "the Data Manager API needs numeric conversion action ids (it cannot look "
                "names up): put the id in the mapping's conversion_action or under "
                "data_manager.action_ids in config/funnelvalue.yaml. The id is the number after "
                "ctId= in the address of the action in Google Ads (Goals -> Conversions)",
                [f"'{a}' has no id" for a in missing],
            )
        return found

    # -- sending ---------------------------------------------------------------------------

    def validate(self, conversions: pd.DataFrame) -> pd.DataFrame:
        """validate_only=True: Google checks the requests and records nothing."""
        return replace(self, validate_only=True).upload(conversions)

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        self.action_identities(conversions["conversion_action"].unique(), strict=True)
        return send_in_batches(self._by_action(conversions), self._submit, in_flight=self.in_flight)

    @staticmethod
    def _by_action(conversions: pd.DataFrame) -> Iterator[pd.DataFrame]:
        """Batches of one conversion action each: a request's outcome is per destination."""
        for _, group in conversions.groupby("conversion_action", sort=False):
            yield from batches(group)

    def _submit(self, batch: pd.DataFrame) -> pd.DataFrame:
        """One request. Google refuses a request as a whole for one bad event (the fast-fail
        model): the events its error names are set aside with Google's words and the rest is
        sent again; when it names none, halves are tried to find them. One bad event never
        blocks the other 1,999 run after run."""
        try:
            return self._submit_named(batch)
        except _RefusedWithoutDetails as refusal:
            return self._bisect(batch, refusal, top=True)

    def _submit_named(self, batch: pd.DataFrame) -> pd.DataFrame:
        refused: list[pd.DataFrame] = []
        for _ in range(MAX_RESUBMISSIONS):
            try:
                return pd.concat([*refused, self._ingest(batch)], ignore_index=True)
            except _EventsRefused as refusal:
                named = {p: why for p, why in refusal.events.items() if p < len(batch)}
                if not named:  # positions outside the request: nothing to set aside
                    raise refusal.stop from None
                refused.append(_refusal_outcomes(batch, named))
                batch = batch.drop(batch.index[sorted(named)])
                if batch.empty:
                    return pd.concat(refused, ignore_index=True)
        raise DestinationError(
            f"the Data Manager API refused {MAX_RESUBMISSIONS} requests in a row, each for "
            "other events; nothing more was sent",
            transient=False,
        )

    def _bisect(
        self, batch: pd.DataFrame, refusal: _RefusedWithoutDetails, *, top: bool
    ) -> pd.DataFrame:
        """Each half on its own. A fault of the request itself (not of an event) fails both
        halves of the first split: stop. Below that, a failing half is halved again down to
        the one event, which is rejected with Google's words."""
        if len(batch) == 1:  # alone from the start: the event or the request? keep it
            if top:
                raise refusal.as_stop()
            return outcomes(batch["key"], Outcome.REJECTED, refusal.words, refusal.reason)
        middle = len(batch) // 2
        done: list[pd.DataFrame] = []
        failing: list[tuple[pd.DataFrame, _RefusedWithoutDetails]] = []
        for half in (batch.iloc[:middle], batch.iloc[middle:]):
            try:
                done.append(self._submit_named(half))
            except _RefusedWithoutDetails as again:
                failing.append((half, again))
        if top and len(failing) == 2:
            raise refusal.as_stop()
        done += [self._bisect(half, again, top=False) for half, again in failing]
        return pd.concat(done, ignore_index=True)

    def _ingest(self, batch: pd.DataFrame) -> pd.DataFrame:
        request = self._request(batch)
        response = call_rpc(
            "Data Manager IngestEvents",
            # retry=None: the shared policy retries, not the client's own (hidden, real sleeps)
            lambda: self.client.ingest_events(request=request, retry=None, timeout=CALL_TIMEOUT),
            _is_transient,
            _refusal_or_translate,
        )
        warning = _warnings(response, batch)
        if self.validate_only:
            return outcomes(
                batch["key"], Outcome.UPLOADED, f"valid (validate_only: nothing recorded){warning}"
            )
        request_id = str(response.request_id)
        log.info("Data Manager accepted %d events as request %s", len(batch), request_id)
        submitted = outcomes(
            batch["key"], Outcome.SUBMITTED, f"waiting for Google (request {request_id}){warning}"
        )
        return submitted.assign(request_id=request_id)

    def _request(self, batch: pd.DataFrame) -> Any:
        """IngestEventsRequest for one action, built from raw protobuf messages (fast)."""
        dm = _types()
        google_ads = dm.ProductAccount.AccountType.GOOGLE_ADS
        destination: dict[str, Any] = {
            "operating_account": dm.ProductAccount.pb()(
                account_type=google_ads, account_id=self.customer_id
            ),
            "product_destination_id": self.action_id(str(batch["conversion_action"].iloc[0])),
        }
        if self.login_customer_id:
            destination["login_account"] = dm.ProductAccount.pb()(
                account_type=google_ads, account_id=self.login_customer_id
            )
        request = dm.IngestEventsRequest.pb()(
            destinations=[dm.Destination.pb()(**destination)],
            events=list(_events(batch, self.event_source)),
            encoding=dm.Encoding.HEX,
            validate_only=self.validate_only,
        )
        return dm.IngestEventsRequest.wrap(request)

    # -- outcomes ------------------------------------------------------------------------

    def poll(self, request_ids: Iterable[str]) -> pd.DataFrame:
        """What Google made of each open request: success, partial, failed or processing."""
        rows = []
        for request_id in request_ids:
            try:
                response = call_rpc(
                    "Data Manager RetrieveRequestStatus",
                    lambda rid=request_id: self.client.retrieve_request_status(  # type: ignore[misc]
                        request={"request_id": rid}, retry=None, timeout=CALL_TIMEOUT
                    ),
                    _is_transient,
                    _unknown_request_or_translate,
                )
            except _UnknownRequest:
                rows.append({"request_id": request_id, **UNKNOWN_REQUEST})
                continue
            rows.append({"request_id": request_id, **_request_outcome(response)})
        return pd.DataFrame(rows, columns=["request_id", "state", "error_counts", "message"])


def _events(batch: pd.DataFrame, event_source: str | None) -> Iterator[Any]:
    dm = _types()
    event_type, identifiers_type = dm.Event.pb(), dm.AdIdentifiers.pb()
    user_data_type, user_identifier = dm.UserData.pb(), dm.UserIdentifier.pb()
    consent_type = dm.Consent.pb()
    consent = {
        "GRANTED": dm.ConsentStatus.CONSENT_GRANTED,
        "DENIED": dm.ConsentStatus.CONSENT_DENIED,
    }
    source = None if event_source is None else dm.EventSource[event_source]
    seconds = batch["conversion_time"].astype("datetime64[s, UTC]").astype("int64").to_numpy()
    for row, second in zip(batch.to_dict("records"), seconds, strict=True):
        fields: dict[str, Any] = {
            "transaction_id": row["order_id"],
            "conversion_value": float(row["value"]),
            "currency": row["currency"],
        }
        if source is not None:
            fields["event_source"] = source
        fields["event_timestamp"] = {"seconds": int(second)}
        if row["click_id_kind"] == ClickIdKind.USER:
            people = [
                user_identifier(**{name: row[column]})
                for name, column in (
                    ("email_address", "hashed_email"),
                    ("phone_number", "hashed_phone"),
                )
                if not pd.isna(row[column])
            ]
            fields["user_data"] = user_data_type(user_identifiers=people)
        else:
            fields["ad_identifiers"] = identifiers_type(
                **{str(row["click_id_kind"]): row["click_id"]}
            )
        if not pd.isna(row["consent"]) and row["consent"] in consent:  # UNSPECIFIED: unset
            fields["consent"] = consent_type(ad_user_data=consent[row["consent"]])
        yield event_type(**fields)


def _request_outcome(response: Any) -> dict[str, Any]:
    """One request's verdict across its destinations (one here), decided here: the ledger
    only records it. Failures that are all "already ingested" mean Google has every event."""
    status_type = _types().RequestStatusPerDestination.RequestStatus
    states = {
        status_type.SUCCESS: RequestState.SUCCESS,
        status_type.PARTIAL_SUCCESS: RequestState.PARTIAL,
        status_type.FAILED: RequestState.FAILED,
        status_type.PROCESSING: RequestState.PROCESSING,
    }
    errors: dict[str, int] = {}
    state = RequestState.UNKNOWN
    for per_destination in response.request_status_per_destination:
        state = states.get(per_destination.request_status, RequestState.UNKNOWN)
        for count in per_destination.error_info.error_counts:
            reason = count.reason.name.removeprefix("PROCESSING_ERROR_REASON_")
            errors[reason] = errors.get(reason, 0) + int(count.record_count)
    only_duplicates = bool(errors) and set(errors) <= {"DUPLICATE_TRANSACTION_ID"}
    if state == RequestState.PARTIAL and only_duplicates:
        state = RequestState.SUCCESS  # the only "failures" were events Google already had
    elif state == RequestState.FAILED and only_duplicates:
        state = RequestState.DUPLICATE
    elif state in (RequestState.PARTIAL, RequestState.FAILED) and set(errors) & TOO_RECENT:
        # Google does not say which events were too recent: send them all again later; the
        # ones it has come back as DUPLICATE_TRANSACTION_ID, never as a second conversion.
        state = RequestState.RETRY
    message = ", ".join(
        f"{reason} {n}" + (f" ({PLAIN_WORDS[reason]})" if reason in PLAIN_WORDS else "")
        for reason, n in sorted(errors.items(), key=lambda item: -item[1])
    )
    if state == RequestState.PARTIAL:
        message = f"Google counted failures in this request, not which rows: {message}"
    if state == RequestState.RETRY:
        message = f"sent again in 6 hours: {message}"
    return {"state": str(state), "error_counts": errors, "message": message or None}


MAX_RESUBMISSIONS = 5  # requests refused for named events before the run stops

# Refusals of e-mail/phone events the account must fix, not the event: held, sent again once
# fixed (the Google Ads destination holds its CUSTOMER_NOT_ACCEPTED_* rows the same way).
ACCOUNT_REASONS = {
    "TERMS_AND_CONDITIONS_NOT_SIGNED": "the Google Ads account has not accepted the customer "
    "data terms: accept them in Google Ads (Goals → Conversions → Settings)",
    "DESTINATION_ACCOUNT_ENHANCED_CONVERSIONS_TERMS_NOT_SIGNED": "the Google Ads account has "
    "not accepted the enhanced conversions terms (Goals → Conversions → Settings)",
    "DESTINATION_ACCOUNT_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS": "enhanced conversions "
    "for leads are off in the Google Ads account: turn them on (Goals → Conversions → Settings)",
    "DESTINATION_ACCOUNT_DATA_POLICY_PROHIBITS_ENHANCED_CONVERSIONS": "Google's customer data "
    "policy does not allow e-mail/phone conversions for this account",
}
_EVENT_FIELD = re.compile(r"^events\[(\d+)\]")


class _EventsRefused(Exception):
    """Google refused a request for some of its events: position -> (reason, words);
    ``stop``: the refusal as a whole, should the positions make no sense."""

    def __init__(self, events: dict[int, tuple[str, str]], stop: DestinationError) -> None:
        super().__init__(f"{len(events)} events refused")
        self.events, self.stop = events, stop


class _RefusedWithoutDetails(Exception):
    """INVALID_ARGUMENT that names no field: an event, or the request itself."""

    def __init__(self, reason: str, words: str, stop: DestinationError) -> None:
        super().__init__(words)
        self.reason, self.words, self._stop = reason, words, stop

    def as_stop(self) -> DestinationError:
        return self._stop


def _refusal_or_translate(exc: BaseException) -> Exception:
    """A fast-fail refusal, located (events) or not, for _submit to split; else _translate.

    Google puts a google.rpc.BadRequest in the error details: each field violation names its
    field (``events[3].ad_identifiers.gclid``; ``events[3].adIdentifiers.gclid`` over REST)
    and the ErrorReason; an ErrorInfo carries the reason of the whole request."""
    translated = _translate(exc)
    if grpc_code(exc) != "INVALID_ARGUMENT":
        return translated
    violations = [
        violation
        for detail in getattr(exc, "details", None) or []
        for violation in getattr(detail, "field_violations", [])
    ]
    events: dict[int, tuple[str, str]] = {}
    for violation in violations:
        if match := _EVENT_FIELD.match(violation.field):
            reason = violation.reason or getattr(exc, "reason", None) or "INVALID_EVENT"
            where = violation.field[match.end() :].lstrip(".") or "the event"
            words = ACCOUNT_REASONS.get(
                reason, f"Google refused this event: {violation.description} ({where})"
            )
            events.setdefault(int(match[1]), (reason, words))
    assert isinstance(translated, DestinationError)  # INVALID_ARGUMENT: a refusal
    if events:
        return _EventsRefused(events, translated)
    if violations:  # the request's own fields (destination, encoding): no event to blame
        return translated
    reason = getattr(exc, "reason", None) or "INVALID_ARGUMENT"
    words = str(getattr(exc, "message", "") or exc).splitlines()[0][:300]
    return _RefusedWithoutDetails(reason, f"Google refused this event: {words}", translated)


def _refusal_outcomes(batch: pd.DataFrame, events: dict[int, tuple[str, str]]) -> pd.DataFrame:
    """REJECTED (fix it in the CRM) or HELD (fix the account) for each event Google named."""
    positions = sorted(events)
    reasons = [events[p][0] for p in positions]
    frame = outcomes(batch["key"].iloc[positions], Outcome.REJECTED)
    return frame.assign(
        status=[Outcome.HELD if r in ACCOUNT_REASONS else Outcome.REJECTED for r in reasons],
        error_code=pd.array(reasons, dtype="string"),
        message=pd.array([events[p][1] for p in positions], dtype="string"),
    )


def _warnings(response: Any, batch: pd.DataFrame) -> str:
    """Google's non-blocking field warnings: logged, and noted on the rows' message."""
    warnings = list(getattr(response, "field_warnings", []) or [])
    if not warnings:
        return ""
    reasons: dict[str, int] = {}
    for warning in warnings:
        name = warning.reason.name.removeprefix("WARNING_REASON_")
        reasons[name] = reasons.get(name, 0) + 1
    text = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
    log.warning("Data Manager warned about %d of %d events: %s", len(warnings), len(batch), text)
    return f"; Google warned: {text}"


class _UnknownRequest(Exception):
    """Google does not know (or no longer keeps) a request id."""


# A request Google does not know: send its events again, the transaction ids make the replay
# harmless (already ingested ones come back as duplicates). One such id never stops the poll.
UNKNOWN_REQUEST = {
    "state": RequestState.FAILED.value,
    "error_counts": {},
    "message": "Google does not know this request (expired?); its events are sent again",
}


def _unknown_request_or_translate(exc: BaseException) -> Exception:
    if grpc_code(exc) == "NOT_FOUND":
        return _UnknownRequest(str(exc))
    return _translate(exc)


def _quota_limit(exc: BaseException) -> str:
    """The quota a RESOURCE_EXHAUSTED names (ErrorInfo metadata.quota_limit), e.g.
    IngestionMutateRequestsPerMinutePerProject (300) or ...PerDayPerProject (100,000)."""
    metadata = getattr(exc, "metadata", None) or {}
    return str(metadata.get("quota_limit", "")) if hasattr(metadata, "get") else ""


def _is_transient(exc: BaseException) -> bool:
    """UNAVAILABLE and the like, and the per-minute quota (back off, it refills within the
    run); never the daily quota, which only the next day resets."""
    if grpc_code(exc) == "RESOURCE_EXHAUSTED":
        return "PerMinute" in _quota_limit(exc)
    return grpc_code(exc) in TRANSIENT_GRPC  # api_core exceptions carry their gRPC status


def _translate(exc: BaseException) -> Exception:
    """The client's exceptions -> ours: stop (exit 2) or try again later (exit 3)."""
    if isinstance(exc, ConfigError | DestinationError):
        return exc
    status = grpc_code(exc) or type(exc).__name__
    message = str(getattr(exc, "message", "") or exc).splitlines()[0][:300]
    if status in {"UNAUTHENTICATED", "PERMISSION_DENIED"}:
        return DestinationError(
            f"the Data Manager API refused these credentials ({status}: {message}); the "
            "account needs access to the Google Ads customer (login_customer_id for managers)",
            transient=False,
        )
    if status in {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND"}:
        return DestinationError(
            f"the Data Manager API refused the request ({status}: {message}); nothing more was "
            "sent",
            transient=False,
        )
    if status in {"RESOURCE_EXHAUSTED", "TooManyRequests"}:  # the latter: HTTP 429, no gRPC code
        limit = _quota_limit(exc)
        which = (
            "daily request quota (100,000 a project) is used up; it resets at midnight Pacific time"
            if "PerDay" in limit
            else "per-minute request quota (300 a project) stayed exhausted after backing off"
            if "PerMinute" in limit
            else "quota is used up for now"
        )
        return DestinationError(
            f"the Data Manager API {which}; the rest stays pending for the next run",
            transient=True,
        )
    return DestinationError(
        f"the Data Manager API is unavailable ({status}) after retries; the rows stay pending",
        transient=True,
    )
