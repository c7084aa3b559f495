"""Workloads on the simulator's behaviour model, run without a server (recording transport)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from loadtests.arrivals import derive_seed
from loadtests.calls import CallClient, CallRecord, RecordingTransport
from loadtests.options import LoadTestOptions
from loadtests.targets import SERVICES
from loadtests.workloads import (
    DispatchWorkload,
    IntentWorkload,
    LoadWorld,
    RecommendationWorkload,
    TelemetryWorkload,
    VanDriver,
    build_workload,
)
from shoptwin.v1 import telemetry_pb2

OPTIONS = LoadTestOptions(seed=5, run_tag="t", clock_base_s=1_700_000_000.0, vehicles=3)


class Events:
    """Collects what a CallClient reports (Locust's request event signature)."""

    def __init__(self) -> None:
        self.fired: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.fired.append(kwargs)


def run(
    workload_name: str, options: LoadTestOptions, count: int
) -> tuple[list[CallRecord], Events]:
    records: list[CallRecord] = []
    events = Events()
    workload = build_workload(workload_name, options, sleep=lambda _s: None)
    workload.setup(CallClient(RecordingTransport(records, "setup"), events))
    for i in range(count):
        key = f"lane0.0/{i}"
        client = CallClient(RecordingTransport(records, key), events, key=key)
        workload.transaction(client, derive_seed(options.seed, workload_name, key), key, i)
    return records, events


@pytest.mark.parametrize(
    "name", ["recommendation", "intent", "dispatch", "telemetry", "journey", "suite"]
)
def test_same_seed_same_requests_other_seed_other_requests(name: str) -> None:
    first, _ = run(name, OPTIONS, 30)
    again, _ = run(name, OPTIONS, 30)
    other, _ = run(name, dataclasses.replace(OPTIONS, seed=6), 30)
    assert first and first == again
    assert [r.request_sha256 for r in first] != [r.request_sha256 for r in other]


@pytest.mark.parametrize(
    ("workload", "service"),
    [
        (RecommendationWorkload, "recommendation"),
        (IntentWorkload, "intent"),
        (DispatchWorkload, "dispatch"),
        (TelemetryWorkload, "telemetry"),
    ],
)
def test_mixes_cover_every_rpc_of_their_service(workload: Any, service: str) -> None:
    assert {rpc for rpc, _ in workload.MIX} == set(SERVICES[service].methods())


def test_first_transactions_walk_through_the_mix() -> None:
    records, events = run("intent", OPTIONS, 3)
    assert [r.rpc for r in records] == [
        "IntentService/Classify",
        "IntentService/ClassifyBatch",
        "IntentService/GetModelInfo",
    ]
    assert all(e["request_type"] == "grpc" and e["exception"] is None for e in events.fired)
    assert [e["name"] for e in events.fired] == [r.rpc for r in records]


def test_journeys_follow_the_session_model() -> None:
    records, _ = run("journey", OPTIONS, 60)
    rpcs = {r.rpc for r in records}
    # Browsing, recommendations, feedback, checkout and support all occur in 60 sessions.
    assert {
        "RecommendationService/SimilarItems",
        "RecommendationService/Recommend",
        "RecommendationService/StreamFeedback",
        "DispatchService/SubmitOrder",
        "DispatchService/GetOrderStatus",
        "IntentService/Classify",
    } <= rpcs
    # Setup told the services the catalogue and the fleet first.
    assert [r.rpc for r in records[:2]] == [
        "RecommendationService/UpdateCatalog",
        "DispatchService/ConfigureFleet",
    ]


def test_van_streams_sequence_numbers_and_resends_unacknowledged() -> None:
    lw = LoadWorld.create(OPTIONS)
    sent: list[telemetry_pb2.UploadRequest] = []

    class AckingTransport(RecordingTransport):
        """Acknowledges every reading except the last of each batch."""

        def bidi_stream(self, spec: Any, method: str, requests: Any, timeout: Any) -> Any:
            for request in requests:
                sent.append(request)
                last = max(r.sequence for r in request.readings)
                yield telemetry_pb2.UploadAck(
                    batch_id=request.batch_id,
                    device_acks=[
                        telemetry_pb2.DeviceAck(
                            device_id=request.readings[0].device_id, acked_sequence=last - 1
                        )
                    ],
                )

    driver = VanDriver(lw, 1, sleep=lambda _s: None)
    client = CallClient(AckingTransport([], "van"), Events())
    driver.upload(client, 3)
    driver.upload(client, 3)
    assert all(r.device_id == "t-van-001" for b in sent for r in b.readings)
    sequences = [r.sequence for b in sent for r in b.readings]
    fresh = sorted(set(sequences))
    assert fresh == list(range(1, len(fresh) + 1))
    # Only the first stream's last reading was never acknowledged: it is sent again.
    assert len(sequences) - len(fresh) == 1
    assert driver.pending and driver.pending[-1].sequence == fresh[-1]
    assert sent[0].readings[0].fleet_id == "t-fleet-1"
