"""A fake Data Manager API: IngestionService on a local gRPC server, for the official
`google-ads-datamanager` client (given a transport on a local channel).

Like Google, it processes a request when it accepts it (so a request the client never hears
back about still counts) but reports the outcome only through RetrieveRequestStatus: first
PROCESSING (``polls_until_done`` times), then SUCCESS, PARTIAL_SUCCESS or FAILED with error
counts by reason. An event whose transaction id the destination already has is a
DUPLICATE_TRANSACTION_ID error, which is how replays are recognised.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.ads import datamanager_v1 as dm

SERVICE = "google.ads.datamanager.v1.IngestionService"
Status = dm.RequestStatusPerDestination.RequestStatus
Reason = dm.ProcessingErrorReason
MAX_EVENTS = 2000


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
    retrieve_unavailable: bool = False  # RetrieveRequestStatus fails with UNAVAILABLE
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
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "fake: quota exceeded")
            problem = _invalid(request)
            if problem:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"fake: {problem}")
            if request.validate_only:
                self.validate_calls += 1
                return dm.IngestEventsResponse()
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
            return dm.IngestEventsResponse(request_id=request_id)

    def retrieve(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            if self.retrieve_unavailable:
                context.abort(grpc.StatusCode.UNAVAILABLE, "fake: the service is unavailable")
            submitted = self.requests.get(request.request_id)
            if submitted is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "fake: no such request")
            assert submitted is not None
            submitted.polls += 1
            if submitted.polls <= self.polls_until_done:
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


def _invalid(request: Any) -> str | None:
    """The fast-fail checks Google makes before accepting a request."""
    if len(request.destinations) != 1:
        return "one destination per request here"
    destination = request.destinations[0]
    account = destination.operating_account
    if account.account_type != dm.ProductAccount.AccountType.GOOGLE_ADS:
        return "operating_account must be a Google Ads account"
    if not account.account_id.isdigit() or not destination.product_destination_id.isdigit():
        return "INVALID_CONVERSION_ACTION_ID"
    if not request.events or len(request.events) > MAX_EVENTS:
        return f"TOO_MANY_EVENTS ({len(request.events)})"
    for event in request.events:
        has_click = any(getattr(event.ad_identifiers, n) for n in ("gclid", "gbraid", "wbraid"))
        if not event.transaction_id or not event.currency or not event.event_timestamp:
            return "REQUIRED_FIELD_MISSING"
        if not has_click and not event.user_data.user_identifiers:
            return "NO_IDENTIFIERS_PROVIDED"
    return None


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
