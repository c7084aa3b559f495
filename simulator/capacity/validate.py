"""``shoptwin capacity validate``: the model's predictions against the real services under
open-loop Poisson load, over a ladder of arrival rates from light load to past saturation.

For each service and rate the generator (a separate process, ``measure.LoadGenerator``) offers
Poisson arrivals for ``--warmup`` + the rate's share of ``--duration`` in each of ``--passes``
passes (half of it at light load, twice at the top judged rates, a quarter at and past the
predicted knee: :func:`rate_durations`) and measures the calls that arrived after the
warm-up; the model (``fit.simulate_open``: the ``Station`` model mode uses, fed the
calibration) gets the same arrival times (same seed), the same in-flight cap and the same
window in its first replication, fresh arrivals in the others (``--model-replications``), all
pooled, so that the prediction is the model's expectation. (Replaying the measured arrivals
in every replication was tried and left: docs/capacity-runs.md, "Runs 35-39".) The bounds:

* **knee**: the maximum sustainable throughput, defined as the highest throughput achieved
  (successful completions inside the window per second) over the ladder, measured and predicted
  alike; the predicted knee must be within ``--knee-tolerance`` (20 %) of the measured one. The
  auto ladder runs to 1.3x the predicted knee, so both sides reach saturation.
* **p95 below the knee**: at every rate whose offered load is at most ``--below-knee`` (0.8) of
  the measured knee, the predicted p95 must be within ``--p95-tolerance`` (15 %) of the
  measured p95. Closer to the knee p95 diverges (it is unbounded at the knee itself), so a small
  capacity error becomes an arbitrarily large p95 error: those rates are shown, not judged.
  The p95 judged is the **median over the passes of each pass's p95**, on both sides (the
  model's: the mean over its replications of that median, each replication's passes getting
  the measured passes' windows). A shared machine slows down for seconds at a time. One such
  pass out of eight can make a p95 pooled over all calls three times what the other seven
  agree on; the median over repeated trials is what a benchmark reports for that reason. The
  pooled p95 is shown beside it (``m_p95_ms``, ``p_p95_ms``, ``p95_error_pooled``).

Without ``--calibration`` the calibration is measured in the same run, its passes alternating
with the ladder's (:func:`measure`), so both see the same minutes of the machine.

Exit status 1 when any bound fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.runtime.settings import SettingsError
from simulator.capacity.measure import pass_median_p95, pass_p95s

AUTO_FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 1.15, 1.3)
#: Share of ``--duration`` measured at a rate below the predicted knee, by the first band
#: (fraction of the knee) it is under: half at light load, twice at the top judged rates.
DURATION_SHARES = ((0.3, 0.5), (0.6, 1.0), (0.85, 2.0), (1.0, 1.0))
#: Share of ``--duration`` measured at rates at and past the predicted knee.
PAST_KNEE_SHARE = 0.25
#: The ladder reached the measured knee only if its top rate was served at less than this
#: share of the offered rate: a service that kept up with every rate offered has a knee
#: above the ladder, and the highest throughput is only the top rate (run 44).
KNEE_REACHED_SHARE = 0.95


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``shoptwin capacity validate``."""
    from simulator.capacity.calibrate import DEFAULT_LADDER
    from simulator.capacity.harness import add_common_arguments

    add_common_arguments(parser)
    parser.add_argument(
        "--calibration",
        default=None,
        help="calibration file to check (default: calibrate first, in this run, and check that)",
    )
    parser.add_argument(
        "--rates",
        default="auto",
        help="'auto' (0.1..1.3 of the predicted knee) or comma-separated arrival rates per second",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=32.0,
        help="measured seconds per rate over all passes, times the rate's share: 0.5 under "
        "0.3 of the predicted knee, 2 at 0.6-0.85 of it, 0.25 at and past it, else 1",
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="unmeasured seconds at the start of each rate"
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=256,
        help="calls outstanding at most; arrivals past it are dropped (counted as drops)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the arrival processes")
    parser.add_argument(
        "--passes",
        type=int,
        default=8,
        help="passes over the ladder, each for duration/passes per rate (pooled)",
    )
    parser.add_argument(
        "--model-replications",
        type=int,
        default=10,
        help="replications of the ladder the model runs per rate (the first with the measured "
        "arrivals, the others with fresh ones), pooled: the prediction is the model's "
        "expectation, not one more noisy sample",
    )
    parser.add_argument("--p95-tolerance", type=float, default=0.15)
    parser.add_argument("--knee-tolerance", type=float, default=0.20)
    parser.add_argument(
        "--below-knee",
        type=float,
        default=0.8,
        help="p95 is judged at offered rates up to this fraction of the measured knee",
    )
    parser.add_argument(
        "--concurrencies",
        default=DEFAULT_LADDER,
        help="closed-loop ladder when calibrating first",
    )
    parser.add_argument(
        "--calibration-duration",
        type=float,
        default=6.0,
        help="measured seconds per ladder level when calibrating first",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".shoptwin/capacity/validate"),
        help="directory for validate.json, report.html (and calibration.json when calibrating)",
    )


def parse_rates(value: str) -> list[float] | None:
    """``None`` for auto, else the sorted rates; ``SettingsError`` names ``--rates``."""
    if value.strip() == "auto":
        return None
    try:
        rates = sorted({float(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise SettingsError(
            f"--rates: expected 'auto' or numbers like 50,100,200, got {value!r}"
        ) from None
    if not rates or rates[0] <= 0:
        raise SettingsError("--rates: give at least one rate > 0")
    return rates


def check_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Validated flags (``SettingsError`` names the flag)."""
    from simulator.capacity import calibrate
    from simulator.capacity.harness import check_number

    # The flags shared with calibrate (durations, workers, passes, services, targets, ladder).
    checked = calibrate.check_arguments(args)
    check_number(args.max_in_flight, "--max-in-flight", minimum=1, strict=False, integer=True)
    check_number(
        args.model_replications, "--model-replications", minimum=1, strict=False, integer=True
    )
    check_number(args.p95_tolerance, "--p95-tolerance")
    check_number(args.knee_tolerance, "--knee-tolerance")
    check_number(args.below_knee, "--below-knee")
    check_number(args.calibration_duration, "--calibration-duration")
    checked["rates"] = parse_rates(args.rates)
    checked["calibration"] = None
    if args.calibration is not None:
        from simulator.platform import CalibrationError, load_calibration

        try:
            calibration = load_calibration(args.calibration)
        except CalibrationError as exc:
            raise SettingsError(f"--calibration: {exc}") from None
        for name in checked["services"]:
            if name not in calibration.services:
                raise SettingsError(f"--calibration: has no service {name!r}")
        checked["calibration"] = calibration
    return checked


def evaluate(
    rows: list[dict[str, Any]],
    *,
    p95_tolerance: float,
    knee_tolerance: float,
    below_knee: float,
    replications: int = 1,
) -> dict[str, Any]:
    """Knees and the pass/fail of each bound for one service's ladder of rows (each with
    ``rate``, measured ``m_*`` and predicted ``p_*`` fields); marks the judged rows. The knee
    bound fails when the ladder did not reach the measured knee (``KNEE_REACHED_SHARE``).
    Beside the verdict, how likely a perfect model would have been to pass the p95 bound on
    these rows (:func:`perfect_model_chance`; ``replications``: the model's, for its own
    spread)."""
    measured_knee = max(r["m_throughput"] for r in rows)
    predicted_knee = max(r["p_throughput"] for r in rows)
    knee_error = (predicted_knee - measured_knee) / measured_knee if measured_knee else float("inf")
    top = top_row(rows)
    knee_reached = top["m_throughput"] < KNEE_REACHED_SHARE * top["rate"]
    p95_ok = True
    for r in rows:
        judged = r["rate"] <= below_knee * measured_knee
        r["judged"] = judged
        r["p95_error"] = relative_error(r["p_p95_med_ms"], r["m_p95_med_ms"])
        r["p95_error_pooled"] = relative_error(r["p_p95_ms"], r["m_p95_ms"])
        r["p95_ok"] = (not judged) or (
            r["p95_error"] is not None and abs(r["p95_error"]) <= p95_tolerance
        )
        p95_ok = p95_ok and r["p95_ok"]
    judged_rows = [r for r in rows if r["judged"]]
    judged_count = len(judged_rows)
    knee_ok = knee_reached and abs(knee_error) <= knee_tolerance
    return {
        "measured_knee_per_s": round(measured_knee, 1),
        "knee_reached": knee_reached,
        "predicted_knee_per_s": round(predicted_knee, 1),
        "knee_error": round(knee_error, 3),
        "knee_ok": knee_ok,
        "p95_ok": p95_ok and judged_count > 0,
        "judged_rates": judged_count,
        "passed": knee_ok and p95_ok and judged_count > 0,
        "perfect_model_p95_chance": {
            "measured_spread": perfect_model_chance(judged_rows, p95_tolerance, spread="measured"),
            "model_spread": perfect_model_chance(
                judged_rows, p95_tolerance, spread="model", replications=replications
            ),
        },
    }


#: Bootstrap resamples of the passes for the measured medians' spread.
BOOTSTRAP_RESAMPLES = 2000


def measured_median_deviations(judged_rows: list[dict[str, Any]]) -> Any:
    """How far each judged row's measured p95 (the median over the passes of each pass's
    p95, ``m_p95_passes``) might have fallen had other passes been drawn: a bootstrap of the
    passes, ``log(resampled median / median)`` per resample (rows) and rate (columns).

    The passes are drawn **jointly**: pass ``k`` of every rate ran in the same validation
    pass, minutes apart from the others, and a slow pass is slow at every rate (on the
    shared VM the passes' mean deviation over the rates varied 1.0-4.3 times as much as
    independent rates would give, runs 31-41). Resampling each rate alone would break that.
    The resampled medians are kept as they fall, not summarised by a standard deviation: a
    disturbed pass is far out, and a normal shape with its width overstates how often the
    median moves by 15 %. A fixed seed, so the same rows give the same answer. None with
    fewer than three passes, passes of unequal counts or a pass's p95 that is not positive."""
    import numpy as np

    counts = {len(row.get("m_p95_passes") or []) for row in judged_rows}
    if len(counts) != 1 or min(counts) < 3:
        return None
    passes = np.asarray([row["m_p95_passes"] for row in judged_rows], dtype=float)
    if np.any(passes <= 0):
        return None
    medians = np.median(passes, axis=1)
    count = passes.shape[1]
    drawn = np.random.default_rng(0).integers(0, count, (BOOTSTRAP_RESAMPLES, count))
    resampled = np.median(passes[:, drawn], axis=2)  # rates x resamples
    return np.log(resampled / medians[:, None]).T


def perfect_model_chance(
    judged_rows: list[dict[str, Any]],
    tolerance: float,
    *,
    spread: str,
    replications: int = 1,
) -> float | None:
    """How likely a *perfect* model (its expectation equal to the true p95 at every rate)
    would be to meet the p95 bound at all ``judged_rows``, given how much the judged
    statistic varies from run to run: P(predicted / measured within 1 ± ``tolerance`` at
    every rate). The prediction's own uncertainty is normal in logs, ``p_p95_se`` wide and
    independent between rates (each replication draws fresh arrivals per rate).

    ``spread="measured"``: the measured medians vary as a joint bootstrap of this run's
    passes says (:func:`measured_median_deviations`): what this run's machine gave, with
    its slow passes moving every rate together; the chance is the mean over the resamples
    of the product over the rates. ``"model"``: the measured statistic varies as it does
    over the model's replications (``p_p95_se`` x sqrt(``replications``), normal in logs,
    independent between rates): what a machine as steady as the model would give. None
    when a spread is unknown.

    It reads a verdict, it does not change one: a FAIL on a run where a perfect model passes
    half the time says little about the model (docs/capacity.md, "Reading a verdict")."""
    import numpy as np

    if not judged_rows:
        return None
    if any(row.get("p_p95_se") is None for row in judged_rows):
        return None
    predicted_se = np.asarray([float(row["p_p95_se"]) for row in judged_rows])
    upper, lower = math.log(1 + tolerance), math.log(1 - tolerance)
    if spread == "measured":
        deviations = measured_median_deviations(judged_rows)
        if deviations is None:
            return None
        # log(predicted / measured) = prediction's error - deviation; within the bound when
        # the prediction's error falls between lower + deviation and upper + deviation.
        inside = _normal_mass(lower + deviations, upper + deviations, predicted_se)
        return round(float(np.mean(np.prod(inside, axis=1))), 3)
    if spread == "model":
        if replications <= 1:
            return None
        sigma = np.hypot(predicted_se * math.sqrt(replications), predicted_se)
        return round(float(np.prod(_normal_mass(lower, upper, sigma))), 3)
    raise ValueError(f"spread: expected 'measured' or 'model', got {spread!r}")


def _normal_mass(lower: Any, upper: Any, sigma: Any) -> Any:
    """P(lower <= X <= upper) for X ~ N(0, sigma^2), elementwise (numbers or numpy arrays,
    ``sigma`` broadcast along the last axis); a zero sigma puts all of X at 0."""
    import numpy as np
    from scipy.special import ndtr

    safe = np.where(sigma > 0, sigma, 1.0)
    at_zero = np.logical_and(lower <= 0, upper >= 0)
    return np.where(sigma > 0, ndtr(upper / safe) - ndtr(lower / safe), at_zero)


def chance_sentence(result: dict[str, Any]) -> str:
    """A service's ``perfect_model_p95_chance`` as a sentence; empty when unknown."""
    chance = result.get("perfect_model_p95_chance") or {}
    if chance.get("measured_spread") is None:
        return ""
    steady = chance.get("model_spread")
    return (
        f"A perfect model would meet this p95 bound with chance {chance['measured_spread']:.2f} "
        "given this run's spread between passes"
        + (f" ({steady:.2f} on a machine as steady as the model)" if steady is not None else "")
        + "."
    )


def calibration_sentence(result: dict[str, Any]) -> str:
    """A service's ``calibration_band`` as a sentence; empty when unknown."""
    band = result.get("calibration_band")
    if not band:
        return ""

    def errors(key: str) -> str:
        return ", ".join(f"{row[key]:+.0%}" for row in result["rows"] if row.get(key) is not None)

    return (
        f"With the batch times {band['batch_level_se']:.1%} shorter or longer (their standard "
        f"error over the calibration's passes) the p95 errors would be "
        f"{errors('p95_error_cal_lo')} or {errors('p95_error_cal_hi')}."
    )


def calibration_band(
    service_cal: Any, pass_cals: list[Any], rows: list[dict[str, Any]], replay: Replay
) -> dict[str, Any] | None:
    """How much of the verdict the calibration's own sampling decides: the judged rows
    predicted again with the batch table one standard error shorter and longer
    (``fit.batch_level_se`` over the calibration's passes, ``pass_cals``), on the same
    arrivals (``replay``, as the rows were predicted); ``p95_error_cal_lo`` / ``_hi`` on
    each judged row.

    Near the knee a few per cent of batch time are a large share of the queue (intent's
    error at 0.7 of its knee: -18 / +24 points for -3 / +3 % in run 57), and on a noisy
    machine the passes' batch times spread by 12-16 %, so a pooled table is known to 2-4 %.
    The band is read beside the verdict and changes nothing. It does not enter the perfect
    model's chance: slow calibration passes come with slow validation passes (their levels
    and the passes' p95 correlated at 0 to 0.9 in runs 54-58), so part of the calibration's
    error is shared with the measurement and the two are not independent. None without
    three or more passes."""
    from simulator.capacity.fit import batch_level_se

    rpc = replay.rpc
    se = batch_level_se(service_cal.rpcs[rpc], [c.rpcs[rpc] for c in pass_cals])
    if se is None:
        return None
    passes = len(replay.measured_passes)
    for key, factor in (("p95_error_cal_lo", math.exp(-se)), ("p95_error_cal_hi", math.exp(se))):
        scaled = scaled_batch_times(service_cal, rpc, factor)
        for index, row in enumerate(rows):
            if row.get("judged"):
                _, each = replay.predict(index, row["rate"], [scaled] * passes)
                row[key] = relative_error(sum(each) / len(each), row["m_p95_med_ms"])
    return {"batch_level_se": round(se, 4)}


def scaled_batch_times(service_cal: Any, rpc: str, factor: float) -> Any:
    """``service_cal`` with ``rpc``'s batch table (and its line) ``factor`` times as long."""
    calibration = service_cal.rpcs[rpc]
    scaled = replace(
        calibration,
        mean_ms=calibration.mean_ms * factor,
        per_item_ms=calibration.per_item_ms * factor,
        batch_ms=tuple((n, t * factor) for n, t in calibration.batch_ms),
    )
    return replace(service_cal, rpcs={**service_cal.rpcs, rpc: scaled})


def relative_error(predicted: float, measured: float) -> float | None:
    """(predicted - measured) / measured, rounded; None when nothing was measured."""
    return round((predicted - measured) / measured, 3) if measured else None


def predicted_knee(
    service_cal: Any,
    rpc: str,
    *,
    duration_s: float,
    warmup_s: float,
    seed: int,
    max_in_flight: int,
) -> float:
    """The knee the model predicts over a probe ladder around its analytic capacity."""
    from simulator.capacity.fit import capacity_per_s, simulate_open

    capacity = capacity_per_s(service_cal, rpc)
    return max(
        simulate_open(
            service_cal,
            rpc,
            rate=capacity * f,
            duration_s=duration_s,
            warmup_s=warmup_s,
            seed=seed,
            max_in_flight=max_in_flight,
        ).throughput
        for f in (0.9, 1.0, 1.2)
    )


def rate_durations(rates: list[float], knee: float, duration_s: float) -> list[float]:
    """Measured seconds per rate (all passes), a share of ``duration_s`` by the rate's
    fraction of the predicted knee (``DURATION_SHARES``, ``PAST_KNEE_SHARE`` at and past
    it). The time goes where a pass's p95 spreads most: in run 34 recommendation's 4-second
    passes spread by 13 % (cv) at a tenth of its knee and by 47 % at 0.76 of it (the model
    alone, from the arrivals and service times: 11 % and 28 %), so at the top judged rates
    the median over the passes needs
    several times the calls for the same standard error. At and past the knee only the
    throughput counts (p95 is judged below 0.8 of the knee), and a count of completions
    settles far sooner than a p95."""

    def share(rate: float) -> float:
        return next((s for upto, s in DURATION_SHARES if rate < upto * knee), PAST_KNEE_SHARE)

    return [duration_s * share(rate) for rate in rates]


def arrival_seed(seed: int, pass_index: int, rate_index: int, replica: int = 0) -> int:
    """The arrival process of one rate in one pass: measured and predicted alike
    (``replica`` 0); the model's further replications (``replica`` 1, 2, ...) get fresh ones."""
    return seed * 1000 + pass_index * 100 + rate_index + replica * 1_000_000_007


def measure_rates(
    generator: Any,
    workload: Any,
    rates: list[float],
    pass_index: int,
    *,
    per_pass_s: list[float],
    warmup_s: float,
    max_in_flight: int,
    seed: int,
) -> list[Any]:
    """One pass over the rate ladder: open-loop Poisson arrivals at each rate, in order, for
    that rate's ``per_pass_s``."""
    from simulator.capacity.measure import OpenJob

    return [
        generator.run(
            [
                OpenJob(
                    workload,
                    rate,
                    per_pass_s[index],
                    warmup_s=warmup_s,
                    seed=arrival_seed(seed, pass_index, index),
                    max_in_flight=max_in_flight,
                )
            ]
        )[0]
        for index, rate in enumerate(rates)
    ]


@dataclass(frozen=True)
class Replay:
    """The model replaying one service's measured passes: each pass in its own window
    (``window_s``) and with its own arrivals (``arrival_seed``: the same for every
    calibration replayed, so two calibrations compare on common random numbers), fresh
    arrivals in each further replication."""

    rpc: str
    measured_passes: list[list[Any]]
    warmup_s: float
    max_in_flight: int
    seed: int
    replications: int = 1

    def predict(
        self, index: int, rate: float, calibrations: list[Any]
    ) -> tuple[dict[str, Any], list[float]]:
        """The model at ladder rate ``index`` (``rate``), with ``calibrations[k]`` in pass
        ``k``: the pooled summary over passes and replications, and each replication's
        median over passes of the pass's p95."""
        from simulator.capacity.fit import simulate_open
        from simulator.capacity.measure import OpenJob, merge_results

        runs = [
            [
                simulate_open(
                    calibrations[pass_index],
                    self.rpc,
                    rate=rate,
                    duration_s=passes[index].window_s,
                    warmup_s=self.warmup_s,
                    seed=arrival_seed(self.seed, pass_index, index, replica),
                    max_in_flight=self.max_in_flight,
                    timeout_s=OpenJob.timeout_s,
                )
                for pass_index, passes in enumerate(self.measured_passes)
            ]
            for replica in range(self.replications)
        ]
        pooled: dict[str, Any] = merge_results([r for rep in runs for r in rep]).summary()
        return pooled, [pass_median_p95(rep) for rep in runs]


def predict_rows(
    service_cal: Any,
    rates: list[float],
    replay: Replay,
    *,
    log: Any,
    paired: list[Any] | None = None,
) -> list[dict[str, Any]]:
    """Measured and predicted rows over the rate ladder (``replay.measured_passes``): the
    model gets each measured run's arrival times (same seed), cap and window (``window_s``);
    the passes are pooled on both sides.

    With ``replay.replications`` above 1 the model also runs the whole set of passes again with
    fresh arrivals that many times less one, all pooled: a p95 of a few thousand calls at 70 %
    of a knee varies by about 10 % from one set of arrivals to the next, in the model as in
    the measurement, and the prediction should carry only the measurement's share of that.

    The judged p95 (``m_p95_med_ms``, ``p_p95_med_ms``) is the median over the passes of each
    pass's p95; the model's is the mean over its replications of that median (the same
    statistic, so a single short window's skew is on both sides). ``p_p95_se`` is its
    relative standard error over the replications.

    With ``paired`` (one service calibration per pass, each fitted to its calibration pass
    alone) the rows also carry ``p_p95_paired_ms``: each validation pass predicted from the
    calibration pass just before it, the judged statistic over them. It follows the machine's
    drift pass by pass at the price of a noisier fit per pass; shown beside the judged
    prediction, not judged."""
    import numpy as np

    from simulator.capacity.measure import merge_results

    rpc, measured_passes = replay.rpc, replay.measured_passes
    passes = len(measured_passes)
    predict = replay.predict

    def relative_se(values: list[float]) -> float | None:
        mean = float(np.mean(values))
        if len(values) < 2 or mean <= 0:
            return None
        return round(float(np.std(values, ddof=1)) / math.sqrt(len(values)) / mean, 3)

    rows = []
    for index, rate in enumerate(rates):
        this_rate = [runs[index] for runs in measured_passes]
        measured = merge_results(this_rate).summary()
        predicted, replica_p95 = predict(index, rate, [service_cal] * passes)
        row: dict[str, Any] = {"rate": rate}
        per_pass = pass_p95s(this_rate)
        row["m_p95_med_ms"] = round(float(np.median(per_pass)), 3)
        row["p_p95_med_ms"] = round(float(np.mean(replica_p95)), 3)
        for prefix, summary in (("m", measured), ("p", predicted)):
            for key in ("throughput", "p50_ms", "p95_ms", "p99_ms", "drops", "errors"):
                value = summary[key]
                row[f"{prefix}_{key}"] = round(value, 3) if isinstance(value, float) else value
            # The batcher side by side (the service's own series; absent for a --target
            # whose metrics port is unknown): where the model's batches grow larger or
            # longer than the real ones, its queue is the one that is off.
            for key in ("batch_size", "batch_ms"):
                if key in summary:
                    row[f"{prefix}_{key}"] = summary[key]
        # The measurement's own uncertainty (batch means over the passes): where it is near
        # the p95 bound, a miss says as much about the machine as about the model.
        row["m_p95_passes"] = [round(v, 3) for v in per_pass]
        row["m_p95_se"] = relative_se(per_pass)
        row["p_p95_se"] = relative_se(replica_p95)
        if paired:
            paired_p95 = float(np.mean(predict(index, rate, paired)[1]))
            row["p_p95_paired_ms"] = round(paired_p95, 3)
            row["p95_error_paired"] = relative_error(paired_p95, row["m_p95_med_ms"])
        rows.append(row)
        log(
            f"{rpc} @ {rate:.1f}/s: measured {measured['throughput']:.1f}/s p95 "
            f"{row['m_p95_med_ms']:.2f} ms (pooled {measured['p95_ms']:.2f}) | predicted "
            f"{predicted['throughput']:.1f}/s p95 {row['p_p95_med_ms']:.2f} ms (pooled "
            f"{predicted['p95_ms']:.2f})"
        )
    return rows


COLUMNS = (
    "rate",
    "m_throughput",
    "p_throughput",
    "m_p50_ms",
    "p_p50_ms",
    "m_p95_med_ms",
    "p_p95_med_ms",
    "p95_error",
    "m_p95_se",
    "p_p95_se",
    "p95_error_paired",
    "p95_error_cal_lo",
    "p95_error_cal_hi",
    "m_p95_ms",
    "p_p95_ms",
    "p95_error_pooled",
    "m_p99_ms",
    "p_p99_ms",
    "m_batch_size",
    "p_batch_size",
    "m_batch_ms",
    "p_batch_ms",
    "m_drops",
    "m_errors",
    "judged",
)


def run(args: argparse.Namespace) -> int:
    """Calibrate (unless given a file), measure and predict the ladder, judge, report."""
    from simulator.capacity.measure import LoadGenerator

    checked = check_arguments(args)
    log = (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    args.out.mkdir(parents=True, exist_ok=True)
    # The generator process starts before anything in this process touches gRPC.
    with LoadGenerator() as generator:
        from simulator.capacity.harness import running_services

        with running_services(
            checked["services"],
            checked["targets"],
            workers=args.workers,
            log_dir=args.log_dir or args.out / "logs",
            config_path=getattr(args, "config", None),
            log=log,
            metrics=checked["metrics"],
        ) as running:
            calibration, measured, rates, paired = measure(args, checked, generator, running, log)
    return judge(args, checked, calibration, measured, rates, log, paired)


def measure(
    args: argparse.Namespace, checked: dict[str, Any], generator: Any, running: Any, log: Any
) -> tuple[Any, dict[str, list[list[Any]]], dict[str, list[float]], list[Any]]:
    """The calibration (given, or measured in this run), every pass of every service's
    rate ladder, and (when calibrating in the run) the fit of each calibration pass alone,
    for predicting each validation pass from the calibration pass just before it.

    When calibrating in the run, its passes alternate with the validation's: calibration
    pass 1, validation pass 1, calibration pass 2, and so on, so the calibration and the
    measurements it predicts are taken over the same minutes. The machine's speed drifts by
    10-40 % over a quarter of an hour (echo's back-to-back latency 0.71-1.14 ms between runs),
    and at 70 % of a knee a few per cent of service time is tens of per cent of p95: a
    calibration taken before the whole ladder predicted a different machine. The rates of
    ``--rates auto`` come from a fit of the first calibration pass (with its ladder's best
    throughput as a floor for the knee); the predictions from the fit of all of them."""
    from simulator.capacity.calibrate import Calibrator, build_calibration, provenance_for
    from simulator.capacity.harness import MEASURABLE
    from simulator.capacity.measure import ClosedJob
    from simulator.platform import calibration_to_json, load_calibration

    services = checked["services"]
    calibrator = None
    calibration = checked["calibration"]
    first_fit: dict[str, Any] = {}
    if calibration is None:
        calibrator = Calibrator(
            generator,
            running,
            services,
            checked["ladder"],
            duration_s=args.calibration_duration,
            warmup_s=args.warmup,
            workers=args.workers,
            passes=args.passes,
        )
        log(f"calibration pass 1/{args.passes}")
        calibrator.start()
        calibrator.measure_pass()
        first_fit = calibrator.fit(lambda _m: None)[0]
    basis = calibration or build_calibration(load_calibration("default"), first_fit, {})
    rates: dict[str, list[float]] = {}
    per_pass_s: dict[str, list[float]] = {}
    for name in services:
        rpc = MEASURABLE[name][0]
        service_cal = basis.services[name]
        if rpc not in service_cal.rpcs:
            raise SettingsError(f"--calibration: services.{name}.rpcs has no {rpc}")
        knee = predicted_knee(
            service_cal,
            rpc,
            duration_s=args.duration,
            warmup_s=args.warmup,
            seed=args.seed,
            max_in_flight=args.max_in_flight,
        )
        if calibrator is not None:
            # The first pass's fit can fall far short of the service (run 44: 270/s, where its
            # own ladder reached 475/s and the service 536/s), and a ladder that stops below
            # the knee cannot judge it: the ladder's best throughput is a floor for the knee.
            knee = max(knee, calibrator.best_throughput(name))
        rates[name] = checked["rates"] or [round(knee * f, 1) for f in AUTO_FRACTIONS]
        per_pass_s[name] = [
            d / args.passes for d in rate_durations(rates[name], knee, args.duration)
        ]
        generator.run([ClosedJob(running.workloads[name], 8, 1.0, 1.0)])  # warm-up
    measured: dict[str, list[list[Any]]] = {name: [] for name in services}
    for pass_index in range(args.passes):
        if calibrator is not None and pass_index > 0:
            log(f"calibration pass {pass_index + 1}/{args.passes}")
            calibrator.measure_pass()
        log(f"validation pass {pass_index + 1}/{args.passes}")
        for name in services:
            measured[name].append(
                measure_rates(
                    generator,
                    running.workloads[name],
                    rates[name],
                    pass_index,
                    per_pass_s=per_pass_s[name],
                    warmup_s=args.warmup,
                    max_in_flight=args.max_in_flight,
                    seed=args.seed,
                )
            )
    paired: list[Any] = []
    if calibrator is not None:
        entries, raw = calibrator.fit(log)
        base = load_calibration("default")
        calibration = build_calibration(base, entries, provenance_for(services, sys.argv[1:], raw))
        (args.out / "calibration.json").write_text(
            json.dumps(calibration_to_json(calibration), indent=2) + "\n", encoding="utf-8"
        )
        # The raw measurements behind it, as calibrate writes them: the open-loop runs and
        # every fit's inputs, so a fit can be redone offline.
        (args.out / "calibration.measurements.json").write_text(
            json.dumps(raw, indent=2) + "\n", encoding="utf-8"
        )
        if args.passes > 1:
            # Each pass's fit takes the pooled loop contention (one pass's open runs are too
            # few calls to fit it).
            contention = {
                name: entry.batching.loop_contention
                for name, entry in entries.items()
                if entry.batching is not None
            }
            paired = [
                build_calibration(
                    base,
                    calibrator.fit(lambda _m: None, only_pass=i, loop_contention=contention)[0],
                    {},
                )
                for i in range(args.passes)
            ]
            (args.out / "calibration-passes.json").write_text(
                json.dumps([calibration_to_json(c) for c in paired], indent=2) + "\n",
                encoding="utf-8",
            )
    return calibration, measured, rates, paired


def judge(
    args: argparse.Namespace,
    checked: dict[str, Any],
    calibration: Any,
    measured: dict[str, list[list[Any]]],
    rates: dict[str, list[float]],
    log: Any,
    paired: list[Any] | None = None,
) -> int:
    """Predict each measured run, judge the bounds, write validate.json and the report
    (``paired``: the per-pass calibrations of :func:`measure`, for the paired column)."""
    from simulator.capacity.fit import capacity_per_s
    from simulator.capacity.harness import MEASURABLE

    results: dict[str, Any] = {}
    for name in checked["services"]:
        rpc = MEASURABLE[name][0]
        service_cal = calibration.services[name]
        # The calibration's passes, each fitted alone (calibrated in the run); else None.
        pass_cals = [c.services[name] for c in paired] if paired else None
        replay = Replay(
            rpc,
            measured[name],
            args.warmup,
            args.max_in_flight,
            args.seed,
            args.model_replications,
        )
        rows = predict_rows(
            service_cal,
            rates[name],
            replay,
            log=log,
            paired=pass_cals,
        )
        verdict = evaluate(
            rows,
            p95_tolerance=args.p95_tolerance,
            knee_tolerance=args.knee_tolerance,
            below_knee=args.below_knee,
            replications=args.model_replications,
        )
        verdict["analytic_capacity_per_s"] = round(capacity_per_s(service_cal, rpc), 1)
        if pass_cals:
            verdict["calibration_band"] = calibration_band(service_cal, pass_cals, rows, replay)
        results[name] = {"rpc": rpc, "rows": rows, **verdict}
    from services.runtime.bench import run_metadata

    payload = {
        "meta": run_metadata({k: v for k, v in vars(args).items() if k != "handler"}),
        "bounds": {
            "p95_tolerance": args.p95_tolerance,
            "knee_tolerance": args.knee_tolerance,
            "below_knee": args.below_knee,
            "knee": "highest achieved throughput (completions in the window per second) over "
            "the rate ladder",
        },
        "calibration": {
            "source": args.calibration or str(args.out / "calibration.json"),
            "provenance": dict(calibration.provenance),
        },
        "services": results,
        "passed": all(r["passed"] for r in results.values()),
    }
    from simulator.capacity.report import write_report
    from simulator.report import write_json

    write_json(args.out / "validate.json", payload)
    write_report(args.out / "report.html", payload)
    if args.json:
        json.dump(payload, sys.stdout, indent=2, default=str)
        print()
    else:
        print(render_text(payload))
        print(f"wrote {args.out / 'validate.json'} and {args.out / 'report.html'}")
    return 0 if payload["passed"] else 1


def top_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of the ladder's highest offered rate."""
    return max(rows, key=lambda r: r["rate"])


def knee_note(result: dict[str, Any]) -> str:
    """Why the knee bound failed without a knee: the ladder's top rate was served in full
    (empty when the ladder reached the knee)."""
    if result["knee_reached"]:
        return ""
    top = top_row(result["rows"])
    return (
        f" (not reached: the top rate {top['rate']}/s was served at {top['m_throughput']}/s; "
        "give --rates up past the knee)"
    )


def render_text(payload: dict[str, Any]) -> str:
    """The side-by-side table per service (m_ measured, p_ predicted) and the verdicts."""
    from services.runtime.bench import render_table

    out = []
    for name, result in payload["services"].items():
        out.append(f"\n{name}.{result['rpc']}  (m_ measured, p_ predicted; judged: p95 bound)")
        out.append(render_table(result["rows"], COLUMNS))
        out.append(
            f"knee: measured {result['measured_knee_per_s']}/s, predicted "
            f"{result['predicted_knee_per_s']}/s ({result['knee_error']:+.1%}) "
            f"{'ok' if result['knee_ok'] else 'OFF'}{knee_note(result)}; p95 within ±"
            f"{payload['bounds']['p95_tolerance']:.0%} at {result['judged_rates']} judged rates: "
            f"{'ok' if result['p95_ok'] else 'OFF'}"
        )
        for sentence in (chance_sentence(result), calibration_sentence(result)):
            if sentence:
                out.append(f"  {sentence}")
    out.append(f"\n{'PASS' if payload['passed'] else 'FAIL'}")
    return "\n".join(out)
