"""``shoptwin capacity calibrate``: measure the real services through gRPC and write the
calibration file model mode reads.

For each service: a closed-loop ladder (concurrency 1, 2, 4, ... by default) through the real
gRPC path from a generator in its own process, the bare echo RPC at concurrency 1 in the same
run (the overhead outside the queue), the batch time per batch size and the noise (cv) of a
lone call. The batch times are the service's own (its ``shoptwin_batch_*`` series read around
each level: mean batch size and batcher time per batch), and in the range of batch sizes that
open-loop load at ``OPEN_FRACTIONS`` of the ladder's best throughput produces, the batches of
those runs (the same batch takes longer under open-loop load than in the closed ladder);
without the series, a straight-line fit of mean latency against concurrency
(``fit.fit_batching``, level ``c`` read as batches of ``c``).
The ladder is kept in the file (``load_dependence``) for the record. Services not measured keep
their entries from ``--base`` so the file stays complete for model mode.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from services.runtime.settings import SettingsError

DEFAULT_LADDER = "1,2,4,8,16,32,64"
#: Open-loop rate of the echo overhead measurement (calls/s): light, every call finds the
#: client and the server idle.
ECHO_LIGHT_RATE = 50.0
#: Light open-loop load for the lone-call measurement, as a fraction of the ladder's best
#: throughput.
LIGHT_FRACTION = 0.1
#: Open-loop rates, as fractions of the ladder's best throughput, at which the batcher's time
#: per batch is read under open-loop load: the closed ladder's batches run faster than the
#: same batches do under open-loop load at the same size (docs/capacity.md, "Calibrate";
#: docs/capacity-runs.md, "Runs 19-23"). The last is past the knee: there the batches are as
#: large as the service ever runs them, and their time is the knee. Read off the ladder
#: instead, the validate runs' largest batches took up to 12 % longer than the table said,
#: and recommendation's knee came out high in all of runs 31-47, by 7 % on average
#: (docs/capacity-runs.md, "Run 48").
OPEN_FRACTIONS = (0.4, 0.6, 0.8, 1.25)
#: The open-loop runs ``Batching.loop_contention`` is fitted to: those at most this fraction
#: of the ladder's best, inside the range validate judges. The run at 0.8 (about 0.83 of the
#: knee) is a short job from an empty queue that never settles there (its batches half the
#: size of a 6 s job's), and its p95 decided both fits of runs 51-52, at the grid's top
#: (docs/capacity-runs.md, "Runs 51-53").
CONTENTION_FIT_UPTO = 0.6
#: Random pairs of (open-loop echo, back-to-back lone call) that stand for a lone call at
#: light load without the wake-up, when the wake-up's mean is worked out.
WAKE_SAMPLES = 20_000


#: Quantiles of the overhead kept in the file (0 %, 2.5 %, ..., 100 %).
OVERHEAD_QUANTILES = 41


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``shoptwin capacity calibrate``."""
    from simulator.capacity.harness import add_common_arguments

    add_common_arguments(parser)
    parser.add_argument(
        "--duration",
        type=float,
        default=4.0,
        help="measured seconds per ladder level (all passes)",
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="unmeasured seconds before each level"
    )
    parser.add_argument(
        "--concurrencies",
        default=DEFAULT_LADDER,
        help=f"closed-loop ladder (default {DEFAULT_LADDER})",
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=2,
        help="passes over the ladder, each for duration/passes per level (pooled)",
    )
    parser.add_argument(
        "--base",
        default="default",
        help="calibration whose other services are kept (default: the shipped one)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".shoptwin/capacity/calibration.json"),
        help="calibration file to write",
    )


def parse_ladder(value: str, flag: str = "--concurrencies") -> list[int]:
    """A comma-separated list of distinct concurrencies >= 1 (at least two)."""
    try:
        levels = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise SettingsError(f"{flag}: expected whole numbers like 1,2,4,8, got {value!r}") from None
    if len(levels) < 2 or levels[0] < 1:
        raise SettingsError(f"{flag}: give at least two concurrencies >= 1")
    return levels


def check_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Validated flags (``SettingsError`` names the flag)."""
    from simulator.capacity.harness import (
        check_number,
        parse_metrics,
        parse_services,
        parse_targets,
    )

    check_number(args.duration, "--duration")
    check_number(args.warmup, "--warmup", strict=False)
    check_number(args.workers, "--workers", minimum=1, strict=False, integer=True)
    check_number(args.passes, "--passes", minimum=1, strict=False, integer=True)
    targets = parse_targets(args.target)
    return {
        "services": parse_services(args.services),
        "targets": targets,
        "metrics": parse_metrics(args.metrics, targets),
        "ladder": parse_ladder(args.concurrencies),
    }


class Calibrator:
    """The measurements behind a calibration, taken a pass at a time so a caller can put
    other work between the passes (``validate`` puts its own passes there, so the
    calibration and the validation ladder see the same machine), and the fit of them.

    Order: :meth:`start` (echo's baselines, warm-ups), :meth:`measure_pass` ``passes`` times
    (echo's ladder and each service's, one level after another, ``duration_s / passes`` per
    level, then the light open-loop runs), :meth:`fit` at any point after that (it uses the
    passes measured so far)."""

    def __init__(
        self,
        generator: Any,
        running: Any,
        services: list[str],
        ladder: list[int],
        *,
        duration_s: float,
        warmup_s: float,
        workers: int,
        passes: int,
    ) -> None:
        self.generator = generator
        self.running = running
        self.services = services
        self.ladder = ladder
        self.duration_s = duration_s
        self.warmup_s = warmup_s
        self.workers = workers
        self.passes = passes
        self.echo_passes: list[list[Any]] = []
        self.service_passes: dict[str, list[list[Any]]] = {name: [] for name in services}
        #: Light open-loop runs, one per pass: each service's, and echo's.
        self.light: dict[str, list[Any]] = {name: [] for name in services}
        #: Each service's open-loop runs at ``OPEN_FRACTIONS`` of its ladder's best, one list
        #: per pass.
        self.open_load: dict[str, list[list[Any]]] = {name: [] for name in services}
        self.echo_open: list[Any] = []
        self.echo_back_to_back: Any = None

    def start(self) -> None:
        """Warm echo and the channel, then echo at concurrency 1 (back to back: the warm path
        the closed-loop ladder sees); warm each service."""
        from simulator.capacity.measure import ClosedJob

        echo = self.running.workloads["echo"]
        self.generator.run([ClosedJob(echo, 4, 0.5, 0.5)])
        self.echo_back_to_back = self.generator.run(
            [ClosedJob(echo, 1, self.duration_s, self.warmup_s)]
        )[0]
        for name in self.services:
            # Model caches, thread pools, first-call allocations.
            self.generator.run([ClosedJob(self.running.workloads[name], 8, 1.0, 1.0)])

    def measure_pass(self) -> None:
        """One pass over echo's ladder and each service's, then the open-loop runs (light,
        and each service's at ``OPEN_FRACTIONS`` of its ladder's best throughput).
        Echo's ladder is measured beside the services' because each batch time is the
        service's mean less echo's at the same concurrency: both halves of that difference
        should see the same machine.

        The light runs are echo at ``ECHO_LIGHT_RATE`` (every call finds client and server
        asleep: the overhead open-loop traffic sees, and its spread) and each service alone at
        a light rate (the batcher's wake-up and the noise of a call's own time). They are
        taken a share per pass and pooled like the ladder: taken once, a burst of background
        load during those seconds became every modelled call's overhead or every idle
        batch's wake-up (run 14's echo measured a mean of 8.3 ms against 2.4-2.9 ms in the
        runs around it, and the model's p95 at 10 % of the knee came out twice the measured
        one)."""
        from simulator.capacity.measure import ClosedJob, OpenJob

        per_pass = self.duration_s / self.passes
        index = len(self.echo_passes)
        for name in ("echo", *self.services):
            workload = self.running.workloads[name]
            results = self.generator.run(
                [ClosedJob(workload, c, per_pass, self.warmup_s) for c in self.ladder]
            )
            (self.echo_passes if name == "echo" else self.service_passes[name]).append(results)
        echo = self.running.workloads["echo"]
        self.echo_open.append(
            self.generator.run(
                [OpenJob(echo, ECHO_LIGHT_RATE, per_pass, self.warmup_s, seed=1 + 2 * index)]
            )[0]
        )
        for name in self.services:
            best = self.best_throughput(name)
            light_rate = max(LIGHT_FRACTION * best, 5.0)
            workload = self.running.workloads[name]
            self.light[name].append(
                self.generator.run(
                    [OpenJob(workload, light_rate, 2 * per_pass, self.warmup_s, seed=2 + 2 * index)]
                )[0]
            )
            self.open_load[name].append(
                self.generator.run(
                    [
                        OpenJob(
                            workload, f * best, per_pass, self.warmup_s, seed=open_load_seed(index)
                        )
                        for f in OPEN_FRACTIONS
                    ]
                )
            )

    def best_throughput(self, name: str) -> float:
        """The highest throughput of ``name``'s ladder so far (its passes pooled), calls/s."""
        return float(max(r.summary()["throughput"] for r in self._levels(name)))

    def _levels(self, name: str, only_pass: int | None = None) -> list[Any]:
        """The ladder's levels of ``name`` (or echo), the passes so far pooled (or one)."""
        from simulator.capacity.measure import merge_results

        passes = self.echo_passes if name == "echo" else self.service_passes[name]
        if only_pass is not None:
            passes = [passes[only_pass]]
        return [merge_results([run[i] for run in passes]) for i in range(len(self.ladder))]

    def measure_all(self, log: Any = print) -> tuple[dict[str, Any], dict[str, Any]]:
        """Every measurement in order, then the fit (``calibrate`` alone: nothing in
        between the passes). The ladder runs ``passes`` times with ``duration_s / passes`` per
        level and the passes are pooled, so a burst of background load spreads over the levels
        instead of bending one of them."""
        self.start()
        for _ in range(self.passes):
            self.measure_pass()
        return self.fit(log)

    def fit(
        self,
        log: Any = print,
        only_pass: int | None = None,
        loop_contention: Mapping[str, float] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The service entries of the calibration (JSON objects) and the raw measurements,
        from the passes measured so far (or from pass ``only_pass`` alone; echo's back-to-back
        run of ``start`` is shared by every pass). ``loop_contention`` (per service) is used
        as given instead of fitted: one pass's short open-loop runs are too few calls to fit
        it, so the per-pass fits take the pooled one."""
        import numpy as np

        from simulator.capacity.fit import (
            OpenRun,
            batch_cv_exponent,
            capacity_per_s,
            exponential_wake_ms,
            fit_batching,
            fit_line,
            fit_loop_contention,
            simulate_closed,
        )
        from simulator.capacity.harness import BATCH_WAIT, MEASURABLE
        from simulator.capacity.measure import merge_results, pass_p95s
        from simulator.platform import Batching, RpcCalibration, ServiceCalibration

        echo_result = self.echo_back_to_back.summary()

        def pooled(runs: list[Any]) -> Any:
            return runs[only_pass] if only_pass is not None else merge_results(runs)

        echo_open_run = pooled(self.echo_open)
        echo_open = echo_open_run.summary()
        warm_overhead_ms = echo_result["mean_ms"]
        overhead_ms = echo_open["mean_ms"]
        log(
            f"echo: {warm_overhead_ms:.3f} ms back to back, {overhead_ms:.3f} ms open-loop at "
            f"{ECHO_LIGHT_RATE:.0f}/s (the overhead outside the queue)"
        )
        # The echo ladder at the same concurrencies: in a closed loop the c calls of a batch
        # also pass one after another through the client and the server's event loop (send,
        # receive, parse, respond), serialised with the batch; under open-loop load that work
        # overlaps the batch on the other core. Subtracting echo's mean at the same
        # concurrency leaves the time of the batch itself, the part that queues.
        echo_ladder = {
            c: result.summary()["mean_ms"]
            for c, result in zip(self.ladder, self._levels("echo", only_pass), strict=True)
        }
        log(
            "echo ladder: "
            + ", ".join(f"c={c} {ms:.2f} ms" for c, ms in sorted(echo_ladder.items()))
        )
        # The event loop's time per call: echo's time per call at the top of its ladder,
        # where the calls queue back to back for the loop (it is what a batch waits for per
        # arriving call).
        top = max(echo_ladder)
        loop_ms = echo_ladder[top] / top
        log(f"event loop: {loop_ms:.4f} ms per call (echo at concurrency {top})")
        # The overhead's spread, not only its mean: at light load it is most of a call's tail.
        overhead_quantiles = tuple(
            round(float(q), 4)
            for q in np.percentile(
                echo_open_run.latencies_ms, np.linspace(0, 100, OVERHEAD_QUANTILES)
            )
        )
        entries: dict[str, Any] = {}
        raw: dict[str, Any] = {
            "echo": echo_result,
            "echo_open": echo_open,
            "echo_ladder_mean_ms": echo_ladder,
            "loop_ms": loop_ms,
            "passes": len(self.echo_passes) if only_pass is None else 1,
        }
        for name in self.services:
            rpc, max_batch = MEASURABLE[name]
            results = self._levels(name, only_pass)
            rows = []
            for result in results:
                s = result.summary()
                rows.append(
                    {
                        "concurrency": s["level"],
                        "throughput": round(s["throughput"], 1),
                        "mean_ms": s["mean_ms"],
                        "p50_ms": s["p50_ms"],
                        "p95_ms": s["p95_ms"],
                        "p99_ms": s["p99_ms"],
                        # The service's own batches at this level (its metrics series):
                        # the batch size the fit assumes is the concurrency.
                        **{k: s[k] for k in ("batch_size", "batch_ms") if k in s},
                    }
                )
                log(
                    f"{name}.{rpc} c={s['level']:>3}: {s['throughput']:8.1f}/s  mean "
                    f"{s['mean_ms']:.2f} ms  p95 {s['p95_ms']:.2f} ms  errors {s['errors']}"
                )
            errors = sum(r.errors for r in results)
            if errors and errors > 0.01 * sum(r.completed for r in results):
                raise RuntimeError(
                    f"{name}: {errors} errors while calibrating; see the service log"
                )
            # Batch time per level: the service's mean less echo's at the same concurrency.
            batch_rows = [
                {**r, "mean_ms": r["mean_ms"] - echo_ladder[r["concurrency"]] + warm_overhead_ms}
                for r in rows
            ]
            fit = fit_batching(
                [r["concurrency"] for r in batch_rows],
                [r["mean_ms"] for r in batch_rows],
                warm_overhead_ms,
            )
            table = batch_table(batch_rows, fit.overhead_ms, max_batch)
            light = pooled(self.light[name])
            lone = light.summary()
            t1 = table[0][1]
            # Medians, not means: a burst of background load during these few seconds must
            # not become a wake-up cost every idle batch pays. A lone call at light load
            # without the wake-up is the open-loop echo's overhead plus the back-to-back
            # lone call's own time (both measured); the wake-up is the exponential delay
            # that moves the median of that sum to the light run's median.
            pairs = np.random.default_rng(0)
            own_ms = np.asarray(results[0].latencies_ms) - echo_result["p50_ms"]
            without_wake = pairs.choice(
                np.asarray(echo_open_run.latencies_ms), WAKE_SAMPLES
            ) + pairs.choice(own_ms, WAKE_SAMPLES)
            wake_ms = exponential_wake_ms(without_wake, light.latencies_ms)
            # The noise is drawn on T(n); scale it so a lone call (T(1) + wake) keeps its
            # spread. Two estimates (the light open-loop run, and the back-to-back lone calls
            # of the ladder): background load only ever widens a spread, so the calmer one
            # is kept.
            own_light = [v - overhead_ms for v in light.latencies_ms]
            own_closed = [v - fit.overhead_ms for v in results[0].latencies_ms]
            cv = min(
                lognormal_cv(own_light) * (t1 + wake_ms) / max(t1, 1e-6),
                lognormal_cv(own_closed),
            )
            log(
                f"{name}.{rpc} open loop at {light.level:.1f}/s: mean {lone['mean_ms']:.2f} ms, "
                f"p95 {lone['p95_ms']:.2f} ms -> wake-up {wake_ms:.2f} ms per batch from idle"
            )
            # With the service's own batch series the batcher's time per batch size is
            # measured, not inferred: the ladder's level c does not hold batches of c (at 8
            # and 16 callers both services run two alternating batches of c/2, and the
            # inferred table makes the model's batcher busier than the real one at every
            # mid-load rate; docs/capacity-runs.md "Batches"). The rest of a lone call's own time
            # (preparing the query, building the answer on the event loop) is spent outside
            # the batcher: it delays the call but does not hold the next one up. The batch
            # times hold the loop's competition for the cores, so the loop does not lengthen
            # the model's batches; it is a queue of its own that the calls pass (below).
            served = served_batch_table(rows, max_batch)
            outside_ms = max(table[0][1] - served[0][1], 0.0) if served else 0.0
            latency_wake_ms = wake_ms
            if served and "batch_ms" in lone:
                # The wake-up the batcher itself pays, from the same series: a light run's
                # batches are lone calls, most of them starting on an idle batcher, and they
                # take longer than the ladder's back-to-back lone batch by the wake-up.
                # The wake-up read from latency medians above also holds the event loop's
                # own wake-up, outside the batcher; as the batcher's it occupied the batcher
                # and its exponential tail was the model's (intent's p95 at 10-25 % of the
                # knee 18-20 % high in run 16).
                wake_ms = batcher_wake_ms(lone, served, lone["throughput"])
                log(
                    f"{name}.{rpc} the batcher's own wake-up {wake_ms:.2f} ms per batch from "
                    f"idle (light run: {lone['batch_ms']:.2f} ms per batch of "
                    f"{lone['batch_size']:.2f})"
                )
            # The batches under open-loop load: the same batch takes longer there than in the
            # closed ladder (recommendation's batches of 3-4 by 8-10 %: the event loop and the
            # generator are busy during the whole batch, not only between the half batches),
            # and the model's batch sizes near the knee are that difference amplified.
            open_runs = [pooled(list(runs)) for runs in zip(*self.open_load[name], strict=True)]
            open_rows = [run.summary() for run in open_runs]
            open_points = open_batch_points(open_rows, wake_ms) if served else []
            # How much a batch's time varies under that load: the cv of the service's batch
            # times by size class. It falls more slowly with length than independent noise
            # per lone call would have it (the model's 0.5), and the long, slow batches
            # behind a queue set the p95 near the knee.
            # Within a pass: validate judges each pass's p95 (the median over the passes), and
            # the passes ran at speeds of their own (fit.within_pass_cv).
            open_batches = merge_results(open_runs).batches
            each_pass = (merge_results(runs) for runs in self.open_load[name])
            pass_batches = (
                [run.batches.by_size for run in each_pass if run.batches is not None]
                if only_pass is None
                else []
            )
            spread = batch_cv_exponent(open_batches.by_size, pass_batches) if open_batches else None
            # Without passes to read within (one pass's fit) the two are the same.
            pooled_spread = (
                batch_cv_exponent(open_batches.by_size) if open_batches and pass_batches else spread
            )
            cv_exponent = 0.5
            latency_cv = cv
            if spread is not None:
                # The same line gives the lone batch's cv: read from thousands of the
                # service's own batches, where the latency-based estimate above comes from a
                # few hundred calls less a subtracted overhead (intent's read 0.25, 0.21 and
                # 0.35 in three runs; its lone batches' 0.24-0.26).
                cv_exponent = round(spread.exponent, 3)
                cv = spread.lone_cv
                log(
                    f"{name}.{rpc} batch spread under open-loop load: cv "
                    + ", ".join(f"{p.cv:.2f} at {p.mean_ms:.1f} ms" for p in spread.points)
                    + f"; cv ~ {cv:.3f} x length^-{cv_exponent:.2f} (calls' latencies gave "
                    f"{latency_cv:.3f})"
                )
            ladder_served = served
            if open_points:
                served = with_open_load(served, open_points, max_batch)
            per_batch_ms, per_item_ms = fit.per_batch_ms, fit.per_item_ms
            if served:
                line = fit_line([n for n, _ in served], [t for _, t in served])
                per_batch_ms, per_item_ms = max(line.intercept, 0.0), max(line.slope, 1e-3)
                log(
                    f"{name}.{rpc} batches (the service's own series"
                    + (", under open-loop load where measured" if open_points else "")
                    + "): "
                    + ", ".join(f"{n:g} -> {t:.2f} ms" for n, t in served)
                    + f"; {outside_ms:.2f} ms of a lone call outside the batcher"
                )
            rpc_cal = RpcCalibration(
                distribution="lognormal",
                mean_ms=round(per_batch_ms, 4),
                cv=round(min(cv, 3.0), 3),
                per_item_ms=round(per_item_ms, 4),
                overhead_ms=round(overhead_ms + outside_ms, 4),
                overhead_quantiles_ms=tuple(round(q + outside_ms, 4) for q in overhead_quantiles),
                load_dependence=tuple(rows),
                batch_ms=served or table,
            )
            service = ServiceCalibration(
                workers=self.workers,
                rpcs={rpc: rpc_cal},
                batching=Batching(
                    max_batch=max_batch,
                    max_wait_ms=BATCH_WAIT[name][0],
                    grow_to_previous=BATCH_WAIT[name][1],
                    variability="averaged",
                    cv_exponent=cv_exponent,
                    wake_ms=round(wake_ms, 4),
                    # A wait of random length: a thread woken, the GIL won back.
                    wake="exponential",
                    # With the service's own batch times the loop is a server of its own
                    # that each call passes in and out: the gRPC work echo measures per call,
                    # and the call's own work outside the batcher (preparing the query,
                    # building the answer). Without them, the ladder's batch times lack the
                    # loop's competition, which lengthens each batch instead.
                    loop_ms=round(loop_ms + outside_ms, 4) if served else round(loop_ms, 4),
                    loop="queue" if served else "extends",
                ),
            )
            contention_fit = None
            runs: list[OpenRun] = []
            contention = (loop_contention or {}).get(name)
            if contention is None and served and open_rows:
                # The loop's wait for a core behind a running batch, fitted to the open-loop
                # runs up to CONTENTION_FIT_UPTO of the ladder's best, each simulated in its
                # own shape (a short job per pass from an empty queue: a steady-state model
                # does not fill its queue as those jobs do).
                passes = range(len(self.open_load[name]))
                chosen = [only_pass] if only_pass is not None else list(passes)
                runs = [
                    OpenRun(
                        rates=tuple(self.open_load[name][i][j].level for i in chosen),
                        seeds=tuple(open_load_seed(i) for i in chosen),
                        duration_s=self.open_load[name][chosen[0]][j].window_s,
                        warmup_s=self.warmup_s,
                        pass_p95_ms=tuple(pass_p95s([self.open_load[name][i][j] for i in chosen])),
                    )
                    for j, f in enumerate(OPEN_FRACTIONS)
                    if f <= CONTENTION_FIT_UPTO
                ]
                contention_fit = fit_loop_contention(service, rpc, runs)
                contention = contention_fit.contention
                log(
                    f"{name}.{rpc} the loop's wait behind a batch: contention {contention:.2f} "
                    "(p95 of the open-loop runs: "
                    + ", ".join(
                        f"{run.p95_ms:.1f} ms measured, {p:.1f} model"
                        for run, p in zip(runs, contention_fit.p95_ms, strict=True)
                    )
                    + ")"
                )
            if contention and service.batching is not None and served:
                service = replace(
                    service, batching=replace(service.batching, loop_contention=contention)
                )
            # The model under the closed ladder on the warm path, for the record.
            warm = replace(
                service,
                rpcs={rpc: replace(rpc_cal, overhead_ms=fit.overhead_ms + outside_ms)},
                batching=replace(service.batching, wake_ms=0.0) if service.batching else None,
            )
            check = [
                simulate_closed(
                    warm,
                    rpc,
                    concurrency=c,
                    duration_s=max(self.duration_s, 5.0),
                    warmup_s=1.0,
                    seed=c,
                ).summary()
                for c in self.ladder
            ]
            log(
                f"{name}.{rpc}: per batch {per_batch_ms:.3f} ms + {per_item_ms:.3f} ms "
                f"per request (ladder line r2 {fit.r2:.3f}), overhead {overhead_ms:.3f} ms, cv "
                f"{rpc_cal.cv}; capacity {capacity_per_s(service, rpc):.0f}/s"
            )
            entries[name] = service
            raw[name] = {
                "fit": {
                    "per_batch_ms": fit.per_batch_ms,
                    "per_item_ms": fit.per_item_ms,
                    "warm_overhead_ms": fit.overhead_ms,
                    "overhead_ms": overhead_ms,
                    "r2": fit.r2,
                    "wake_ms": wake_ms,
                    "latency_wake_ms": latency_wake_ms,
                    "light_open_loop": lone,
                    # Where batch_ms came from: "service" (its own batch series) or "ladder"
                    # (level c read as batches of c: no metrics endpoint to read).
                    "batch_source": "service" if served else "ladder",
                    "ladder_batch_ms": table,
                    "outside_ms": outside_ms,
                    # The closed ladder's own batch table, and the open-loop runs that
                    # replaced it in their range of sizes (``with_open_load``).
                    "closed_batch_ms": ladder_served,
                    "open_load": open_rows,
                    "open_batch_ms": open_points,
                    # The batch times' spread by size class under that load, and the exponent
                    # read from it (None: too few batches or classes).
                    "batch_spread": [asdict(p) for p in spread.points] if spread else None,
                    # The same, the passes pooled as they are (their speeds' spread in).
                    "batch_spread_pooled": (
                        [asdict(p) for p in pooled_spread.points] if pooled_spread else None
                    ),
                    "cv_exponent": cv_exponent,
                    "latency_cv": latency_cv,
                    # The loop's contention and its fit: per candidate, the model's p95
                    # at each open-loop run it is fitted to and the summed squared log error.
                    "loop_contention": contention or 0.0,
                    "loop_contention_fit": (
                        [
                            {"contention": c, "p95_ms": [round(p, 3) for p in p95s], "error": e}
                            for c, p95s, e in contention_fit.candidates
                        ]
                        if contention_fit
                        else None
                    ),
                    # The runs it was fitted to, as ``OpenRun`` fields (each pass's rate,
                    # seed and p95), so that the fit can be redone offline.
                    "loop_contention_runs": [asdict(run) for run in runs] or None,
                },
                "ladder": rows,
                "model_ladder": [
                    {k: c[k] for k in ("level", "throughput", "mean_ms", "p50_ms", "p95_ms")}
                    for c in check
                ],
            }
        return entries, raw


def open_load_seed(pass_index: int) -> int:
    """The arrival seed of pass ``pass_index``'s open-loop runs at ``OPEN_FRACTIONS``: the
    contention fit simulates the same arrivals."""
    return 3 + 2 * pass_index


def batcher_wake_ms(
    light: dict[str, Any], served: tuple[tuple[float, float], ...], rate: float
) -> float:
    """The batcher's wake-up (ms per batch that starts on an idle batcher) from a light
    open-loop run's mean batch (``batch_size``, ``batch_ms``) and the served batch table: the
    light batches' excess over ``T(size)``, divided by the share of batches that start from
    idle, ``1 - u`` with ``u`` the batcher's busy share at that rate (an arrival finds the
    batcher as often busy as it is busy, by PASTA)."""
    size, ms = float(light["batch_size"]), float(light["batch_ms"])
    base = table_ms(served, size)
    return max(ms - base, 0.0) / (1.0 - batcher_busy(rate, size, ms))


def batcher_busy(rate: float, size: float, ms: float) -> float:
    """The batcher's busy share at ``rate`` calls/s in batches of mean ``size`` taking ``ms``
    each, at most 0.9 (past that the share of batches from idle is too small to divide by)."""
    return min(rate / max(size, 1.0) * ms / 1000.0, 0.9)


def open_batch_points(open_rows: list[dict[str, Any]], wake_ms: float) -> list[tuple[float, float]]:
    """``(batch size, ms)`` of the open-loop runs from the service's own series, less the
    wake-ups their batches paid: the model adds its wake-up to each batch that starts on an
    idle batcher, a share ``1 - u`` of them (``u`` the batcher's busy share, as in
    ``batcher_wake_ms``). Empty unless every run has both numbers."""
    points: list[tuple[float, float]] = []
    for row in open_rows:
        if "batch_size" not in row or "batch_ms" not in row or row["throughput"] <= 0:
            return []
        size, ms = float(row["batch_size"]), float(row["batch_ms"])
        busy = batcher_busy(row["throughput"], size, ms)
        points.append((size, max(ms - wake_ms * (1.0 - busy), 0.01)))
    return points


def with_open_load(
    served: tuple[tuple[float, float], ...],
    open_points: list[tuple[float, float]],
    max_batch: int,
) -> tuple[tuple[float, float], ...]:
    """The closed ladder's batch table with the open-loop points in their range of sizes:
    ladder points below the smallest open size stay (the lone batch, back to back), those
    within the range give way to the open points, and those above it are scaled by the ratio
    of the largest open point to the ladder's time at the same size. With the run past the
    knee (the last of ``OPEN_FRACTIONS``) the largest open point usually lies above every
    ladder point, and the scaling only covers a run that came out short of the knee."""
    low = min(n for n, _ in open_points)
    top_n, top_ms = max(open_points)
    ladder_ms = table_ms(served, top_n)
    ratio = top_ms / ladder_ms if ladder_ms > 0 else 1.0
    points = [(n, t) for n, t in served if n < low]
    points += open_points
    points += [(n, t * ratio) for n, t in served if n > top_n]
    return rising_table(points, max_batch)


def table_ms(table: tuple[tuple[float, float], ...], size: float) -> float:
    """``T(size)`` of a batch table as model mode reads it (interpolated, extrapolated)."""
    from simulator.platform import RpcCalibration

    return RpcCalibration(batch_ms=table).batch_mean_ms(size)


def rising_table(
    points: Iterable[tuple[float, float]], max_batch: int
) -> tuple[tuple[float, float], ...]:
    """``(batch size, ms)`` points as a batch table: sorted by size, sizes above
    ``max_batch`` left out (their batches are capped), a size within 0.05 of a smaller one's
    merged into it, and non-decreasing (a bigger batch never takes less time; a dip is
    noise)."""
    table: list[tuple[float, float]] = []
    for size, measured_ms in sorted(points):
        if size > max_batch or (table and size - table[-1][0] < 0.05):
            continue
        ms = max(measured_ms, table[-1][1]) if table else measured_ms
        table.append((round(size, 3), round(ms, 4)))
    return tuple(table)


def served_batch_table(
    rows: list[dict[str, Any]], max_batch: int
) -> tuple[tuple[float, float], ...]:
    """Batch time per batch size from the service's own series: each ladder level's mean
    batch size and the batcher's mean time per batch (``batch_size``, ``batch_ms``), as a
    ``rising_table``. Empty unless every level has both numbers and at least two sizes
    differ."""
    if not rows or any("batch_size" not in r or "batch_ms" not in r for r in rows):
        return ()
    table = rising_table(((float(r["batch_size"]), float(r["batch_ms"])) for r in rows), max_batch)
    return table if len(table) >= 2 else ()


def batch_table(
    rows: list[dict[str, Any]], overhead_ms: float, max_batch: int
) -> tuple[tuple[float, float], ...]:
    """Batch time per batch size from the closed-loop ladder: at concurrency ``c`` a take-all
    batcher serves batches of about ``c``, so ``T(c) = mean latency(c) - overhead``, as a
    ``rising_table``."""
    return rising_table(
        ((float(r["concurrency"]), max(r["mean_ms"] - overhead_ms, 0.01)) for r in rows),
        max_batch,
    )


def lognormal_cv(own_ms: Any) -> float:
    """The cv of the lognormal whose p50..p95 spread matches ``own_ms`` (a lone call's own
    time): ``ln(p95/p50) = 1.645·sigma``. Quantiles, not the sample's std, so a few long stalls
    from other processes do not blow the tail of every batch up."""
    import numpy as np

    values = np.asarray(own_ms, dtype=float)
    values = values[values > 0]
    if values.size < 20:
        return 0.3
    p50, p95 = np.percentile(values, [50, 95])
    sigma = math.log(p95 / p50) / 1.6449 if p50 > 0 and p95 > p50 else 0.0
    return float(math.sqrt(math.expm1(sigma * sigma)))


def build_calibration(base: Any, entries: dict[str, Any], provenance: dict[str, Any]) -> Any:
    """``base`` with the measured ``entries`` merged in, and the new provenance. A measured
    service keeps the base's RPCs that were not measured, outside its batcher."""
    services = dict(base.services)
    for name, measured in entries.items():
        merged = measured
        if name in services:
            # The base's other RPCs stay (model mode needs them), served outside the batcher.
            rpcs = {**services[name].rpcs, **measured.rpcs}
            batching = measured.batching
            if batching is not None and len(rpcs) > len(measured.rpcs):
                batching = replace(batching, rpcs=tuple(measured.rpcs))
            merged = replace(measured, rpcs=rpcs, batching=batching)
        services[name] = merged
    return replace(base, services=services, provenance=provenance)


SOURCE = (
    "shoptwin capacity calibrate: closed-loop ladder through gRPC from a separate generator "
    "process (batch_ms: the service's own mean batch size and batcher time per batch at each "
    "level, from its shoptwin_batch_* metrics, replaced in their range of sizes by open-loop "
    f"runs at {'/'.join(f'{f:g}' for f in OPEN_FRACTIONS)} of the ladder's best throughput "
    "(less the wake-ups their idle "
    "batches paid) and scaled above it; without the metrics, mean latency at concurrency n "
    "less echo's mean at the same concurrency; mean_ms/per_item_ms: line fit of the same), "
    "overhead_ms: open-loop echo at 50/s (and its quantiles, overhead_quantiles_ms) plus the "
    "part of a lone call's own time spent outside the batcher, wake_ms: the mean of an "
    "exponential wake-up (wake): the batcher's own (a light open-loop run's batch time over "
    "batch_ms, per batch that starts from idle); without the metrics, the one that moves the "
    "median of open-loop echo plus "
    "a back-to-back lone call to that of a lone call at a light open-loop rate, loop_ms: echo's "
    "mean per call at the top of its ladder (with the service's batch times, plus the part of "
    "a lone call outside the batcher, spent in a queue per worker: loop queue), "
    "cv: lognormal "
    "p50..p95 spread, cv_exponent: how the cv of the service's batch times by size class "
    "(shoptwin_batch_duration_by_size_seconds, upper body, open-loop runs) falls with their "
    "length; services not in measured_services keep the base file's entries"
)


def provenance_for(services: list[str], argv: list[str], raw: dict[str, Any]) -> dict[str, Any]:
    """Where the numbers came from: commit, host, command, time, which services were measured."""
    from services.runtime.bench import git_commit

    return {
        "measured": True,
        "measured_services": services,
        "source": SOURCE,
        "commit": git_commit(),
        "host": platform.node(),
        "cpus": __import__("os").cpu_count(),
        "command": "shoptwin " + shlex.join(argv),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "echo_mean_ms": raw["echo"]["mean_ms"],
    }


def run(args: argparse.Namespace) -> int:
    """Calibrate the services and write the file."""
    from simulator.capacity.measure import LoadGenerator

    checked = check_arguments(args)
    from simulator.platform import CalibrationError, calibration_to_json, load_calibration

    try:
        base = load_calibration(args.base)
    except CalibrationError as exc:
        raise SettingsError(f"--base: {exc}") from None
    log = (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    # The generator process starts before anything in this process touches gRPC.
    with LoadGenerator() as generator:
        from simulator.capacity.harness import running_services

        log_dir = args.log_dir or args.out.parent / "logs"
        with running_services(
            checked["services"],
            checked["targets"],
            workers=args.workers,
            log_dir=log_dir,
            config_path=getattr(args, "config", None),
            log=log,
            metrics=checked["metrics"],
        ) as running:
            entries, raw = Calibrator(
                generator,
                running,
                checked["services"],
                checked["ladder"],
                duration_s=args.duration,
                warmup_s=args.warmup,
                workers=args.workers,
                passes=args.passes,
            ).measure_all(log)
    provenance = provenance_for(checked["services"], sys.argv[1:], raw)
    calibration = build_calibration(base, entries, provenance)
    payload = calibration_to_json(calibration)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    measurements_path = args.out.with_suffix(".measurements.json")
    measurements_path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    if args.json:
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print(render_summary(calibration, checked["services"], raw))
        print(f"wrote {args.out} (measurements: {measurements_path})")
    return 0


def render_summary(calibration: Any, services: list[str], raw: dict[str, Any]) -> str:
    """One row per measured service: the fitted model and its closed-loop check."""
    from services.runtime.bench import render_table
    from simulator.capacity.fit import capacity_per_s

    rows = []
    for name in services:
        svc = calibration.services[name]
        for rpc, r in svc.rpcs.items():
            rows.append(
                {
                    "service": name,
                    "rpc": rpc,
                    "overhead_ms": r.overhead_ms,
                    "per_batch_ms": r.mean_ms,
                    "per_item_ms": r.per_item_ms,
                    "cv": r.cv,
                    "wake_ms": svc.batching.wake_ms if svc.batching else 0.0,
                    "loop_ms": svc.batching.loop_ms if svc.batching else 0.0,
                    "loop_contention": svc.batching.loop_contention if svc.batching else 0.0,
                    "r2": round(raw[name]["fit"]["r2"], 3),
                    "capacity_per_s": round(capacity_per_s(svc, rpc), 1),
                    "measured_max_per_s": max(row["throughput"] for row in raw[name]["ladder"]),
                }
            )
    return render_table(
        rows,
        [
            "service",
            "rpc",
            "overhead_ms",
            "per_batch_ms",
            "per_item_ms",
            "cv",
            "wake_ms",
            "loop_ms",
            "loop_contention",
            "r2",
            "capacity_per_s",
            "measured_max_per_s",
        ],
    )
