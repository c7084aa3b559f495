"""Distributions of the 5G network model against the figures it was calibrated from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.network import (
    DEFAULT_PROFILES,
    Cause,
    DeviceLink,
    NetworkConfig,
    NetworkModel,
    RadioType,
)


@pytest.mark.parametrize(
    ("radio", "near_median_ms"),
    [(RadioType.LTE, 18.0), (RadioType.NR_NSA, 14.5), (RadioType.MMWAVE, 6.0)],
)
def test_near_server_median_rtt_matches_measurements(
    radio: RadioType, near_median_ms: float
) -> None:
    link = DeviceLink(DEFAULT_PROFILES[radio], np.random.default_rng(1), moving=False)
    samples = np.asarray([link.rtt_s(0.0) for _ in range(20_000)]) * 1000
    assert abs(np.median(samples) - near_median_ms) < 0.05 * near_median_ms


def test_rtt_grows_with_distance_and_jitter_is_lognormal() -> None:
    profile = DEFAULT_PROFILES[RadioType.LTE]
    link = DeviceLink(profile, np.random.default_rng(2), moving=False)
    near = np.asarray([link.rtt_s(0.0) for _ in range(20_000)]) * 1000
    far = np.asarray([link.rtt_s(1000.0) for _ in range(20_000)]) * 1000
    assert abs((np.median(far) - np.median(near)) - profile.ms_per_1000km) < 1.0
    jitter = np.log(near - profile.base_rtt_ms)
    assert abs(jitter.std() - profile.jitter_sigma) < 0.03


def test_handovers_are_a_renewal_process_with_the_measured_rate() -> None:
    profile = DEFAULT_PROFILES[RadioType.NR_NSA]
    link = DeviceLink(profile, np.random.default_rng(3), moving=True)
    hours = 2.0
    for t in np.arange(0.0, hours * 3600, 0.5):
        link.transfer(float(t))
    expected = hours * 3600 / profile.handover_interval_s
    assert abs(link.handovers - expected) < 0.08 * expected


def test_stationary_devices_rarely_hand_over() -> None:
    profile = DEFAULT_PROFILES[RadioType.NR_NSA]
    moving = DeviceLink(profile, np.random.default_rng(4), moving=True)
    still = DeviceLink(profile, np.random.default_rng(4), moving=False)
    for t in np.arange(0.0, 3600.0, 1.0):
        moving.transfer(float(t))
        still.transfer(float(t))
    assert still.handovers < moving.handovers / 10


def test_a_still_links_scalar_handovers_follow_the_block_distributions() -> None:
    # A still link draws its few handovers one number at a time, a moving link in numpy
    # blocks: the same gamma intervals and lognormal lengths either way.
    profile = DEFAULT_PROFILES[RadioType.NR_NSA]
    still = DeviceLink(profile, np.random.default_rng(5), moving=False)
    block = DeviceLink(profile, np.random.default_rng(6), moving=False)
    block._ho_block = 4096  # past SCALAR_BLOCK: the numpy form
    samples = []
    for link in (still, block):
        starts: list[float] = []
        ends: list[float] = []
        while len(starts) < 20_000:
            link._refill_handovers()
            starts += link._ho_starts
            ends += link._ho_ends
        lengths = np.asarray(ends) - np.asarray(starts)
        intervals = np.asarray(starts[1:]) - np.asarray(ends[:-1])
        samples.append((intervals, lengths))
    (i_scalar, l_scalar), (i_block, l_block) = samples
    mean = profile.handover_interval_s / NetworkConfig().stationary_handover_factor
    for intervals in (i_scalar, i_block):
        assert abs(intervals.mean() - mean) < 0.03 * mean
        # Gamma of shape k: variance mean^2 / k.
        assert abs(intervals.var() / mean**2 - 1 / profile.handover_shape) < 0.05
    assert abs(np.log(l_scalar).mean() - np.log(l_block).mean()) < 0.02
    assert abs(np.log(l_scalar).std() - np.log(l_block).std()) < 0.02


def test_outages_delay_or_drop_exchanges_and_name_the_cause() -> None:
    config = NetworkConfig()
    model = NetworkModel(config, seed=1)
    link = model.link("van-1", "5g-mmwave", moving=True)
    causes = {Cause.HANDOVER: 0, Cause.RADIO_LINK_FAILURE: 0, Cause.LOSS: 0}
    dropped = 0
    for t in np.arange(0.0, 4 * 3600.0, 0.25):
        transfer = link.transfer(float(t), deadline_s=0.5)
        if transfer.cause in causes:
            causes[transfer.cause] += 1
        dropped += transfer.dropped
        assert transfer.delay_s <= 0.5 + 1e-9
    assert all(count > 0 for count in causes.values()), causes
    assert dropped > 0


def test_same_device_id_same_link_behaviour() -> None:
    a = NetworkModel(seed=7).link("u1", "lte", moving=True)
    b = NetworkModel(seed=7).link("u1", "lte", moving=True)
    ta = [a.transfer(t * 0.3).delay_s for t in range(500)]
    tb = [b.transfer(t * 0.3).delay_s for t in range(500)]
    assert ta == tb


def test_disabled_network_is_transparent_and_unknown_radio_is_named() -> None:
    link = NetworkModel(NetworkConfig(enabled=False)).link("x", "lte", moving=True)
    assert link.transfer(0.0).delay_s == 0.0
    with pytest.raises(ValueError, match="radio: unknown radio 'ham'"):
        NetworkModel().link("x", "ham", moving=False)
    assert math.isinf(NetworkModel().link("w", "wifi", moving=True)._next_ho)
