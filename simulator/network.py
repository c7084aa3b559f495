"""The 5G network model: per device a radio with RTT = base + distance term + lognormal jitter,
handover outages as a renewal process, radio-link failures, and packet loss.

Defaults come from public measurement studies (see docs/simulator.md, "Network model"). The
model is plain and seeded: model mode adds its delays to simulated calls, the live driver delays,
drops and reorders real calls with it, and Locust users can use it too.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Mapping, MutableSequence, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple

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


class Transfer(NamedTuple):
    """What happens to one request/response exchange: total extra delay (the RTT plus any
    outage wait and retransmission), or a drop when it would exceed the caller's deadline.
    (A named tuple: one is made per call, and a tuple is made several times faster than a
    frozen dataclass.)"""

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
    processes sampled lazily as time moves forward, so queries must come in time order.

    Handovers of a moving device come every few seconds while its calls come every minute or
    so: they are drawn in blocks (one numpy call for ``HANDOVER_BLOCK`` intervals and outage
    lengths) and a query finds the last one started with a bisection, instead of stepping
    through each one in Python. The process is the same: start(i+1) = end(i) + gamma interval.
    """

    HANDOVER_BLOCK = 1024
    #: Handover blocks up to this size (a still link's) are drawn one number at a time.
    SCALAR_BLOCK = 16
    #: RTT jitter draws per numpy call.
    JITTER_BLOCK = 256

    def __init__(
        self,
        profile: RadioProfile,
        rng: np.random.Generator,
        *,
        moving: bool,
        now_s: float = 0.0,
        config: NetworkConfig | None = None,
        first_handover_s: float | None = None,
        first_rlf_s: float | None = None,
    ) -> None:
        config = config or NetworkConfig()
        self.profile = profile
        self.rng = rng
        self.config = config
        factor = 1.0 if moving else config.stationary_handover_factor
        self._ho_mean = profile.handover_interval_s / factor if profile.handover_interval_s else 0.0
        self._rlf_rate = profile.rlf_per_hour * factor / 3600.0
        self._next_rlf = (
            first_rlf_s
            if first_rlf_s is not None
            else now_s + rng.exponential(1 / self._rlf_rate)
            if self._rlf_rate
            else math.inf
        )
        # Pre-drawn handover outages: starts and ends, the first not yet reached at
        # ``_ho_pos``, and the end of the last one drawn (the next block starts from there).
        # A still device sees few handovers per session: small blocks.
        self._ho_starts: MutableSequence[float] = []
        self._ho_ends: MutableSequence[float] = []
        self._ho_pos = 0
        self._ho_origin = now_s
        self._ho_block = self.HANDOVER_BLOCK if moving else 4
        #: The last handover outage started so far (``-inf`` before the first).
        self._ho_last_start = -math.inf
        self._ho_last_end = -math.inf
        if first_handover_s is not None:
            # The caller drew the first interval (model mode draws them for many shoppers
            # at once); the rest follow from here.
            self._first_handover(first_handover_s)
        elif self._ho_mean:
            self._refill_handovers()
        #: The last radio-link failure started so far (``-inf`` before the first).
        self._rlf_last_start = -math.inf
        self._rlf_last_end = -math.inf
        self.outage: Outage | None = None
        # Read for every exchange: plain attributes instead of the config's and profile's.
        self._enabled = config.enabled
        self._loss = profile.loss
        self.handovers = 0
        self.radio_link_failures = 0
        self._jitter: list[float] = []
        self._rtt_fixed_ms = profile.base_rtt_ms + profile.ms_per_1000km * (
            config.server_distance_km / 1000.0
        )

    @property
    def _next_ho(self) -> float:
        """Start of the next handover (``inf`` for radios without handovers)."""
        pos = self._ho_pos
        return self._ho_starts[pos] if pos < len(self._ho_starts) else math.inf

    @property
    def next_outage_s(self) -> float:
        """When the next handover or radio-link failure starts: until then, and while no
        outage is in progress, ``transfer`` adds no outage wait."""
        return min(self._next_ho, self._next_rlf)

    def _first_handover(self, start: float) -> None:
        p = self.profile
        length = float(self.rng.lognormal(p.handover_mu, p.handover_sigma)) / 1000.0
        self._ho_starts = [start]
        self._ho_ends = [start + length]
        self._ho_pos = 0
        self._ho_origin = start + length

    def _refill_handovers(self) -> None:
        """Draw the next block of handovers, starting after the last one drawn."""
        p = self.profile
        n = self._ho_block
        shape = p.handover_shape
        if n <= self.SCALAR_BLOCK and shape == int(shape) and 1 <= shape <= 4:
            self._refill_handovers_scalar(n, int(shape))
            return
        if shape == int(shape) and 1 <= shape <= 4:
            # Gamma of integer shape is a sum of exponentials: the same distribution, several
            # times cheaper to draw (a van draws ~600 handovers per hour of its day).
            # Rows added one by one: bit for bit what ``.sum(axis=0)`` gives (it adds the rows
            # in order too), without numpy's reduction machinery (~10 % of a van's refill).
            draws = self.rng.standard_exponential((int(shape), n))
            unit = draws[0]
            for row in draws[1:]:
                unit = unit + row
            intervals = unit * (self._ho_mean / shape)
        else:
            intervals = self.rng.gamma(shape, self._ho_mean / shape, n)
        lengths = self.rng.lognormal(p.handover_mu, p.handover_sigma, n) / 1000.0
        steps = intervals + np.concatenate(([0.0], lengths[:-1]))
        starts = self._ho_origin + np.cumsum(steps)
        ends = starts + lengths
        # Arrays of doubles, not lists of floats: a van's link is asked once a minute, by
        # when its block has left the cache, and a bisection over 1,024 float objects
        # reached through a list touches twice the memory, scattered (microbenchmark of 400
        # vans' exchanges: 4.7 -> 3.7 µs each); the doubles are the same.
        self._ho_starts = array("d", starts.tobytes())
        self._ho_ends = array("d", ends.tobytes())
        self._ho_pos = 0
        self._ho_origin = float(ends[-1])

    def _refill_handovers_scalar(self, n: int, shape: int) -> None:
        """``_refill_handovers`` for a still link's few handovers, one number at a time: the
        same distributions (a gamma interval of integer shape as a sum of exponentials, a
        lognormal length, each start an interval after the last end), but from the
        generator's scalar draws (buffered by ``BufferedGenerator``) instead of five numpy calls
        for four handovers (~35 µs a refill, ~1.8 % of a black-friday day in model mode). The
        draws come from the ``network`` stream in another order than the block's: the same seed
        gives the same run, not the same numbers as the block form."""
        p = self.profile
        rng = self.rng
        scale = self._ho_mean / shape
        mu, sigma = p.handover_mu, p.handover_sigma
        starts: list[float] = []
        ends: list[float] = []
        end = self._ho_origin
        for _ in range(n):
            interval = 0.0
            for _ in range(shape):
                interval += rng.exponential(scale)
            start = end + interval
            end = start + rng.lognormal(mu, sigma) / 1000.0
            starts.append(start)
            ends.append(end)
        self._ho_starts = starts
        self._ho_ends = ends
        self._ho_pos = 0
        self._ho_origin = end

    def _advance(self, now_s: float) -> None:
        """Roll the renewal processes forward to ``now_s``; keep the outage covering now (the
        one with the latest end among those started by now)."""
        starts = self._ho_starts
        pos = self._ho_pos
        while pos < len(starts) and starts[pos] <= now_s:
            passed = bisect.bisect_right(starts, now_s, pos)
            self.handovers += passed - pos
            self._ho_last_start = starts[passed - 1]
            self._ho_last_end = self._ho_ends[passed - 1]
            pos = passed
            if passed == len(starts) and self._ho_mean:
                self._refill_handovers()
                starts = self._ho_starts
                pos = 0
        self._ho_pos = pos
        while self._next_rlf <= now_s:
            start = self._next_rlf
            length = float(self.rng.uniform(*self.profile.rlf_outage_s))
            self.radio_link_failures += 1
            self._rlf_last_start = start
            self._rlf_last_end = start + length
            self._next_rlf = start + length + float(self.rng.exponential(1 / self._rlf_rate))
        # The outage covering now, if any (``Outage`` objects only then: a van's link is out
        # ~1 % of the time, and this runs for every one of its calls).
        outage = None
        if self._ho_last_end > now_s:
            outage = Outage(self._ho_last_start, self._ho_last_end, Cause.HANDOVER)
        end = self._rlf_last_end
        if end > now_s and (outage is None or end > outage.end_s):
            outage = Outage(self._rlf_last_start, end, Cause.RADIO_LINK_FAILURE)
        self.outage = outage

    def outage_wait(self, now_s: float) -> tuple[float, Cause]:
        """Seconds until an outage in progress at ``now_s`` ends (0 when none), and its cause."""
        self._advance(now_s)
        if self.outage is not None and self.outage.start_s <= now_s:
            return self.outage.end_s - now_s, self.outage.cause
        return 0.0, Cause.NONE

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
        return Transfer(*self.exchange(now_s, deadline_s))

    def exchange(self, now_s: float, deadline_s: float = math.inf) -> tuple[float, bool, Cause]:
        """``transfer`` as a plain tuple (delay, dropped, cause): the same draws and numbers,
        without making a ``Transfer`` (~0.3 µs, and model mode's vans make one call every few
        seconds of the day)."""
        if not self._enabled:
            return 0.0, False, _NO_CAUSE
        pos = self._ho_pos
        if (
            self.outage is not None
            or now_s >= self._next_rlf
            or (pos < len(self._ho_starts) and now_s >= self._ho_starts[pos])
        ):
            self._advance(now_s)
        delay = 0.0
        cause = _NO_CAUSE
        outage = self.outage
        if outage is not None and outage.start_s <= now_s:
            delay += outage.end_s - now_s
            cause = outage.cause
        jitter = self._jitter
        if not jitter:
            p = self.profile
            jitter = self._jitter = self.rng.lognormal(
                p.jitter_mu, p.jitter_sigma, self.JITTER_BLOCK
            ).tolist()
        rtt = (self._rtt_fixed_ms + jitter.pop()) / 1000.0
        delay += rtt
        if self.rng.random() < self._loss:
            delay += max(self.profile.rto_min_s, 2 * rtt)
            cause = cause or Cause.LOSS
        if delay > deadline_s:
            return deadline_s, True, cause or Cause.LOSS
        return delay, False, cause


#: ``Cause.NONE`` as a module constant: reading an Enum member through its class costs ~0.1 µs,
#: and ``DeviceLink.exchange`` reads it for every call.
_NO_CAUSE = Cause.NONE


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

    def exchange_delays(
        self, rng: np.random.Generator, profiles: Sequence[RadioProfile], which: np.ndarray
    ) -> np.ndarray:
        """Delays of many exchanges outside outages, seconds, at once: what ``DeviceLink.
        transfer`` adds when no outage is in progress (RTT with lognormal jitter, plus the
        retransmission timeout when a message is lost). ``which`` picks each one's profile."""
        n = int(which.size)
        if not self.config.enabled:
            return np.zeros(n)
        km = self.config.server_distance_km
        base = np.asarray([p.base_rtt_ms + p.ms_per_1000km * km / 1000.0 for p in profiles])
        mu = np.asarray([p.jitter_mu for p in profiles])[which]
        sigma = np.asarray([p.jitter_sigma for p in profiles])[which]
        rtt = (base[which] + np.exp(mu + sigma * rng.standard_normal(n))) / 1000.0
        lost = rng.random(n) < np.asarray([p.loss for p in profiles])[which]
        rto = np.asarray([p.rto_min_s for p in profiles])[which]
        return rtt + np.where(lost, np.maximum(rto, 2.0 * rtt), 0.0)

    def first_outages(
        self,
        rng: np.random.Generator,
        profiles: Sequence[RadioProfile],
        which: np.ndarray,
        now_s: np.ndarray,
        *,
        moving: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """When the first handover and the first radio-link failure after ``now_s`` start, for
        many links at once (``inf`` where the radio has none); hand them to ``DeviceLink``'s
        ``first_handover_s`` and ``first_rlf_s``."""
        n = int(which.size)
        if not self.config.enabled:
            return np.full(n, math.inf), np.full(n, math.inf)
        factor = 1.0 if moving else self.config.stationary_handover_factor
        mean = np.asarray([p.handover_interval_s / factor for p in profiles])[which]
        shape = np.asarray([p.handover_shape for p in profiles])[which]
        gaps = rng.gamma(shape, np.where(mean > 0, mean / shape, 1.0))
        handover = np.where(mean > 0, now_s + gaps, math.inf)
        rate = np.asarray([p.rlf_per_hour * factor / 3600.0 for p in profiles])[which]
        waits = rng.exponential(1.0, n) / np.where(rate > 0, rate, 1.0)
        rlf = np.where(rate > 0, now_s + waits, math.inf)
        return handover, rlf

    def with_profile(self, radio: RadioType, **changes: float) -> NetworkModel:
        """A copy with one radio's profile changed (for what-if runs)."""
        profiles = dict(self.config.profiles)
        profiles[radio] = replace(profiles[radio], **changes)  # type: ignore[arg-type]
        return NetworkModel(replace(self.config, profiles=profiles), self._seed)
