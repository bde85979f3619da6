"""A fake Data Manager API: IngestionService on a local gRPC server, for the official
`google-ads-datamanager` client (given a transport on a local channel).

Like Google, it processes a request when it accepts it (so a request the client never hears
back about still counts) but reports the outcome only through RetrieveRequestStatus: first
PROCESSING (``polls_until_done`` times), then SUCCESS, PARTIAL_SUCCESS or FAILED with error
counts by reason. An event whose transaction id the destination already has is a
DUPLICATE_TRANSACTION_ID error, which is how replays are recognised.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.ads import datamanager_v1 as dm
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

SERVICE = "google.ads.datamanager.v1.IngestionService"
Status = dm.RequestStatusPerDestination.RequestStatus
Reason = dm.ProcessingErrorReason
MAX_EVENTS = 2000
_CURRENCY = re.compile(r"[A-Z]{3}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CONSENTS = {dm.ConsentStatus.CONSENT_GRANTED, dm.ConsentStatus.CONSENT_DENIED}


@dataclass
class Submitted:
    destination: Any
    events: list[Any]
    status: Any
    errors: dict[str, int]
    polls: int = 0


@dataclass
class FakeDataManager:
    polls_until_done: int = 0  # PROCESSING answers before the outcome
    partial: dict[str, int] = field(default_factory=dict)  # next request: reason -> failed events
    fail_requests: set[int] = field(default_factory=set)  # request numbers that fail whole
    unavailable_times: int = 0
    exhausted_times: int = 0  # the next N ingest calls fail with RESOURCE_EXHAUSTED (quota)
    quota_limit: str = "IngestionMutateRequestsPerDayPerProject"  # named in the ErrorInfo
    retrieve_unavailable: bool = False  # RetrieveRequestStatus fails with UNAVAILABLE
    bad_gclids: set[str] = field(default_factory=set)  # refused whole, the event named
    refused_unnamed: set[str] = field(default_factory=set)  # refused whole, nothing named
    terms_signed: bool = True  # False: e-mail/phone events refuse their request
    unknown_polls: int = 0  # REQUEST_STATUS_UNKNOWN answers before the real status
    warn_gclids: set[str] = field(default_factory=set)  # accepted with a field warning
    refused_calls: int = 0
    ingested: dict[str, dict[str, Any]] = field(default_factory=dict)  # action -> txn -> event
    requests: dict[str, Submitted] = field(default_factory=dict)
    ingest_calls: int = 0
    validate_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    @property
    def accepted(self) -> int:
        return sum(len(events) for events in self.ingested.values())

    def ingest(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            if self.unavailable_times:
                self.unavailable_times -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "fake: the service is unavailable")
            if self.exhausted_times:
                self.exhausted_times -= 1
                _abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "fake: quota exceeded",
                    reason="RESOURCE_EXHAUSTED",
                    metadata={"quota_limit": self.quota_limit},
                )
            problem = _invalid(request)
            if problem:
                self.refused_calls += 1
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"fake: {problem[1]}", [problem])
            violations = self._event_violations(request)
            if violations:
                self.refused_calls += 1
                _abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, "fake: invalid events", violations
                )
            if any(e.ad_identifiers.gclid in self.refused_unnamed for e in request.events):
                self.refused_calls += 1
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "fake: request is invalid")
            warnings = [
                dm.FieldWarning(
                    reason=dm.WarningReason.WARNING_REASON_GENERIC,
                    description="fake: looks odd",
                    field=f"events[{n}].ad_identifiers.gclid",
                )
                for n, event in enumerate(request.events)
                if event.ad_identifiers.gclid in self.warn_gclids
            ]
            if request.validate_only:
                self.validate_calls += 1
                return dm.IngestEventsResponse(field_warnings=warnings)
            self.ingest_calls += 1
            destination = request.destinations[0]
            action = destination.product_destination_id
            have = self.ingested.setdefault(action, {})
            errors: dict[str, int] = {}
            failing = dict(self.partial)
            self.partial = {}
            whole_failure = self.ingest_calls in self.fail_requests
            fresh = 0
            for event in request.events:
                reason = None
                if event.transaction_id in have:
                    reason = "PROCESSING_ERROR_REASON_DUPLICATE_TRANSACTION_ID"
                elif whole_failure:
                    reason = "PROCESSING_ERROR_REASON_INTERNAL_ERROR"
                elif failing:
                    reason = next(iter(failing))
                    failing[reason] -= 1
                    if not failing[reason]:
                        del failing[reason]
                    reason = f"PROCESSING_ERROR_REASON_{reason}"
                if reason:
                    errors[reason] = errors.get(reason, 0) + 1
                else:
                    have[event.transaction_id] = event
                    fresh += 1
            status = (
                Status.SUCCESS if not errors else Status.PARTIAL_SUCCESS if fresh else Status.FAILED
            )
            request_id = str(uuid.uuid4())
            self.requests[request_id] = Submitted(destination, list(request.events), status, errors)
            return dm.IngestEventsResponse(request_id=request_id, field_warnings=warnings)

    def _event_violations(self, request: Any) -> list[tuple[str, str, str]]:
        """(field, reason, description) for each event that fails validation: the fast-fail
        model refuses the whole request and names them in a google.rpc.BadRequest."""
        found = []
        for n, event in enumerate(request.events):
            people = event.user_data.user_identifiers
            if event.ad_identifiers.gclid in self.bad_gclids:
                found.append(
                    (f"events[{n}].ad_identifiers.gclid", "INVALID_FORMAT", "fake: bad gclid")
                )
            elif not _CURRENCY.fullmatch(event.currency):
                found.append((f"events[{n}].currency", "INVALID_CURRENCY_CODE", "fake: currency"))
            elif "consent" in event and event.consent.ad_user_data not in _CONSENTS:
                found.append(  # a consent sent must say granted or denied
                    (f"events[{n}].consent.ad_user_data", "INVALID_ENUM_VALUE", "fake: consent")
                )
            elif people and not self.terms_signed:
                found.append(
                    (
                        f"events[{n}].user_data",
                        "DESTINATION_ACCOUNT_ENHANCED_CONVERSIONS_TERMS_NOT_SIGNED",
                        "fake: terms not signed",
                    )
                )
            else:
                for m, person in enumerate(people):
                    value = person.email_address or person.phone_number
                    if not _SHA256_HEX.fullmatch(value):
                        found.append(
                            (
                                f"events[{n}].user_data.user_identifiers[{m}]",
                                "INVALID_SHA256_FORMAT",
                                "fake: not a hex SHA-256 (encoding HEX)",
                            )
                        )
        return found

    def retrieve(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            if self.retrieve_unavailable:
                context.abort(grpc.StatusCode.UNAVAILABLE, "fake: the service is unavailable")
            submitted = self.requests.get(request.request_id)
            if submitted is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "fake: no such request")
            assert submitted is not None
            submitted.polls += 1
            if self.unknown_polls:
                self.unknown_polls -= 1
                status, errors = Status.REQUEST_STATUS_UNKNOWN, {}
            elif submitted.polls <= self.polls_until_done:
                status, errors = Status.PROCESSING, {}
            else:
                status, errors = submitted.status, submitted.errors
            per_destination = dm.RequestStatusPerDestination(
                destination=submitted.destination,
                request_status=status,
                error_info=dm.ErrorInfo(
                    error_counts=[
                        dm.ErrorCount(record_count=n, reason=Reason[reason])
                        for reason, n in errors.items()
                    ]
                ),
            )
            return dm.RetrieveRequestStatusResponse(
                request_status_per_destination=[per_destination]
            )


def _invalid(request: Any) -> tuple[str, str, str] | None:
    """The fast-fail checks of the request's own fields: (field, reason, description)."""
    if len(request.destinations) != 1:
        return ("destinations", "TOO_MANY_DESTINATIONS", "one destination per request here")
    destination = request.destinations[0]
    account = destination.operating_account
    if account.account_type != dm.ProductAccount.AccountType.GOOGLE_ADS:
        return ("destinations[0].operating_account", "INVALID_DESTINATION", "not Google Ads")
    if not account.account_id.isdigit() or not destination.product_destination_id.isdigit():
        return (
            "destinations[0].product_destination_id",
            "INVALID_CONVERSION_ACTION_ID",
            "not a conversion action id",
        )
    if not request.events or len(request.events) > MAX_EVENTS:
        return ("events", "TOO_MANY_EVENTS", f"{len(request.events)} events")
    hashed = any(e.user_data.user_identifiers for e in request.events)
    if hashed and request.encoding != dm.Encoding.HEX:
        return ("encoding", "INVALID_ENUM_VALUE", "hashed identifiers need an encoding (HEX)")
    for n, event in enumerate(request.events):
        has_click = any(getattr(event.ad_identifiers, k) for k in ("gclid", "gbraid", "wbraid"))
        if not event.transaction_id or not event.currency or not event.event_timestamp:
            return (f"events[{n}]", "REQUIRED_FIELD_MISSING", "transaction id, currency, time")
        if not has_click and not event.user_data.user_identifiers:
            return (f"events[{n}]", "NO_IDENTIFIERS_PROVIDED", "no click id, no user data")
    return None


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    violations: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
    *,
    reason: str = "INVALID_ARGUMENT",
    metadata: dict[str, str] | None = None,
) -> None:
    """An error the way Google's APIs send one (AIP-193): a google.rpc.Status whose details
    carry an ErrorInfo (reason, domain, metadata) and a BadRequest naming each field."""
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain="datamanager.googleapis.com", metadata=metadata or {}
    )
    details = [info]
    if violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=name, reason=why, description=words
                    )
                    for name, why, words in violations
                ]
            )
        )
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    context.abort_with_status(rpc_status.to_status(status))


def _handler(method: Callable[..., Any], request: Any, response: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=request.deserialize,
        response_serializer=response.serialize,
    )


@contextmanager
def serve(fake: FakeDataManager) -> Iterator[str]:
    """Serve on localhost (plain gRPC: the client gets a transport on a local channel)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "IngestEvents": _handler(
                        fake.ingest, dm.IngestEventsRequest, dm.IngestEventsResponse
                    ),
                    "RetrieveRequestStatus": _handler(
                        fake.retrieve,
                        dm.RetrieveRequestStatusRequest,
                        dm.RetrieveRequestStatusResponse,
                    ),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def fake_client(address: str) -> Any:
    """The official IngestionServiceClient on a channel to the fake (no Google sign-in)."""
    from google.ads.datamanager_v1.services.ingestion_service.transports import (
        IngestionServiceGrpcTransport,
    )

    channel = grpc.insecure_channel(address)
    return dm.IngestionServiceClient(transport=IngestionServiceGrpcTransport(channel=channel))


def main() -> None:
    """Serve the fake in its own process (benchmarks); prints the address, serves until stdin
    closes."""
    import sys

    with serve(FakeDataManager()) as address:
        print(address, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
