"""A fake Google Ads API: a real gRPC server over TLS on localhost that the official
`google-ads` client talks to, unmodified (GOOGLE_ADS.md, "Testing without Google").

It answers ConversionUploadService.UploadClickConversions with per-row partial failures
(``GoogleAdsFailure`` in ``partial_failure_error``, each error located by row index) and
GoogleAdsService.Search for conversion actions. Knobs make it fail the way Google does:
whole-request errors carry a serialised GoogleAdsFailure in the trailing metadata.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import trustme
from google.ads.googleads.v26.enums.types.conversion_action_status import (
    ConversionActionStatusEnum,
)
from google.ads.googleads.v26.enums.types.conversion_action_type import (
    ConversionActionTypeEnum,
)
from google.ads.googleads.v26.enums.types.offline_conversion_diagnostic_status_enum import (
    OfflineConversionDiagnosticStatusEnum,
)
from google.ads.googleads.v26.enums.types.offline_event_upload_client_enum import (
    OfflineEventUploadClientEnum,
)
from google.ads.googleads.v26.errors.types.conversion_adjustment_upload_error import (
    ConversionAdjustmentUploadErrorEnum,
)
from google.ads.googleads.v26.errors.types.conversion_upload_error import (
    ConversionUploadErrorEnum,
)
from google.ads.googleads.v26.errors.types.date_error import DateErrorEnum
from google.ads.googleads.v26.errors.types.errors import (
    ErrorCode,
    ErrorLocation,
    GoogleAdsError,
    GoogleAdsFailure,
)
from google.ads.googleads.v26.errors.types.internal_error import InternalErrorEnum
from google.ads.googleads.v26.errors.types.not_allowlisted_error import NotAllowlistedErrorEnum
from google.ads.googleads.v26.errors.types.partial_failure_error import PartialFailureErrorEnum
from google.ads.googleads.v26.errors.types.quota_error import QuotaErrorEnum
from google.ads.googleads.v26.resources.types.conversion_action import ConversionAction
from google.ads.googleads.v26.resources.types.offline_conversion_upload_client_summary import (
    OfflineConversionAlert as Alert,
)
from google.ads.googleads.v26.resources.types.offline_conversion_upload_client_summary import (
    OfflineConversionError,
)
from google.ads.googleads.v26.resources.types.offline_conversion_upload_client_summary import (
    OfflineConversionUploadClientSummary as ClientSummary,
)
from google.ads.googleads.v26.resources.types.offline_conversion_upload_conversion_action_summary import (  # noqa: E501
    OfflineConversionUploadConversionActionSummary as ActionSummary,
)
from google.ads.googleads.v26.services.types.conversion_adjustment_upload_service import (
    ConversionAdjustmentResult,
    UploadConversionAdjustmentsRequest,
    UploadConversionAdjustmentsResponse,
)
from google.ads.googleads.v26.services.types.conversion_upload_service import (
    ClickConversionResult,
    UploadClickConversionsRequest,
    UploadClickConversionsResponse,
)
from google.ads.googleads.v26.services.types.google_ads_service import (
    GoogleAdsRow,
    SearchGoogleAdsRequest,
    SearchGoogleAdsResponse,
)
from google.protobuf import any_pb2
from google.rpc import status_pb2

VERSION = "v26"
FAILURE_KEY = f"google.ads.googleads.{VERSION}.errors.googleadsfailure-bin"
UPLOAD = ConversionUploadErrorEnum.ConversionUploadError
ENABLED = ConversionActionStatusEnum.ConversionActionStatus.ENABLED
UPLOAD_CLICKS = ConversionActionTypeEnum.ConversionActionType.UPLOAD_CLICKS
DIAGNOSTIC = OfflineConversionDiagnosticStatusEnum.OfflineConversionDiagnosticStatus
GOOGLE_ADS_API = OfflineEventUploadClientEnum.OfflineEventUploadClient.GOOGLE_ADS_API
REQUEST_PB = UploadClickConversionsRequest.pb()
RESPONSE_PB = UploadClickConversionsResponse.pb()
RESULT_PB = ClickConversionResult.pb()
ADJUSTMENT_REQUEST_PB = UploadConversionAdjustmentsRequest.pb()
ADJUSTMENT_RESPONSE_PB = UploadConversionAdjustmentsResponse.pb()
ADJUSTMENT_RESULT_PB = ConversionAdjustmentResult.pb()
ADJUST = ConversionAdjustmentUploadErrorEnum.ConversionAdjustmentUploadError
PARTIAL_REQUIRED = PartialFailureErrorEnum.PartialFailureError.PARTIAL_FAILURE_MODE_REQUIRED
BAD_DATE_TIME = DateErrorEnum.DateError.INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET
# conversion_date_time and adjustment_date_time: "yyyy-mm-dd hh:mm:ss+|-hh:mm"
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass
class FakeGoogleAds:
    """State and failure knobs of the fake API (read them in tests, set them before calls)."""

    customer_id: str = "1234567890"
    actions: dict[int, tuple[str, int, int]] = field(
        default_factory=lambda: {
            101: ("CRM lead", UPLOAD_CLICKS, ENABLED),
            102: ("CRM qualified", UPLOAD_CLICKS, ENABLED),
            103: ("CRM won", UPLOAD_CLICKS, ENABLED),
        }
    )
    row_errors: dict[str, int] = field(default_factory=dict)  # gclid -> ConversionUploadError
    unavailable_times: int = 0  # the next N upload calls fail with UNAVAILABLE
    aborted_times: int = 0  # the next N upload calls fail with ABORTED (a conflict, retryable)
    search_unavailable_times: int = 0  # the next N GAQL searches fail with UNAVAILABLE
    search_calls: int = 0
    adjustments_quota_exhausted: bool = False
    latency: float = 0.0  # seconds each upload takes on the way (outside the lock: overlaps)
    quota_after: int | None = None  # uploads after this many answer RESOURCE_EXHAUSTED
    in_flight: int = 0
    most_in_flight: int = 0
    outage_after: int | None = None  # after this many uploads, every call is UNAVAILABLE
    quota_exhausted: bool = False
    not_allowlisted: bool = False  # a developer token new since June 2026
    transient_errors: int = 0  # the next N calls fail with InternalError.TRANSIENT_ERROR
    data_terms_accepted: bool = True  # False: every e-mail/phone conversion is refused
    refused_actions: set[int] = field(default_factory=set)  # removed after the lookup
    upload_requests: list[UploadClickConversionsRequest] = field(default_factory=list)
    # (action resource name, order id) -> what Google keeps of the conversion
    conversions: dict[tuple[str, str], Stored] = field(default_factory=dict)
    accepted_actions: dict[str, int] = field(default_factory=dict)  # resource name -> count
    failed_rows: int = 0
    restated: dict[str, float] = field(default_factory=dict)  # order_id -> restated value
    adjustment_requests: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def accepted(self) -> dict[str, str]:
        """order id -> click id of every conversion Google has."""
        return {order_id: kept.click for (_, order_id), kept in self.conversions.items()}

    def reset(self) -> None:
        """Back to a fresh account (the server keeps serving the same object)."""
        fresh = FakeGoogleAds()
        for knob in fields(self):
            if knob.name != "_lock":
                setattr(self, knob.name, getattr(fresh, knob.name))

    @property
    def uploaded(self) -> int:
        return sum(len(r.conversions) for r in self.upload_requests)

    # -- ConversionUploadService ----------------------------------------------------------

    def upload(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Requests and responses are raw protobuf messages here (see ``upload_requests``)."""
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            return self._upload(request, context)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _upload(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.upload_requests.append(request)
            if self.quota_after is not None and len(self.upload_requests) > self.quota_after:
                self.quota_exhausted = True
            if self.outage_after is not None and len(self.upload_requests) > self.outage_after:
                context.abort(grpc.StatusCode.UNAVAILABLE, "fake: connection lost")
            if self.unavailable_times > 0:
                self.unavailable_times -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "fake: try again")
            if self.aborted_times > 0:
                self.aborted_times -= 1
                context.abort(grpc.StatusCode.ABORTED, "fake: concurrent modification")
            if self.not_allowlisted:
                self._abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    _failure(
                        not_allowlisted_error=NotAllowlistedErrorEnum.NotAllowlistedError.CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE,
                        message="fake: not allowlisted",
                    ),
                )
            if self.transient_errors > 0:
                self.transient_errors -= 1
                self._abort(
                    context,
                    grpc.StatusCode.INTERNAL,
                    _failure(
                        internal_error=InternalErrorEnum.InternalError.TRANSIENT_ERROR,
                        message="fake: transient",
                    ),
                )
            if self.quota_exhausted:
                self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, QUOTA_USED_UP)
            if not request.partial_failure:
                self._abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    _failure(partial_failure_error=PARTIAL_REQUIRED, message="fake: partial"),
                )
            if len(request.conversions) > 2000:
                self._abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    _failure(
                        conversion_upload_error=UPLOAD.TOO_MANY_CONVERSIONS_IN_REQUEST,
                        message="fake: at most 2000 conversions",
                    ),
                )
            # Raw protobuf on the hot path: the fake must not be the benchmark's bottleneck.
            errors: list[GoogleAdsError] = []
            results = []
            clicks = collections.Counter(_click_key(c) for c in request.conversions)
            orders = collections.Counter(
                (c.conversion_action, c.order_id) for c in request.conversions if c.order_id
            )
            known_clicks = {kept.click_key for kept in self.conversions.values()}
            for index, conversion in enumerate(request.conversions):
                refusal = self._refusal(conversion, clicks, orders, known_clicks)
                if refusal is not None:
                    self.failed_rows += not request.validate_only
                    errors.append(_row_error(index, *refusal))
                    results.append(RESULT_PB())
                    continue
                if not request.validate_only:
                    action, (kind, click) = conversion.conversion_action, _click(conversion)
                    self.conversions[(action, conversion.order_id)] = Stored(
                        action, kind, click, conversion.conversion_date_time
                    )
                    self.accepted_actions[action] = self.accepted_actions.get(action, 0) + 1
                results.append(
                    RESULT_PB(
                        gclid=conversion.gclid,
                        conversion_action=conversion.conversion_action,
                        conversion_date_time=conversion.conversion_date_time,
                    )
                )
        response = RESPONSE_PB(results=results)
        if errors:
            response.partial_failure_error.CopyFrom(_partial_failure(errors))
        return response

    def _refusal(
        self,
        conversion: Any,
        clicks: collections.Counter[tuple[str, str, str]],
        orders: collections.Counter[tuple[str, str]],
        known_clicks: set[tuple[str, str, str]],
    ) -> tuple[int, str] | None:
        """Google's per-row verdict, in the order its documentation gives the checks:
        (error code, the ErrorCode field it belongs to), or None when accepted."""
        kind, click = _click(conversion)
        prefix, _, action_id = conversion.conversion_action.rpartition("/")
        if conversion.gclid and conversion.gclid in self.row_errors:
            return self.row_errors[conversion.gclid], "conversion_upload_error"
        if (
            prefix != f"customers/{self.customer_id}/conversionActions"
            or not action_id.isdigit()
            or int(action_id) not in self.actions
            or int(action_id) in self.refused_actions
        ):
            return UPLOAD.NO_CONVERSION_ACTION_FOUND, "conversion_upload_error"
        if not DATE_TIME.fullmatch(conversion.conversion_date_time):
            return BAD_DATE_TIME, "date_error"
        if conversion.gbraid and conversion.wbraid:
            return UPLOAD.GBRAID_WBRAID_BOTH_SET, "conversion_upload_error"
        if kind == "user_identifiers":
            if not self.data_terms_accepted:
                return UPLOAD.CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS, "conversion_upload_error"
            hashes = [i.hashed_email or i.hashed_phone_number for i in conversion.user_identifiers]
            if not hashes or not all(SHA256_HEX.fullmatch(h) for h in hashes):
                return UPLOAD.INVALID_USER_IDENTIFIER, "conversion_upload_error"
        if orders[(conversion.conversion_action, conversion.order_id)] > 1:
            return UPLOAD.DUPLICATE_ORDER_ID, "conversion_upload_error"
        if click and clicks[_click_key(conversion)] > 1:
            return UPLOAD.DUPLICATE_CLICK_CONVERSION_IN_REQUEST, "conversion_upload_error"
        if (conversion.conversion_action, conversion.order_id) in self.conversions:
            return UPLOAD.ORDER_ID_ALREADY_IN_USE, "conversion_upload_error"
        if click and _click_key(conversion) in known_clicks:
            return UPLOAD.CLICK_CONVERSION_ALREADY_EXISTS, "conversion_upload_error"
        return None

    def adjust(self, request: Any, context: grpc.ServicerContext) -> Any:
        """ConversionAdjustmentUploadService: restatements of conversions it has accepted."""
        with self._lock:
            self.adjustment_requests.append(request)
            if self.adjustments_quota_exhausted:
                self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, QUOTA_USED_UP)
            errors: list[GoogleAdsError] = []
            results = []
            for index, adjustment in enumerate(request.conversion_adjustments):
                kept = self.conversions.get((adjustment.conversion_action, adjustment.order_id))
                code = _adjustment_refusal(adjustment, kept)
                if code is not None:
                    kind = (
                        "date_error"
                        if isinstance(code, DateErrorEnum.DateError)
                        else "conversion_adjustment_upload_error"
                    )
                    errors.append(_row_error(index, code, kind, "conversion_adjustments"))
                    results.append(ADJUSTMENT_RESULT_PB())
                    continue
                if not request.validate_only and kept is not None:
                    kept.adjusted_at = adjustment.adjustment_date_time
                    self.restated[adjustment.order_id] = adjustment.restatement_value.adjusted_value
                results.append(ADJUSTMENT_RESULT_PB(order_id=adjustment.order_id))
        response = ADJUSTMENT_RESPONSE_PB(results=results)
        if errors:
            response.partial_failure_error.CopyFrom(_partial_failure(errors))
        return response

    @staticmethod
    def _abort(
        context: grpc.ServicerContext, code: grpc.StatusCode, failure: GoogleAdsFailure
    ) -> None:
        """A whole-request error the way Google sends it: the failure in trailing metadata."""
        context.set_trailing_metadata(((FAILURE_KEY, GoogleAdsFailure.serialize(failure)),))
        context.abort(code, failure.errors[0].message)

    # -- GoogleAdsService -----------------------------------------------------------------

    def search(
        self, request: SearchGoogleAdsRequest, context: grpc.ServicerContext
    ) -> SearchGoogleAdsResponse:
        with self._lock:
            self.search_calls += 1
            if self.search_unavailable_times > 0:
                self.search_unavailable_times -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "fake: try again")
        rows = []
        if "FROM conversion_action" in request.query:
            for action_id, (name, kind, status) in self.actions.items():
                rows.append(
                    GoogleAdsRow(
                        conversion_action=ConversionAction(
                            resource_name=f"customers/{request.customer_id}/conversionActions/{action_id}",
                            id=action_id,
                            name=name,
                            type_=kind,
                            status=status,
                        )
                    )
                )
        elif "FROM offline_conversion_upload_client_summary" in request.query:
            total = len(self.accepted) + self.failed_rows
            rows.append(
                GoogleAdsRow(
                    offline_conversion_upload_client_summary=ClientSummary(
                        client=GOOGLE_ADS_API,
                        status=DIAGNOSTIC.NEEDS_ATTENTION
                        if self.failed_rows
                        else DIAGNOSTIC.EXCELLENT,
                        total_event_count=total,
                        successful_event_count=len(self.accepted),
                        success_rate=len(self.accepted) / total if total else 0.0,
                        last_upload_date_time="2026-11-23 06:15:00",
                        alerts=[
                            Alert(
                                error=OfflineConversionError(
                                    conversion_upload_error=UPLOAD.UNPARSEABLE_GCLID
                                ),
                                error_percentage=self.failed_rows / total,
                            )
                        ]
                        if self.failed_rows
                        else [],
                    )
                )
            )
        elif "FROM offline_conversion_upload_conversion_action_summary" in request.query:
            for resource, count in sorted(self.accepted_actions.items()):
                action_id = int(resource.rsplit("/", 1)[1])
                rows.append(
                    GoogleAdsRow(
                        offline_conversion_upload_conversion_action_summary=(
                            ActionSummary(
                                conversion_action_id=action_id,
                                conversion_action_name=self.actions[action_id][0],
                                status=DIAGNOSTIC.EXCELLENT,
                                total_event_count=count,
                                successful_event_count=count,
                                last_upload_date_time="2026-11-23 06:15:00",
                            )
                        )
                    )
                )
        return SearchGoogleAdsResponse(results=rows, total_results_count=len(rows))


@dataclass
class Stored:
    """What Google keeps of an accepted conversion (what its duplicate and adjustment checks
    compare against)."""

    action: str
    kind: str  # gclid | gbraid | wbraid | user_identifiers
    click: str
    time: str  # conversion_date_time as sent
    adjusted_at: str | None = None  # the latest accepted adjustment_date_time

    @property
    def click_key(self) -> tuple[str, str, str]:
        return (self.action, self.click, self.time)


def _click(conversion: Any) -> tuple[str, str]:
    """(kind, click id) of a ClickConversion; e-mail/phone ones have no click id."""
    for kind in ("gclid", "gbraid", "wbraid"):
        if getattr(conversion, kind):
            return kind, getattr(conversion, kind)
    return "user_identifiers", ""


def _click_key(conversion: Any) -> tuple[str, str, str]:
    """What CLICK_CONVERSION_ALREADY_EXISTS compares: the click, the action, the time."""
    return (conversion.conversion_action, _click(conversion)[1], conversion.conversion_date_time)


def _adjustment_refusal(adjustment: Any, kept: Stored | None) -> Any:
    """The adjustment rules (upload-adjustments guide, ConversionAdjustmentUploadError): by
    order id, up to 54 days after the conversion, after it and after any earlier adjustment,
    never a wbraid conversion. No 24-hour wait since September 2024."""
    if not DATE_TIME.fullmatch(adjustment.adjustment_date_time):
        return BAD_DATE_TIME
    if kept is None or kept.kind == "wbraid":  # Google does not find wbraid ones to adjust
        return ADJUST.CONVERSION_NOT_FOUND
    when, converted = _parse(adjustment.adjustment_date_time), _parse(kept.time)
    if when < converted:
        return ADJUST.ADJUSTMENT_PRECEDES_CONVERSION
    if when - converted > timedelta(days=54):
        return ADJUST.CONVERSION_EXPIRED
    if kept.adjusted_at is not None:
        before = _parse(kept.adjusted_at)
        if when == before:
            return ADJUST.RESTATEMENT_ALREADY_EXISTS
        if when < before:
            return ADJUST.MORE_RECENT_RESTATEMENT_FOUND
    return None


def _parse(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S%z")


def fake_client(endpoint: str) -> Any:
    """The real GoogleAdsClient, pointed at the fake, with a ready access token (no OAuth)."""
    from google.ads.googleads.client import GoogleAdsClient
    from google.oauth2.credentials import Credentials

    return GoogleAdsClient(
        credentials=Credentials(token="test-token"),
        developer_token="dev-token",
        endpoint=endpoint,
        use_proto_plus=True,
        version=VERSION,
    )


def _row_error(
    index: int, code: int, kind: str = "conversion_upload_error", list_field: str = "conversions"
) -> GoogleAdsError:
    element = ErrorLocation.FieldPathElement(field_name=list_field, index=index)
    return GoogleAdsError(
        error_code=ErrorCode(**{kind: code}),
        message=f"fake: {kind} {code}",
        location=ErrorLocation(field_path_elements=[element]),
    )


def _partial_failure(errors: list[GoogleAdsError]) -> status_pb2.Status:
    """google.rpc.Status with the GoogleAdsFailure packed in, as Google answers partial failure."""
    detail = any_pb2.Any(
        type_url=f"type.googleapis.com/google.ads.googleads.{VERSION}.errors.GoogleAdsFailure",
        value=GoogleAdsFailure.serialize(GoogleAdsFailure(errors=errors)),
    )
    return status_pb2.Status(code=3, message=f"{len(errors)} rows failed", details=[detail])


def _failure(*, message: str, **code: int) -> GoogleAdsFailure:
    return GoogleAdsFailure(errors=[GoogleAdsError(error_code=ErrorCode(**code), message=message)])


# The daily quota, as uploads and adjustments alike answer it.
QUOTA_USED_UP = _failure(
    quota_error=QuotaErrorEnum.QuotaError.RESOURCE_EXHAUSTED, message="fake: daily quota used up"
)


def _handler(method, request_type, response_type, raw=False):  # type: ignore[no-untyped-def]
    return grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=request_type.FromString if raw else request_type.deserialize,
        response_serializer=(lambda m: m.SerializeToString()) if raw else response_type.serialize,
    )


@contextmanager
def serve(fake: FakeGoogleAds, workdir: Path) -> Iterator[tuple[str, Path]]:
    """Run the fake on localhost over TLS; yields (endpoint, CA file for the client).

    gRPC reads GRPC_DEFAULT_SSL_ROOTS_FILE_PATH once per process: start one server per test
    session and reset the fake between tests.
    """
    authority = trustme.CA()
    certificate = authority.issue_cert("localhost")
    ca_file = workdir / "fake-google-ads-ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    services = f"google.ads.googleads.{VERSION}.services"
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                f"{services}.ConversionUploadService",
                {
                    "UploadClickConversions": _handler(
                        fake.upload, REQUEST_PB, RESPONSE_PB, raw=True
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                f"{services}.ConversionAdjustmentUploadService",
                {
                    "UploadConversionAdjustments": _handler(
                        fake.adjust, ADJUSTMENT_REQUEST_PB, ADJUSTMENT_RESPONSE_PB, raw=True
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                f"{services}.GoogleAdsService",
                {
                    "Search": _handler(
                        fake.search, SearchGoogleAdsRequest, SearchGoogleAdsResponse
                    ),
                },
            ),
        )
    )
    key = certificate.private_key_pem.bytes()
    chain = b"".join(blob.bytes() for blob in certificate.cert_chain_pems)
    port = server.add_secure_port("localhost:0", grpc.ssl_server_credentials([(key, chain)]))
    server.start()
    try:
        yield f"localhost:{port}", ca_file
    finally:
        server.stop(grace=None)


def main() -> None:
    """Serve the fake in its own process (benchmarks: Google is not in our process either).

    Prints "<endpoint> <CA file>" on one line, then serves until stdin closes. An argument
    is a network latency in milliseconds, added to every upload.
    """
    import sys
    import tempfile

    latency = float(sys.argv[1]) / 1000 if len(sys.argv) > 1 else 0.0  # milliseconds
    with serve(
        FakeGoogleAds(latency=latency), Path(tempfile.mkdtemp(prefix="fake-google-ads-"))
    ) as (
        endpoint,
        ca_file,
    ):
        print(endpoint, ca_file, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
