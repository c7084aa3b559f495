"""Queueing-theory validation of the platform model: M/M/1, M/M/c (Erlang C) and M/D/1
(Pollaczek-Khinchine) run through the same ``Station`` class model mode uses, over independent
replications, with confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import simpy
from scipy import stats

from simulator.platform import RpcCalibration, ServiceCalibration, Station
from simulator.scenario import ValidationCase, ValidationConfig


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue (Erlang C), ``offered_load`` = λ/μ."""
    c, a = servers, offered_load
    rho = a / c
    if rho >= 1:
        return 1.0
    # Sum in a numerically stable way: terms a^k / k!.
    term, total = 1.0, 1.0
    for k in range(1, c):
        term *= a / k
        total += term
    top = term * a / c / (1 - rho)
    return top / (total + top)


def theoretical_time_in_system(case: ValidationCase) -> float:
    """Mean time in system W (seconds) of a case by queueing theory."""
    lam, mu, c = case.arrival_rate, case.service_rate, case.servers
    if case.kind == "mm1":
        return 1.0 / (mu - lam)
    if case.kind == "mmc":
        return erlang_c(c, lam / mu) / (c * mu - lam) + 1.0 / mu
    if case.kind == "md1":
        rho = lam / mu
        return rho / (2 * mu * (1 - rho)) + 1.0 / mu
    raise ValueError(f"kind: unknown case kind {case.kind!r}")


def simulate_case(case: ValidationCase, customers: int, warmup: int, seed: int) -> float:
    """Mean time in system of one replication (after ``warmup`` customers)."""
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    distribution = "deterministic" if case.kind == "md1" else "exponential"
    station = Station(
        env,
        case.name,
        ServiceCalibration(
            workers=case.servers,
            rpcs={"call": RpcCalibration(distribution, 1000.0 / case.service_rate, 0.0)},
        ),
        rng,
        window_s=math.inf,
    )
    gaps = rng.exponential(1.0 / case.arrival_rate, customers).tolist()
    times = np.zeros(customers)

    def customer(index: int) -> Generator[simpy.Event, Any, None]:
        times[index] = yield from station.serve("call")

    def source() -> Generator[simpy.Event, Any, None]:
        for index, gap in enumerate(gaps):
            yield env.timeout(gap)
            env.process(customer(index))

    env.process(source())
    env.run()
    return float(times[warmup:].mean())


@dataclass(frozen=True)
class CaseResult:
    name: str
    kind: str
    rho: float
    theory_s: float
    simulated_s: float
    ci_low_s: float
    ci_high_s: float
    relative_error: float
    replications: int
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate(
    config: ValidationConfig,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> list[CaseResult]:
    """Every case over ``config.replications`` replications: mean, 95 % confidence interval
    (Student t), relative error against theory, and pass/fail at ``config.tolerance``."""
    results = []
    for case_index, case in enumerate(config.cases):
        means = []
        for rep in range(config.replications):
            rep_seed = int(np.random.SeedSequence([seed, case_index, rep]).generate_state(1)[0])
            means.append(simulate_case(case, config.customers, config.warmup, rep_seed))
            if progress is not None:
                progress(1)
        values = np.asarray(means)
        mean = float(values.mean())
        n = len(values)
        half = (
            float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        )
        theory = theoretical_time_in_system(case)
        error = (mean - theory) / theory
        results.append(
            CaseResult(
                name=case.name,
                kind=case.kind,
                rho=case.arrival_rate / (case.servers * case.service_rate),
                theory_s=theory,
                simulated_s=mean,
                ci_low_s=mean - half,
                ci_high_s=mean + half,
                relative_error=error,
                replications=n,
                passed=abs(error) <= config.tolerance,
            )
        )
    return results
