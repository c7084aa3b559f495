"""Instrumented gRPC calls: every call is timed and reported through a ``fire`` callback with
the signature of Locust's ``request`` event, so this module needs no Locust (and no gevent).

Two transports: :class:`GrpcTransport` sends over reused channels from
``services.runtime.client.create_sync_channel``, tagging every call as synthetic;
:class:`RecordingTransport` sends nothing and records what would have been sent, to check that
the same seed gives the same request sequence without a server.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from loadtests.targets import SERVICES, ServiceSpec
from services.runtime.client import ChannelOptions, create_sync_channel

#: Metadata every load-test call carries, so services (and their dashboards) can tell synthetic
#: traffic apart from shoppers.
SYNTHETIC_METADATA: tuple[tuple[str, str], ...] = (("x-shoptwin-synthetic", "loadtest"),)

#: ``fire(request_type=..., name=..., response_time=..., response_length=..., exception=...,
#: context=...)``: Locust's ``environment.events.request.fire``.
FireFn = Callable[..., Any]

REQUEST_TYPE = "grpc"


class GrpcCallError(Exception):
    """A failed call, with the status code first so Locust groups failures by code."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def _as_error(exc: grpc.RpcError) -> GrpcCallError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return GrpcCallError(code or grpc.StatusCode.UNKNOWN, details or "")


class Transport(Protocol):
    """How calls reach a service (or do not, when recording)."""

    def unary(self, spec: ServiceSpec, method: str, request: Message, timeout: float) -> Any: ...

    def server_stream(
        self, spec: ServiceSpec, method: str, request: Message, timeout: float
    ) -> Any: ...

    def bidi_stream(
        self, spec: ServiceSpec, method: str, requests: Iterator[Message], timeout: float | None
    ) -> Any: ...

    def close(self) -> None: ...


class GrpcTransport:
    """Real calls over one channel per target, created on first use and reused."""

    def __init__(self, targets: dict[str, str], options: ChannelOptions | None = None) -> None:
        self._targets = dict(targets)
        self._options = options or ChannelOptions(metadata=SYNTHETIC_METADATA)
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, Any] = {}

    def _stub(self, spec: ServiceSpec) -> Any:
        stub = self._stubs.get(spec.name)
        if stub is None:
            target = self._targets.get(spec.name)
            if not target:
                raise KeyError(f"no address for service {spec.name!r}")
            channel = self._channels.get(target)
            if channel is None:
                channel = create_sync_channel(target, self._options)
                self._channels[target] = channel
            stub = spec.stub_type(channel)
            self._stubs[spec.name] = stub
        return stub

    def unary(self, spec: ServiceSpec, method: str, request: Message, timeout: float) -> Any:
        return getattr(self._stub(spec), method)(request, timeout=timeout)

    def server_stream(
        self, spec: ServiceSpec, method: str, request: Message, timeout: float
    ) -> Any:
        return getattr(self._stub(spec), method)(request, timeout=timeout)

    def bidi_stream(
        self, spec: ServiceSpec, method: str, requests: Iterator[Message], timeout: float | None
    ) -> Any:
        return getattr(self._stub(spec), method)(requests, timeout=timeout)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()


@dataclass
class CallRecord:
    """One call a :class:`RecordingTransport` saw: who made it, which RPC, the request's hash."""

    key: str
    rpc: str
    request_sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "rpc": self.rpc, "request_sha256": self.request_sha256}


def request_digest(request: Message) -> str:
    """SHA-256 of the deterministic serialisation of ``request``."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


@dataclass
class RecordingTransport:
    """Sends nothing: records each request and answers with an empty response (an empty
    stream for server streams, one empty response per request for bidirectional streams)."""

    records: list[CallRecord] = field(default_factory=list)
    key: str = ""

    def _record(self, spec: ServiceSpec, method: str, request: Message) -> None:
        self.records.append(CallRecord(self.key, spec.rpc_name(method), request_digest(request)))

    def unary(self, spec: ServiceSpec, method: str, request: Message, timeout: float) -> Any:
        self._record(spec, method, request)
        return spec.response_type(method)()

    def server_stream(
        self, spec: ServiceSpec, method: str, request: Message, timeout: float
    ) -> Any:
        self._record(spec, method, request)
        return iter(())

    def bidi_stream(
        self, spec: ServiceSpec, method: str, requests: Iterator[Message], timeout: float | None
    ) -> Any:
        response_type = spec.response_type(method)
        for request in requests:
            self._record(spec, method, request)
            yield response_type()

    def close(self) -> None:
        pass


@dataclass
class StreamResult:
    """What a bounded watch of a server stream saw."""

    messages: list[Any]
    ok: bool


class CallClient:
    """Makes calls through a transport and reports each one through ``fire``.

    Failed calls are reported (not raised) and return ``None``, so a shopper journey goes on
    the way a real client would, skipping only the steps that needed the failed answer.
    """

    def __init__(
        self,
        transport: Transport,
        fire: FireFn,
        *,
        unary_timeout_s: float = 5.0,
        key: str = "",
    ) -> None:
        self.transport = transport
        self._fire = fire
        self.unary_timeout_s = unary_timeout_s
        self.key = key

    def set_key(self, key: str) -> None:
        """Name the transaction that makes the next calls (kept in recordings)."""
        self.key = key
        if isinstance(self.transport, RecordingTransport):
            self.transport.key = key

    def _report(
        self, name: str, started: float, length: int, exception: BaseException | None
    ) -> None:
        self._fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length,
            exception=exception,
            context={"key": self.key},
        )

    def unary(
        self,
        service: str,
        method: str,
        request: Message,
        *,
        ok_codes: Iterable[grpc.StatusCode] = (),
    ) -> Any:
        """Call a unary RPC; the response, or ``None`` when it failed. Status codes in
        ``ok_codes`` are expected answers (e.g. NOT_FOUND for an id that is meant to be
        unknown): reported as successes, and still return ``None``."""
        spec = SERVICES[service]
        name = spec.rpc_name(method)
        started = time.perf_counter()
        try:
            response = self.transport.unary(spec, method, request, self.unary_timeout_s)
        except grpc.RpcError as exc:
            error = _as_error(exc)
            expected = error.code in set(ok_codes)
            self._report(name, started, 0, None if expected else error)
            return None
        self._report(name, started, response.ByteSize(), None)
        return response

    def watch(
        self,
        service: str,
        method: str,
        request: Message,
        *,
        max_messages: int,
        max_seconds: float,
    ) -> StreamResult:
        """Watch a server stream until ``max_messages`` arrive or ``max_seconds`` pass.

        Reported once: the response time is the wait for the first message (the whole window
        when none came), the length the bytes of every message. The stream ending at our own
        deadline or cancel is a success; any other status is a failure.
        """
        spec = SERVICES[service]
        name = spec.rpc_name(method)
        started = time.perf_counter()
        messages: list[Any] = []
        first_at: float | None = None
        length = 0
        error: BaseException | None = None
        call = None
        try:
            call = self.transport.server_stream(spec, method, request, max_seconds)
            for message in call:
                if first_at is None:
                    first_at = time.perf_counter()
                messages.append(message)
                length += message.ByteSize()
                if len(messages) >= max_messages:
                    call.cancel()
                    break
        except grpc.RpcError as exc:
            failed = _as_error(exc)
            if failed.code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                error = failed
        self._fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=((first_at or time.perf_counter()) - started) * 1000.0,
            response_length=length,
            exception=error,
            context={"key": self.key, "messages": len(messages)},
        )
        return StreamResult(messages, error is None)

    def exchange(self, service: str, method: str, requests: Iterable[Message]) -> list[Any]:
        """A bidirectional stream where the server answers each request once, in order
        (telemetry Upload, recommendation StreamFeedback). Each answer is reported as one
        request whose time runs from sending its request to receiving the answer."""
        spec = SERVICES[service]
        name = spec.rpc_name(method)
        sent_at: deque[tuple[float, int]] = deque()

        def timed(source: Iterable[Message]) -> Iterator[Message]:
            for request in source:
                sent_at.append((time.perf_counter(), request.ByteSize()))
                yield request

        responses: list[Any] = []
        started = time.perf_counter()
        try:
            for response in self.transport.bidi_stream(spec, method, timed(requests), None):
                at, _size = sent_at.popleft() if sent_at else (started, 0)
                self._report(name, at, response.ByteSize(), None)
                responses.append(response)
        except grpc.RpcError as exc:
            at = sent_at[0][0] if sent_at else started
            self._report(name, at, 0, _as_error(exc))
        return responses
