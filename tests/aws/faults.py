"""Faults as AWS sends them, injected between an adapter's boto3 client and the moto server.

botocore's ``before-send`` event lets a handler answer a request itself: the answer is then parsed
exactly as one from the service, so each fault here is the service's own wire shape, and the
adapters under test meet it through their real error handling. What a schedule can do to one
operation (``CodeBuild.BatchGetBuilds``, ``Batch.SubmitJob``, ``S3.PutObject`` …):

- ``throttle``: CodeBuild's HTTP 400 JSON ``ThrottlingException``, Batch's HTTP 429
  ``TooManyRequestsException`` (``x-amzn-ErrorType``), S3's HTTP 503 ``SlowDown`` (XML), DynamoDB's
  HTTP 400 ``ThrottlingException``; nothing reaches moto;
- ``error``: an HTTP 500 of the service's kind; nothing reaches moto;
- ``slow``: the call takes longer than the client waits: a ``ReadTimeoutError`` after
  ``slow_seconds`` (the request reached moto first: it took effect, as a slow call may);
- ``lost``: the request reaches moto and takes effect, the answer never comes back
  (``ReadTimeoutError``);
- listings lag: ``ListJobs`` and ``ListBuildsForProject`` leave out what was submitted in the last
  ``lag_seconds`` (eventual consistency).

Decisions come from a seeded random source per schedule, so a run can be repeated. Test code only:
the product has no fault hook.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session

KINDS = ("throttle", "error", "slow", "lost")


class _Raw:
    """The body of an answer made here, readable the way botocore reads a urllib3 response."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, amt: int | None = None, decode_content: bool = True) -> Any:
        yield self._body

    def read(self, amt: int | None = None) -> bytes:
        body, self._body = self._body, b""
        return body


def _response(url: str, status: int, headers: Mapping[str, str], body: bytes) -> AWSResponse:
    return AWSResponse(url, status, {**headers, "content-length": str(len(body))}, _Raw(body))


def wire_fault(service: str, kind: str, url: str) -> AWSResponse:
    """The answer ``service`` sends for a throttled request (``throttle``) or a server fault (``error``)."""
    if service == "s3":
        code, status = ("SlowDown", 503) if kind == "throttle" else ("InternalError", 500)
        message = (
            "Please reduce your request rate." if kind == "throttle" else "We encountered an internal error."
        )
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        return _response(url, status, {"content-type": "application/xml"}, body.encode())
    if service == "batch":
        code, status = ("TooManyRequestsException", 429) if kind == "throttle" else ("ServerException", 500)
        headers = {
            "content-type": "application/json",
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/",
        }
        return _response(url, status, headers, json.dumps({"message": "Too Many Requests."}).encode())
    # The JSON protocol services (CodeBuild, DynamoDB): the error code travels in "__type".
    code, status = ("ThrottlingException", 400) if kind == "throttle" else ("InternalServerException", 500)
    body = json.dumps(
        {"__type": code, "message": "Rate exceeded" if kind == "throttle" else "Internal error"}
    )
    return _response(url, status, {"content-type": "application/x-amz-json-1.1"}, body.encode())


@dataclass
class FaultSchedule:
    """Which faults hit which operations, how often; seeded, and counted as they are injected.

    ``rates`` maps ``"Service.Operation"`` (or ``"Service.*"``) to ``{kind: probability}``;
    ``forced`` queues faults for the next calls of an operation, before the rates are consulted.
    """

    seed: int = 0
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    slow_seconds: float = 0.0
    lag_seconds: float = 0.0
    clock: Callable[[], float] = time.time
    injected: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    forced: dict[str, list[str]] = field(default_factory=dict)
    on_fault: Callable[[str, str], None] | None = None  # hears (operation, kind) of each fault
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _submitted: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def force(self, operation: str, *kinds: str) -> None:
        """The next calls of ``operation`` meet ``kinds``, one each, in order."""
        with self._lock:
            self.forced.setdefault(operation, []).extend(kinds)

    def decide(self, operation: str) -> str | None:
        """The fault for this call of ``operation``, or None."""
        with self._lock:
            self.calls[operation] += 1
            queue = self.forced.get(operation)
            if queue:
                kind: str | None = queue.pop(0)
            else:
                service = operation.split(".", 1)[0]
                rates = self.rates.get(operation) or self.rates.get(f"{service}.*") or {}
                roll, kind = self._rng.random(), None
                for candidate in KINDS:
                    p = rates.get(candidate, 0.0)
                    if roll < p:
                        kind = candidate
                        break
                    roll -= p
            if kind is not None:
                self.injected[f"{operation}:{kind}"] += 1
        if kind is not None and self.on_fault is not None:
            self.on_fault(operation, kind)
        return kind

    @classmethod
    def scaled(cls, rate: float, **kwargs: Any) -> FaultSchedule:
        """The chaos run's schedule: what AWS does at a month-start peak, ``rate`` times as often
        as at 1.0 (each probability is capped at one half)."""

        def of(**kinds: float) -> dict[str, float]:
            return {k: min(0.5, p * rate) for k, p in kinds.items()}

        rates = {
            "CodeBuild.BatchGetBuilds": of(throttle=0.10, error=0.02),
            "CodeBuild.ListBuildsForProject": of(throttle=0.05),
            "CodeBuild.StartBuild": of(throttle=0.05, error=0.01, lost=0.03, slow=0.02),
            "CodeBuild.StopBuild": of(throttle=0.10),
            "Batch.DescribeJobs": of(throttle=0.10, error=0.02),
            "Batch.ListJobs": of(throttle=0.05),
            "Batch.SubmitJob": of(throttle=0.05, error=0.01, lost=0.03, slow=0.02),
            "Batch.CancelJob": of(throttle=0.10),
            "Batch.TerminateJob": of(throttle=0.10),
            "Batch.UpdateComputeEnvironment": of(throttle=0.05),
            "S3.*": of(throttle=0.03, error=0.01),
            "DynamoDB.*": of(throttle=0.01),
        }
        return cls(rates=rates, **kwargs)

    def submitted(self, job_id: str) -> None:
        with self._lock:
            self._submitted[job_id] = self.clock()

    def hidden(self) -> set[str]:
        """Jobs and builds too recent for a listing to show yet."""
        if self.lag_seconds <= 0:
            return set()
        now = self.clock()
        with self._lock:
            return {j for j, at in self._submitted.items() if now - at < self.lag_seconds}

    def total(self, kind: str | None = None) -> int:
        return sum(n for key, n in self.injected.items() if kind is None or key.endswith(f":{kind}"))


_SERVICE_NAMES = {"codebuild": "CodeBuild", "batch": "Batch", "s3": "S3", "dynamodb": "DynamoDB"}


class FaultInjector:
    """Installs a ``FaultSchedule`` on boto3 clients."""

    def __init__(self, schedule: FaultSchedule) -> None:
        self.schedule = schedule
        self._http = URLLib3Session()

    def install(self, client: Any) -> Any:
        """Route ``client``'s requests through the schedule; returns the client."""
        service = client.meta.service_model.service_name
        name = _SERVICE_NAMES.get(service, service)
        events = client.meta.events
        events.register(
            f"before-send.{service}", lambda request, **kw: self._send(service, name, request, **kw)
        )
        events.register(f"after-call.{service}", lambda **kw: self._after(name, **kw))
        return client

    def install_on_session(self, events: Any) -> None:
        """Route the requests of every client a boto3 session makes from now on (``session.events``)."""

        def send(request: Any, event_name: str = "", **kwargs: Any) -> AWSResponse | None:
            service = event_name.split(".")[1] if event_name.count(".") >= 2 else ""
            name = _SERVICE_NAMES.get(service, service)
            return self._send(service, name, request, event_name=event_name, **kwargs)

        def after(event_name: str = "", **kwargs: Any) -> None:
            service = event_name.split(".")[1] if event_name.count(".") >= 2 else ""
            self._after(_SERVICE_NAMES.get(service, service), **kwargs)

        events.register("before-send", send)
        events.register("after-call", after)

    def _send(self, service: str, name: str, request: Any, **kwargs: Any) -> AWSResponse | None:
        operation = f"{name}.{_operation(kwargs.get('event_name', ''))}"
        kind = self.schedule.decide(operation)
        if kind in ("throttle", "error"):
            return wire_fault(service, kind, request.url)
        if kind in ("slow", "lost"):
            self._http.send(request)  # it reaches the service and takes effect
            if kind == "slow":
                time.sleep(self.schedule.slow_seconds)
            raise ReadTimeoutError(endpoint_url=request.url)
        if (
            operation in ("Batch.ListJobs", "CodeBuild.ListBuildsForProject")
            and self.schedule.lag_seconds > 0
        ):
            return self._lagging(operation, request)
        return None

    def _lagging(self, operation: str, request: Any) -> AWSResponse:
        answer = self._http.send(request)
        body = answer.content
        hidden = self.schedule.hidden()
        if hidden and answer.status_code == 200:
            doc = json.loads(body)
            if operation == "Batch.ListJobs":
                doc["jobSummaryList"] = [
                    j for j in doc.get("jobSummaryList", []) if j.get("jobId") not in hidden
                ]
            else:
                doc["ids"] = [i for i in doc.get("ids", []) if i not in hidden]
            body = json.dumps(doc).encode()
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        return _response(request.url, answer.status_code, headers, body)

    def _after(self, name: str, *, parsed: Mapping[str, Any], model: Any, **_: Any) -> None:
        if model.name == "SubmitJob" and parsed.get("jobId"):
            self.schedule.submitted(str(parsed["jobId"]))
        elif model.name == "StartBuild" and (parsed.get("build") or {}).get("id"):
            self.schedule.submitted(str(parsed["build"]["id"]))


def _operation(event_name: str) -> str:
    """``before-send.codebuild.BatchGetBuilds`` → ``BatchGetBuilds``."""
    return event_name.rsplit(".", 1)[-1]
