"""The Station's new batching/overhead fields against hand-computed cases, and the JSON
format: round trip, old files, and errors naming the key."""

from __future__ import annotations

import json
import math
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import simpy

from simulator.capacity.fit import capacity_per_s
from simulator.model_mode import scheduled_events
from simulator.platform import (
    MAX_LOOP_EXTENSIONS,
    Batching,
    Calibration,
    CalibrationError,
    Rearmed,
    RpcCalibration,
    ServiceCalibration,
    ServiceTimeSampler,
    Station,
    calibration_to_json,
    load_calibration,
    parse_calibration,
)


def test_batching_station_with_overhead_matches_the_hand_computed_case() -> None:
    """a = 2 ms per batch, b = 1 ms per request, 1 ms overhead (0.5 in, 0.5 out).
    Three calls at t=0 reach the queue at 0.5 ms and share one batch: 2 + 3·1 = 5 ms, done at
    5.5, out at 6.0. A fourth call at 1 ms queues at 1.5, waits for that batch, runs alone
    (3 ms) from 5.5 to 8.5 and leaves at 9.0: latency 8 ms."""
    env = simpy.Environment()
    service = ServiceCalibration(
        workers=1,
        rpcs={"call": RpcCalibration("deterministic", 2.0, 0.0, 1.0, overhead_ms=1.0)},
        batching=Batching(max_batch=32, max_wait_ms=0.0),
    )
    station = Station(env, "s", service, np.random.default_rng(0), window_s=math.inf)
    latencies: dict[int, float] = {}

    def call(index: int, at: float) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(at)
        latencies[index] = yield from station.serve("call")

    for index, at in enumerate([0.0, 0.0, 0.0, 0.001]):
        env.process(call(index, at))
    env.run()
    assert [round(latencies[i] * 1000, 6) for i in range(4)] == [6.0, 6.0, 6.0, 8.0]
    assert station.batches == 2
    assert station.batched_requests == 4


def _finish_times(
    service: ServiceCalibration, arrivals: list[float], until: float | None = None
) -> tuple[list[float], Station]:
    """One "call" per arrival time (s) into a fresh station; the times (ms) they leave it."""
    env = simpy.Environment()
    station = Station(env, "s", service, np.random.default_rng(0), window_s=math.inf)
    done: list[float] = []

    def call(at: float) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(at)
        yield from station.serve("call")
        done.append(round(env.now * 1000, 6))

    for at in arrivals:
        env.process(call(at))
    env.run(until=until)
    return done, station


def test_a_batch_started_on_an_idle_batcher_pays_the_wake_up() -> None:
    """T(n) = 1 + 1·n ms, wake-up 2 ms. A call at t=0 wakes the batcher: 2 + 2 = 4 ms. A call
    at 1 ms queues behind it and starts right away at 4 ms (no wake-up): 2 ms, out at 6."""
    service = ServiceCalibration(
        workers=1,
        rpcs={"call": RpcCalibration("deterministic", 1.0, 0.0, 1.0)},
        batching=Batching(max_batch=8, max_wait_ms=0.0, wake_ms=2.0),
    )
    done, _ = _finish_times(service, [0.0, 0.001])
    assert done == [4.0, 6.0]


def test_an_exponential_wake_up_has_the_mean_and_spread_of_one() -> None:
    """Lone calls 50 ms apart, T(1) exactly 1 ms, wake-up exponential with mean 2 ms: each
    call takes 1 ms plus a wake-up whose mean is 2 ms and whose standard deviation is its
    mean (a constant one would have none)."""
    service = ServiceCalibration(
        workers=1,
        rpcs={"call": RpcCalibration("deterministic", 1.0, 0.0, 0.0)},
        batching=Batching(max_batch=8, max_wait_ms=0.0, wake_ms=2.0, wake="exponential"),
    )
    arrivals = [0.05 * i for i in range(4000)]
    done, _ = _finish_times(service, arrivals)
    wakes = np.array(done) - np.array(arrivals) * 1000 - 1.0
    assert wakes.min() >= 0
    assert wakes.mean() == pytest.approx(2.0, rel=0.05)
    assert wakes.std() == pytest.approx(2.0, rel=0.08)
    # Same seed, same draws.
    again, _ = _finish_times(service, arrivals)
    assert again == done


def test_after_a_batch_of_several_the_next_waits_to_grow_to_its_size_or_the_window() -> None:
    """The recommendation service's batcher: T(n) = 1 ms flat, window 5 ms. A call at t=0 is
    ranked alone at once (0..1). Two at 0.5 ms queue and go together at 1 ms (the previous
    batch held one: no wait), out at 2. After that batch of two, a call at 2.5 ms waits for a
    second one, which comes at 3 ms: 3..4. A lone call at 10 ms waits for company until its
    window ends at 15 ms: 15..16."""
    service = ServiceCalibration(
        workers=1,
        rpcs={"call": RpcCalibration("deterministic", 1.0, 0.0, 0.0)},
        batching=Batching(max_batch=8, max_wait_ms=5.0, grow_to_previous=True),
    )
    done, station = _finish_times(service, [0.0, 0.0005, 0.0005, 0.0025, 0.003, 0.010])
    assert done == [1.0, 2.0, 2.0, 4.0, 4.0, 16.0]
    assert station.batches == 4


def test_growing_batches_with_several_workers_serve_every_call() -> None:
    """Two workers behind one queue: one gathers at a time, and a worker that finds its queue
    emptied by the other while it gathered goes back to waiting instead of failing."""
    service = ServiceCalibration(
        workers=2,
        rpcs={"call": RpcCalibration("deterministic", 1.0, 0.0, 0.2)},
        batching=Batching(max_batch=8, max_wait_ms=3.0, grow_to_previous=True),
    )
    arrivals = np.cumsum(np.random.default_rng(3).exponential(0.0007, 400)).tolist()
    done, station = _finish_times(service, arrivals)
    assert len(done) == 400
    assert station.batched_requests == 400 and station.batches < 400


def test_calls_arriving_during_a_batch_lengthen_it_by_the_event_loop_time() -> None:
    """T(n) = 10 ms flat, loop 1 ms per call. A call at t=0 starts a batch (0..10 ms). Calls
    at 2 and 4 ms arrive during it: +2 ms (10..12); one at 11 ms arrives during that
    extension: +1 ms (12..13), so the first call leaves at 13. The three queued calls then
    share a second batch from 13 to 23 ms; nothing arrives during it."""
    service = ServiceCalibration(
        workers=1,
        rpcs={"call": RpcCalibration("deterministic", 10.0, 0.0, 0.0)},
        batching=Batching(max_batch=8, max_wait_ms=0.0, loop_ms=1.0),
    )
    done, station = _finish_times(service, [0.0, 0.002, 0.004, 0.011])
    assert done == [13.0, 23.0, 23.0, 23.0]
    assert station.batches == 2


def test_the_event_loop_share_is_split_across_workers_and_capped() -> None:
    """Two workers: each arrival lengthens a running batch by loop / 2. With a loop time so
    long that every extension sees more arrivals, the batch still ends (at most
    MAX_LOOP_EXTENSIONS extensions)."""
    service = ServiceCalibration(
        workers=2,
        rpcs={"call": RpcCalibration("deterministic", 10.0, 0.0, 0.0)},
        batching=Batching(max_batch=8, max_wait_ms=0.0, loop_ms=2.0),
    )
    # Two calls at 0 take both workers; one at 5 ms lengthens each running batch by 1 ms.
    done, _ = _finish_times(service, [0.0, 0.0, 0.005], until=0.0115)
    assert done == [11.0, 11.0]

    # One call per ms from 0.5 ms on, loop 2 ms: the loop alone needs twice the time there
    # is. The first batch (1 ms) sees 1 arrival (+2 ms), then 2 (+4 ms), ... each extension
    # doubling, until the cap: it ends at 1 + 2 + 4 + ... + 2^8 = 511 ms.
    env = simpy.Environment()
    flooded = ServiceCalibration(
        workers=1,
        rpcs={"call": RpcCalibration("deterministic", 1.0, 0.0, 0.0)},
        batching=Batching(max_batch=1, max_wait_ms=0.0, loop_ms=2.0),
    )
    station = Station(env, "s", flooded, np.random.default_rng(0), window_s=math.inf)
    finished: list[float] = []

    def first() -> Generator[simpy.Event, Any, None]:
        yield from station.serve("call")
        finished.append(round(env.now * 1000, 6))

    def flood() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(0.0005)
        while True:
            env.process(station.serve("call"))
            yield env.timeout(0.001)

    env.process(first())
    env.process(flood())
    env.run(until=0.6)
    assert MAX_LOOP_EXTENSIONS == 8
    assert finished == [511.0]


def test_in_queue_mode_the_event_loop_is_a_server_the_calls_pass_in_and_out() -> None:
    """T(n) = 10 ms flat, overhead 4 ms of which the loop's 2 ms (1 ms in, 1 ms out) and the
    rest 1 ms before the loop and 1 ms after it. Three calls at t=0 reach the loop at 1 ms
    and pass it one after another (1..2, 2..3, 3..4 ms). The first wakes the batcher at
    2 ms; the batcher is a coroutine on the same loop and runs after the two calls already
    there, so its batch of one runs 4..14 ms. The other two share the next batch at once
    (14..24 ms); calls arriving during a batch do not lengthen it. On the way out the loop
    serves them in turn: 14..15 (out at 16), 24..25 (out at 26), 25..26 (out at 27). A lone
    call takes the overhead plus its batch, 14 ms, exactly as without the loop."""
    service = ServiceCalibration(
        workers=1,
        rpcs={"call": RpcCalibration("deterministic", 10.0, 0.0, 0.0, overhead_ms=4.0)},
        batching=Batching(max_batch=8, max_wait_ms=0.0, loop_ms=2.0, loop="queue"),
    )
    done, station = _finish_times(service, [0.0, 0.0, 0.0])
    assert done == [16.0, 26.0, 27.0]
    assert station.batches == 2
    alone, _ = _finish_times(service, [0.0])
    without_loop = replace(service, batching=Batching(max_batch=8, max_wait_ms=0.0))
    assert alone == _finish_times(without_loop, [0.0])[0] == [14.0]
    # The loop is the slower server here (500 calls/s against the batcher's 800): it sets
    # the capacity, one loop per worker.
    assert capacity_per_s(service, "call") == pytest.approx(500.0)
    assert capacity_per_s(replace(service, workers=2), "call") == pytest.approx(1000.0)


def test_loop_passes_during_a_batch_take_longer_by_the_contention() -> None:
    """The case above with ``loop_contention`` 1: a pass that starts while the worker's batch
    runs takes twice its 1 ms. The three calls reach the loop at 1 ms, before any batch, and
    pass it as before; the first call's batch runs 4..14. At 14 the next batch (the other two)
    starts at once, so the first call's way out (14..16) shares the cores with it: out at 17
    instead of 16. The other two leave after the last batch has ended, at full speed."""
    service = ServiceCalibration(
        workers=1,
        rpcs={"call": RpcCalibration("deterministic", 10.0, 0.0, 0.0, overhead_ms=4.0)},
        batching=Batching(
            max_batch=8, max_wait_ms=0.0, loop_ms=2.0, loop="queue", loop_contention=1.0
        ),
    )
    done, station = _finish_times(service, [0.0, 0.0, 0.0])
    assert done == [17.0, 26.0, 27.0]
    assert station.batches == 2
    # A fourth call at 11.5 ms reaches the loop at 12.5, during the first batch: its way in
    # takes 12.5..14.5, so it misses the batch that starts at 14 and runs alone 24..34, out
    # at 36 (without contention it passes 12.5..13.5, joins that batch and is out at 28).
    # The first call's way out waits for it (14.5..16.5, out at 17.5); the next two leave
    # while the fourth call's batch runs (24..26, 26..28).
    late, _ = _finish_times(service, [0.0, 0.0, 0.0, 0.0115])
    assert late == [17.5, 27.0, 29.0, 36.0]
    assert service.batching is not None
    free = replace(service, batching=replace(service.batching, loop_contention=0.0))
    assert _finish_times(free, [0.0, 0.0, 0.0, 0.0115])[0] == [16.0, 26.0, 27.0, 28.0]
    # A lone call never meets a running batch: the overhead and its batch, as without.
    alone, _ = _finish_times(service, [0.0])
    assert alone == [14.0]


def test_rpcs_outside_the_batcher_are_served_one_by_one() -> None:
    """Batched: 'rank' (T(n) = 10 ms flat). 'write' (2 ms) is not batched: a write at t=0
    beside a rank at t=0 finishes at 2 ms, not after the 10 ms batch."""
    env = simpy.Environment()
    service = ServiceCalibration(
        workers=1,
        rpcs={
            "rank": RpcCalibration("deterministic", 10.0, 0.0, 0.0),
            "write": RpcCalibration("deterministic", 2.0, 0.0, 0.0),
        },
        batching=Batching(max_batch=8, max_wait_ms=0.0, rpcs=("rank",)),
    )
    station = Station(env, "s", service, np.random.default_rng(0), window_s=math.inf)
    done: dict[str, float] = {}

    def call(rpc: str) -> Generator[simpy.Event, Any, None]:
        yield from station.serve(rpc)
        done[rpc] = round(env.now * 1000, 6)

    env.process(call("rank"))
    env.process(call("write"))
    env.run()
    assert done == {"rank": 10.0, "write": 2.0}
    assert station.batches == 1


def test_plain_station_adds_overhead_outside_the_queue() -> None:
    """One server, 3 ms per call, 2 ms overhead: two calls at t=0 both queue at 1 ms; the
    second waits 3 ms. Latencies 5 and 8 ms."""
    env = simpy.Environment()
    service = ServiceCalibration(
        workers=1, rpcs={"call": RpcCalibration("deterministic", 3.0, 0.0, overhead_ms=2.0)}
    )
    station = Station(env, "s", service, np.random.default_rng(0), window_s=math.inf)
    latencies: list[float] = []

    def call() -> Generator[simpy.Event, Any, None]:
        latency = yield from station.serve("call")
        latencies.append(round(latency * 1000, 6))

    env.process(call())
    env.process(call())
    env.run()
    assert latencies == [5.0, 8.0]


def test_submit_calls_back_with_the_time_in_the_service_and_schedules_only_the_waits() -> None:
    """``submit``, the callback form of ``serve`` model mode uses: the case above without a
    process. The events are the waits alone: two inbound overhead halves, two services, the
    server handed to the second request, two outbound halves."""
    env = simpy.Environment()
    service = ServiceCalibration(
        workers=1, rpcs={"call": RpcCalibration("deterministic", 3.0, 0.0, overhead_ms=2.0)}
    )
    station = Station(env, "s", service, np.random.default_rng(0), window_s=math.inf)
    latencies: list[float] = []
    for _ in range(2):
        station.submit("call", 1, lambda spent: latencies.append(round(spent * 1000, 6)))
    env.run()
    assert latencies == [5.0, 8.0]
    assert scheduled_events(env) == 7


def test_averaged_variability_keeps_the_mean_and_shrinks_the_cv_with_batch_size() -> None:
    calibration = RpcCalibration("lognormal", 1.0, 0.8, 1.0)
    sampler = ServiceTimeSampler(calibration, np.random.default_rng(5))
    lone = np.array([sampler.averaged_sample(1) for _ in range(20_000)])
    big = np.array([sampler.averaged_sample(31) for _ in range(20_000)])
    assert lone.mean() == pytest.approx(0.002, rel=0.03)
    assert big.mean() == pytest.approx(0.032, rel=0.03)
    assert lone.std() / lone.mean() == pytest.approx(0.8, rel=0.1)
    # 32 ms is 16 lone calls long: cv / 4.
    assert big.std() / big.mean() == pytest.approx(0.2, rel=0.1)
    # A measured exponent below 0.5: long batches keep more of the spread (16 ** -0.25 = 1/2).
    slower = ServiceTimeSampler(calibration, np.random.default_rng(5), cv_exponent=0.25)
    big = np.array([slower.averaged_sample(31) for _ in range(20_000)])
    assert big.mean() == pytest.approx(0.032, rel=0.03)
    assert big.std() / big.mean() == pytest.approx(0.4, rel=0.1)


def test_the_stations_batches_take_the_services_cv_exponent() -> None:
    batching = Batching(max_batch=8, variability="averaged", cv_exponent=0.3)
    service = ServiceCalibration(1, {"call": RpcCalibration("lognormal", 1.0, 0.8, 1.0)}, batching)
    station = Station(simpy.Environment(), "s", service, np.random.default_rng(1))
    assert station.samplers["call"].cv_exponent == 0.3


def test_measured_batch_table_interpolates_and_extends_the_last_slope() -> None:
    rpc = RpcCalibration(mean_ms=9.0, per_item_ms=9.0, batch_ms=((1, 3.5), (8, 20.0), (32, 90.0)))
    assert rpc.batch_mean_ms(1) == 3.5
    assert rpc.batch_mean_ms(4.5) == pytest.approx(3.5 + 16.5 / 2)
    assert rpc.batch_mean_ms(32) == 90.0
    assert rpc.batch_mean_ms(64) == pytest.approx(90.0 + 70.0 / 24 * 32)
    # Without a table: a + b·n.
    assert RpcCalibration(mean_ms=2.0, per_item_ms=0.5).batch_mean_ms(10) == 7.0


def test_batching_station_uses_the_measured_table() -> None:
    """T(1) = 4 ms, T(2) = 5 ms: two calls at t=0 share one 5 ms batch; with speedup 2 the
    same batch takes 2.5 ms."""
    service = ServiceCalibration(
        workers=1,
        rpcs={
            "call": RpcCalibration("deterministic", 1.0, 0.0, 1.0, batch_ms=((1, 4.0), (2, 5.0)))
        },
        batching=Batching(max_batch=8, max_wait_ms=0.0),
    )
    for speedup, expected in ((1.0, 5.0), (2.0, 2.5)):
        scaled = Calibration({"s": service}).with_overrides({}, speedup).services["s"]
        env = simpy.Environment()
        station = Station(env, "s", scaled, np.random.default_rng(0), window_s=math.inf)
        latencies: list[float] = []

        def call(
            station: Station = station, latencies: list[float] = latencies
        ) -> Generator[simpy.Event, Any, None]:
            latencies.append(round((yield from station.serve("call")) * 1000, 6))

        env.process(call())
        env.process(call())
        env.run()
        assert latencies == [expected, expected]
    with_loop = replace(service, batching=Batching(max_batch=8, max_wait_ms=0.0, loop_ms=0.5))
    scaled_loop = Calibration({"s": with_loop}).with_overrides({}, 2.0).services["s"]
    assert scaled_loop.batching is not None and scaled_loop.batching.loop_ms == 0.25


def _measured() -> dict[str, Any]:
    return {
        "version": 1,
        "provenance": {"measured": True, "command": "shoptwin capacity calibrate"},
        "services": {
            "recommendation": {
                "workers": 1,
                "batching": {
                    "max_batch": 64,
                    "max_wait_ms": 0.0,
                    "variability": "averaged",
                    "cv_exponent": 0.4,
                    "wake_ms": 1.5,
                    "wake": "exponential",
                    "loop_ms": 0.25,
                    "loop": "queue",
                    "loop_contention": 0.75,
                    "grow_to_previous": True,
                },
                "rpcs": {
                    "Recommend": {
                        "distribution": "lognormal",
                        "mean_ms": 0.5,
                        "cv": 0.4,
                        "per_item_ms": 3.2,
                        "overhead_ms": 0.9,
                        "batch_ms": [[1, 3.5], [8, 20.0], [32, 90.0]],
                        "load_dependence": [
                            {"concurrency": 1, "throughput": 200.0, "mean_ms": 4.6},
                            {"concurrency": 8, "throughput": 290.0, "mean_ms": 27.0},
                        ],
                    }
                },
            }
        },
    }


def test_json_round_trip_keeps_every_field() -> None:
    calibration = parse_calibration(_measured())
    again = parse_calibration(json.loads(json.dumps(calibration_to_json(calibration))))
    assert again == calibration
    rec = again.services["recommendation"]
    assert rec.batching is not None and rec.batching.variability == "averaged"
    assert rec.batching.loop_ms == 0.25 and rec.batching.loop == "queue"
    assert rec.batching.loop_contention == 0.75
    assert rec.batching.wake == "exponential"
    assert rec.batching.grow_to_previous and rec.batching.cv_exponent == 0.4
    assert rec.rpcs["Recommend"].overhead_ms == 0.9
    assert rec.rpcs["Recommend"].load_dependence[1]["throughput"] == 290.0


def test_old_files_and_the_shipped_file_still_parse() -> None:
    shipped = load_calibration("default")
    assert {"recommendation", "intent", "dispatch", "telemetry"} <= set(shipped.services)
    old = _measured()
    rpc = old["services"]["recommendation"]["rpcs"]["Recommend"]
    del rpc["overhead_ms"], rpc["load_dependence"]
    del old["services"]["recommendation"]["batching"]["variability"]
    del old["services"]["recommendation"]["batching"]["wake_ms"]
    del old["services"]["recommendation"]["batching"]["wake"]
    del old["services"]["recommendation"]["batching"]["loop_ms"]
    del old["services"]["recommendation"]["batching"]["loop"]
    del old["services"]["recommendation"]["batching"]["loop_contention"]
    del old["services"]["recommendation"]["batching"]["grow_to_previous"]
    del old["services"]["recommendation"]["batching"]["cv_exponent"]
    parsed = parse_calibration(old)
    assert parsed.services["recommendation"].rpcs["Recommend"].overhead_ms == 0.0
    # cv_exponent 0.5: independent noise per lone call's worth of work, as before the key.
    assert parsed.services["recommendation"].batching == Batching(64, 0.0, "fixed")
    written = calibration_to_json(parsed)["services"]["recommendation"]["batching"]
    assert "cv_exponent" not in written


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("rpcs", "Recommend", "overhead_ms"), "fast", "rpcs.Recommend.overhead_ms: expected"),
        (("rpcs", "Recommend", "overhead_ms"), -1, "rpcs.Recommend.overhead_ms: must be"),
        (("batching", "variability"), "wild", "batching.variability: one of"),
        (("batching", "wake_ms"), "slow", "batching.wake_ms: expected a number"),
        (("batching", "wake"), "gamma", "batching.wake: one of constant, exponential"),
        (("batching", "loop_ms"), -0.5, "batching.loop_ms: must be"),
        (("batching", "loop"), "thread", "batching.loop: one of extends, queue"),
        (("batching", "loop_contention"), -1, "batching.loop_contention: must be"),
        (("batching", "cv_exponent"), 1.5, "batching.cv_exponent: must be <= 1"),
        (("batching", "cv_exponent"), "fast", "batching.cv_exponent: expected a number"),
        (("batching", "grow_to_previous"), "yes", "batching.grow_to_previous: expected true"),
        (("batching", "rpcs"), ["Nope"], "batching.rpcs: unknown RPC 'Nope'"),
        (("rpcs", "Recommend", "batch_ms"), [[1, 2.0], [1, 3.0]], "batch_ms[1][0]: items must"),
        (("rpcs", "Recommend", "batch_ms"), [[0, 2.0]], "batch_ms[0][0]: must be >= 1"),
        (("rpcs", "Recommend", "batch_ms"), [3.0], "batch_ms[0]: expected an [items, ms]"),
        (("rpcs", "Recommend", "load_dependence"), {"a": 1}, "load_dependence: expected a list"),
        (
            ("rpcs", "Recommend", "load_dependence"),
            [{"concurrency": "x"}],
            "load_dependence[0].concurrency: expected a number",
        ),
    ],
)
def test_bad_files_name_the_key(path: tuple[str, ...], value: Any, message: str) -> None:
    data = _measured()
    node = data["services"]["recommendation"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(CalibrationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_calibration(data, "c.json")


def test_overhead_quantiles_are_sampled_by_inverse_cdf_and_round_trip() -> None:
    from simulator.platform import OverheadSampler

    # Uniform between 1 and 3 ms, then a tail: 0 %, 50 %, 100 % at 1, 2, 10 ms.
    cal = RpcCalibration(overhead_ms=2.5, overhead_quantiles_ms=(1.0, 2.0, 10.0))
    sampler = OverheadSampler(cal, np.random.default_rng(3))
    draws = np.asarray([sampler.sample() for _ in range(20_000)]) * 1000.0
    assert draws.min() >= 1.0 and draws.max() <= 10.0
    assert np.median(draws) == pytest.approx(2.0, abs=0.05)
    # Linear between quantiles: P(X <= 6 ms) = 0.5 + 0.5 * (6 - 2) / 8 = 0.75.
    assert np.mean(draws <= 6.0) == pytest.approx(0.75, abs=0.01)
    # Without quantiles the constant mean is used.
    assert OverheadSampler(RpcCalibration(overhead_ms=2.5), np.random.default_rng(0)).sample() == (
        pytest.approx(0.0025)
    )
    calibration = Calibration({"svc": ServiceCalibration(1, {"call": cal})}, {"measured": True})
    back = parse_calibration(json.loads(json.dumps(calibration_to_json(calibration))))
    assert back.services["svc"].rpcs["call"].overhead_quantiles_ms == (1.0, 2.0, 10.0)


@pytest.mark.parametrize(
    ("value", "problem"),
    [([1.0], "at least two"), ([2.0, 1.0], "must not decrease"), ("x", "list of numbers")],
)
def test_bad_overhead_quantiles_name_the_key(value: Any, problem: str) -> None:
    data = {
        "services": {"svc": {"rpcs": {"call": {"mean_ms": 1.0, "overhead_quantiles_ms": value}}}}
    }
    with pytest.raises(CalibrationError, match=problem) as info:
        parse_calibration(data, "c.json")
    assert "services.svc.rpcs.call.overhead_quantiles_ms" in str(info.value)


def test_a_rearmed_event_fires_like_a_timeout_and_can_be_armed_again_from_its_callback() -> None:
    """``Rearmed`` reaches into SimPy's heap: it must fire at the same times and in the same
    order as ``env.timeout`` would (ties in scheduling order), and only once per arming."""
    env = simpy.Environment()
    fired: list[tuple[float, str]] = []
    event = Rearmed(env)

    def tick(_: object) -> None:
        fired.append((env.now, "rearmed"))
        if sum(label == "rearmed" for _, label in fired) < 5:
            event.after(1.5, tick)

    def timeout_at(delay: float, label: str) -> None:
        env.timeout(delay).callbacks.append(lambda _: fired.append((env.now, label)))

    event.after(1.5, tick)
    timeout_at(1.5, "timeout scheduled after")  # same time, later id: fires second
    timeout_at(3.0, "timeout at 3")
    with pytest.raises(ValueError, match="already scheduled"):
        event.after(1.0, tick)
    env.run()
    assert fired[:4] == [
        (1.5, "rearmed"),
        (1.5, "timeout scheduled after"),
        (3.0, "timeout at 3"),  # scheduled before the re-arming at 1.5
        (3.0, "rearmed"),
    ]
    assert [t for t, label in fired if label == "rearmed"] == [1.5, 3.0, 4.5, 6.0, 7.5]
    with pytest.raises(ValueError, match="negative"):
        event.after(-1.0, tick)
