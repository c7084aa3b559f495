"""The 5G network model: per device a radio with RTT = base + distance term + lognormal jitter,
handover outages as a renewal process, radio-link failures, and packet loss.

Defaults come from public measurement studies (see docs/simulator.md, "Network model"). The
model is plain and seeded: model mode adds its delays to simulated calls, the live driver delays,
drops and reorders real calls with it, and Locust users can use it too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from simulator.behaviour.rng import BufferedGenerator


class RadioType(StrEnum):
    NR_SA = "5g-sa"
    NR_NSA = "5g-nsa"
    MMWAVE = "5g-mmwave"
    LTE = "lte"
    WIFI = "wifi"


@dataclass(frozen=True)
class RadioProfile:
    """How one radio type behaves. Times in milliseconds unless named otherwise."""

    #: RTT to a server next door, without jitter.
    base_rtt_ms: float
    #: Extra RTT per 1000 km to the server.
    ms_per_1000km: float
    #: Jitter ~ lognormal: ln(jitter_ms) ~ N(jitter_mu, jitter_sigma).
    jitter_mu: float
    jitter_sigma: float
    #: Mean seconds between handovers while moving (0: no handovers). Inter-handover times are
    #: gamma distributed with shape ``handover_shape``.
    handover_interval_s: float
    #: Handover interruption ~ lognormal of ln(ms).
    handover_mu: float
    handover_sigma: float
    #: Radio-link failures per hour while moving, each an outage of 1..3 s.
    rlf_per_hour: float
    #: Probability that one message is lost and must be retransmitted (TCP RTO).
    loss: float
    handover_shape: float = 2.0
    rlf_outage_s: tuple[float, float] = (1.0, 3.0)
    #: Minimum retransmission timeout (Linux TCP), seconds.
    rto_min_s: float = 0.2

    def jitter_median_ms(self) -> float:
        return math.exp(self.jitter_mu)


#: Defaults from shared/data/network/5g_measurements.md (Ookla/SIGCOMM'21 RTTs, SIGCOMM'22
#: handovers). Base RTT is the measured near-server median minus the jitter median, so a
#: near-server call has the measured median RTT. Wi-Fi has no source in the file: an
#: assumption (home broadband, no handovers) stated in the docs.
DEFAULT_PROFILES: Mapping[RadioType, RadioProfile] = {
    RadioType.NR_SA: RadioProfile(
        base_rtt_ms=38.0,
        ms_per_1000km=19.4,
        jitter_mu=math.log(5.0),
        jitter_sigma=0.77,
        handover_interval_s=47.0,
        handover_mu=4.19,
        handover_sigma=0.05,
        rlf_per_hour=0.3,
        loss=0.001,
    ),
    RadioType.NR_NSA: RadioProfile(
        base_rtt_ms=10.5,
        ms_per_1000km=23.9,
        jitter_mu=math.log(4.0),
        jitter_sigma=0.80,
        handover_interval_s=6.0,
        handover_mu=4.02,
        handover_sigma=0.46,
        rlf_per_hour=0.6,
        loss=0.002,
    ),
    RadioType.MMWAVE: RadioProfile(
        base_rtt_ms=4.0,
        ms_per_1000km=21.6,
        jitter_mu=math.log(2.0),
        jitter_sigma=0.93,
        handover_interval_s=6.0,
        handover_mu=4.02,
        handover_sigma=0.46,
        rlf_per_hour=1.5,
        loss=0.004,
    ),
    RadioType.LTE: RadioProfile(
        base_rtt_ms=13.0,
        ms_per_1000km=27.5,
        jitter_mu=math.log(5.0),
        jitter_sigma=0.92,
        handover_interval_s=18.0,
        handover_mu=3.52,
        handover_sigma=0.27,
        rlf_per_hour=0.4,
        loss=0.002,
    ),
    RadioType.WIFI: RadioProfile(
        base_rtt_ms=3.0,
        ms_per_1000km=20.0,
        jitter_mu=math.log(2.0),
        jitter_sigma=0.9,
        handover_interval_s=0.0,
        handover_mu=0.0,
        handover_sigma=0.0,
        rlf_per_hour=0.0,
        loss=0.001,
    ),
}


class Cause(StrEnum):
    """Why the network did something to a message."""

    NONE = ""
    HANDOVER = "handover"
    RADIO_LINK_FAILURE = "radio_link_failure"
    LOSS = "loss"


@dataclass(frozen=True)
class Transfer:
    """What happens to one request/response exchange: total extra delay (the RTT plus any
    outage wait and retransmission), or a drop when it would exceed the caller's deadline."""

    delay_s: float
    dropped: bool
    cause: Cause

    @property
    def uplink_s(self) -> float:
        """The part of the delay before the request reaches the server (half the RTT, plus any
        wait for an outage to end)."""
        return self.delay_s / 2


@dataclass(frozen=True)
class NetworkConfig:
    """Network settings of a scenario."""

    profiles: Mapping[RadioType, RadioProfile] = field(
        default_factory=lambda: dict(DEFAULT_PROFILES)
    )
    #: Distance from devices to the servers (the data centre), km.
    server_distance_km: float = 50.0
    #: Handovers of devices that do not move (a shopper on the sofa) are this much rarer.
    stationary_handover_factor: float = 0.02
    #: Turn the whole model off (zero delay, no loss): a baseline.
    enabled: bool = True


@dataclass
class Outage:
    start_s: float
    end_s: float
    cause: Cause


class DeviceLink:
    """The radio link of one device over time. Handovers and radio-link failures are renewal
    processes sampled lazily as time moves forward, so queries must come in time order."""

    def __init__(
        self,
        profile: RadioProfile,
        rng: np.random.Generator,
        *,
        moving: bool,
        now_s: float = 0.0,
        config: NetworkConfig | None = None,
    ) -> None:
        config = config or NetworkConfig()
        self.profile = profile
        self.rng = rng
        self.config = config
        factor = 1.0 if moving else config.stationary_handover_factor
        self._ho_mean = profile.handover_interval_s / factor if profile.handover_interval_s else 0.0
        self._rlf_rate = profile.rlf_per_hour * factor / 3600.0
        self._next_ho = now_s + self._interval() if self._ho_mean else math.inf
        self._next_rlf = now_s + rng.exponential(1 / self._rlf_rate) if self._rlf_rate else math.inf
        self.outage: Outage | None = None
        self.handovers = 0
        self.radio_link_failures = 0

    def _interval(self) -> float:
        shape = self.profile.handover_shape
        return float(self.rng.gamma(shape, self._ho_mean / shape))

    def _advance(self, now_s: float) -> None:
        """Roll the renewal processes forward to ``now_s``; keep the outage covering now."""
        p = self.profile
        while min(self._next_ho, self._next_rlf) <= now_s:
            if self._next_ho <= self._next_rlf:
                start = self._next_ho
                length = float(self.rng.lognormal(p.handover_mu, p.handover_sigma)) / 1000.0
                cause = Cause.HANDOVER
                self.handovers += 1
                self._next_ho = start + length + self._interval()
            else:
                start = self._next_rlf
                length = float(self.rng.uniform(*p.rlf_outage_s))
                cause = Cause.RADIO_LINK_FAILURE
                self.radio_link_failures += 1
                self._next_rlf = start + length + float(self.rng.exponential(1 / self._rlf_rate))
            if self.outage is None or start + length > self.outage.end_s:
                self.outage = Outage(start, start + length, cause)
        if self.outage is not None and self.outage.end_s <= now_s:
            self.outage = None

    def rtt_s(self, distance_km: float | None = None) -> float:
        """One RTT sample, seconds: base + distance term + lognormal jitter."""
        p = self.profile
        km = self.config.server_distance_km if distance_km is None else distance_km
        jitter = float(self.rng.lognormal(p.jitter_mu, p.jitter_sigma))
        return (p.base_rtt_ms + p.ms_per_1000km * km / 1000.0 + jitter) / 1000.0

    def transfer(self, now_s: float, deadline_s: float = math.inf) -> Transfer:
        """What the network does to an exchange starting at ``now_s``: waits out an outage in
        progress, adds the RTT, adds a retransmission timeout when a message is lost. When the
        total exceeds ``deadline_s`` the exchange is dropped, with the cause."""
        if not self.config.enabled:
            return Transfer(0.0, False, Cause.NONE)
        self._advance(now_s)
        delay = 0.0
        cause = Cause.NONE
        if self.outage is not None and self.outage.start_s <= now_s:
            delay += self.outage.end_s - now_s
            cause = self.outage.cause
        rtt = self.rtt_s()
        delay += rtt
        if self.rng.random() < self.profile.loss:
            delay += max(self.profile.rto_min_s, 2 * rtt)
            cause = cause or Cause.LOSS
        if delay > deadline_s:
            return Transfer(deadline_s, True, cause or Cause.LOSS)
        return Transfer(delay, False, cause)


class NetworkModel:
    """Creates device links from a config; one per device, each with its own random stream."""

    def __init__(self, config: NetworkConfig | None = None, seed: int = 0) -> None:
        self.config = config or NetworkConfig()
        self._seed = seed

    def profile(self, radio: str) -> RadioProfile:
        """The profile of a radio name (``ValueError`` naming the known ones)."""
        try:
            return self.config.profiles[RadioType(radio)]
        except ValueError:
            known = ", ".join(r.value for r in RadioType)
            raise ValueError(f"radio: unknown radio {radio!r}; known: {known}") from None

    def link(self, device_id: str, radio: str, *, moving: bool, now_s: float = 0.0) -> DeviceLink:
        """The link of ``device_id``; the same seed and id give the same link behaviour."""
        key = [self._seed, *device_id.encode("utf-8")]
        rng = BufferedGenerator(np.random.SeedSequence(key))
        return DeviceLink(self.profile(radio), rng, moving=moving, now_s=now_s, config=self.config)

    def with_profile(self, radio: RadioType, **changes: float) -> NetworkModel:
        """A copy with one radio's profile changed (for what-if runs)."""
        profiles = dict(self.config.profiles)
        profiles[radio] = replace(profiles[radio], **changes)  # type: ignore[arg-type]
        return NetworkModel(replace(self.config, profiles=profiles), self._seed)
