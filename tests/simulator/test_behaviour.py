"""Statistics of the behaviour model: arrivals follow the daily curve, sessions follow tastes,
vans drive, deliver and report."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from simulator.behaviour import (
    DAY_S,
    ActionKind,
    ArrivalProcess,
    DailyCurve,
    OrderConfig,
    Point,
    World,
    WorldConfig,
    delivery_window,
    hourly_counts,
    make_order,
    plan_wave,
)
from simulator.behaviour.batch import SessionBlock, SessionSampler, ShopperBlock, draw_shoppers


def test_arrivals_follow_the_daily_curve() -> None:
    process = ArrivalProcess(shoppers_per_day=200_000)
    times = process.times(np.random.default_rng(1), 0.0, DAY_S)
    counts = hourly_counts(times)
    expected = np.asarray([process.expected_count(h * 3600.0, (h + 1) * 3600.0) for h in range(24)])
    assert abs(counts.sum() - 200_000) < 4 * np.sqrt(200_000)
    chi2, p_value = stats.chisquare(counts, expected * counts.sum() / expected.sum())
    assert p_value > 0.001, (chi2, counts, expected)
    # The evening peak is several times the night trough.
    assert counts[20] > 5 * counts[3]


def test_next_arrival_matches_batch_sampling_rate() -> None:
    process = ArrivalProcess(shoppers_per_day=50_000)
    rng = np.random.default_rng(2)
    t, n = 18 * 3600.0, 0
    while True:
        t = process.next_arrival(rng, t)
        if t >= 19 * 3600.0:
            break
        n += 1
    expected = process.expected_count(18 * 3600.0, 19 * 3600.0)
    assert abs(n - expected) < 4 * np.sqrt(expected)


def test_curve_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match="hourly_weights"):
        DailyCurve((1.0,) * 23)
    flat = DailyCurve((1.0,) * 24)
    assert np.allclose(flat.multiplier(np.linspace(0, DAY_S, 50)), 1.0)


def run_sessions(world: World, n: int, seed: int) -> tuple[dict[ActionKind, int], list[float]]:
    rng = np.random.default_rng(seed)
    counts: dict[ActionKind, int] = dict.fromkeys(ActionKind, 0)
    affinities: list[float] = []
    for i in range(n):
        shopper = world.new_shopper(rng, i)
        state = world.sessions.start(shopper, f"s{i}", 0.0)
        while not state.done:
            action = world.sessions.next_action(rng, state)
            counts[action.kind] += 1
            if action.kind is ActionKind.RECOMMEND:
                state.observe_recommendations(world.recommender.recommend(rng, shopper, action.k))
            if action.kind is ActionKind.BROWSE:
                assert action.item is not None
                affinities.append(shopper.affinity(action.item.category_index))  # type: ignore[union-attr]
    return counts, affinities


def test_sessions_end_and_browse_follows_tastes() -> None:
    world = World.create(WorldConfig(seed=5))
    counts, affinities = run_sessions(world, 2000, seed=1)
    sessions_ended = counts[ActionKind.LEAVE] + counts[ActionKind.CHECKOUT]
    assert sessions_ended == 2000
    assert counts[ActionKind.CHECKOUT] > 0
    assert counts[ActionKind.SUPPORT] > 0
    assert counts[ActionKind.CLICK] > 0
    # Shoppers browse what they like: mean affinity well above 1 (uniform browsing gives 1).
    assert np.mean(affinities) > 2.0


def test_better_recommender_gets_more_clicks() -> None:
    rates = []
    for quality in (0.0, 1.0):
        world = World.create(WorldConfig(seed=5, recommender_quality=quality))
        counts, _ = run_sessions(world, 1500, seed=3)
        rates.append(counts[ActionKind.CLICK] / counts[ActionKind.RECOMMEND])
    assert rates[1] > 1.5 * rates[0]


def test_support_messages_carry_their_intent() -> None:
    world = World.create(WorldConfig(seed=5))
    assert len(world.utterances.intents) == 27
    rng = np.random.default_rng(0)
    utterance = world.utterances.sample(rng, "track_order")
    assert utterance.intent == "track_order" and utterance.text


def test_same_seed_same_sessions() -> None:
    a = run_sessions(World.create(WorldConfig(seed=9)), 300, seed=4)
    b = run_sessions(World.create(WorldConfig(seed=9)), 300, seed=4)
    assert a == b


def test_delivery_window_rolls_over_to_the_next_day() -> None:
    config = OrderConfig()
    assert delivery_window(config, 0.0) == (8 * 3600.0, 10 * 3600.0)
    assert delivery_window(config, 9 * 3600.0) == (12 * 3600.0, 14 * 3600.0)
    start, _ = delivery_window(config, 21 * 3600.0)
    assert start == DAY_S + 8 * 3600.0


def test_vans_deliver_report_and_return() -> None:
    world = World.create(WorldConfig(seed=2))
    rng = np.random.default_rng(1)
    item = world.catalogue.items[0]
    orders = [
        make_order(rng, OrderConfig(), f"o{i}", "u", Point(1000.0 * i, -500.0 * i), [(item, 1)], 0)
        for i in range(1, 6)
    ]
    vans = world.vehicles.fleet(rng, start_s=7 * 3600.0)
    plans = plan_wave(orders, vans, capacity=60)
    assert len(plans) == 1 and len(plans[0][1]) == 5
    van, route = plans[0]
    world.vehicles.assign(van, route)
    readings, results = [], []
    for _ in range(2000):
        r, s = world.vehicles.advance(rng, van, 10.0)
        readings += r
        results += s
    assert sorted(r.order_id for r in results) == [o.order_id for o in orders]
    assert not van.busy and van.position == Point(0.0, 0.0)
    sequences = [r.sequence for r in readings]
    assert sequences == list(range(1, len(readings) + 1))
    gaps = np.diff([r.time_s for r in readings])
    assert np.allclose(gaps, world.config.fleet.telemetry_interval_s)
    assert any(r.door_open for r in readings)
    if van.spec.cold_chain:
        # The box warms while the door is open and never passes ambient.
        temps = [r.temperature_c for r in readings if r.temperature_c is not None]
        assert max(temps) > world.config.fleet.cold_chain.setpoint_c + 1
        assert max(temps) < world.config.fleet.cold_chain.ambient_c + 1


def test_buffered_generator_draws_numpys_distributions() -> None:
    from simulator.behaviour import BufferedGenerator

    rng = BufferedGenerator(7)
    n = 40_000
    lognormal = np.asarray([rng.lognormal(1.0, 0.5) for _ in range(n)])
    assert abs(np.log(lognormal).mean() - 1.0) < 0.01
    assert abs(np.log(lognormal).std() - 0.5) < 0.01
    exponential = np.asarray([rng.exponential(2.0) for _ in range(n)])
    assert abs(exponential.mean() - 2.0) < 0.05
    integers = [rng.integers(3, 7) for _ in range(n)]
    assert set(integers) == {3, 4, 5, 6}
    assert isinstance(rng.random(), float) and rng.random(3).shape == (3,)
    same = BufferedGenerator(7)
    assert [same.lognormal(1.0, 0.5) for _ in range(5)] == list(lognormal[:5])


def block_sessions(world: World, n: int, seed: int) -> tuple[SessionBlock, ShopperBlock]:
    rng = np.random.default_rng(seed)
    shoppers = draw_shoppers(world.shoppers, rng, 0, n)
    return SessionSampler(world.sessions, world.recommender).draw(rng, shoppers), shoppers


def test_block_sessions_have_the_one_at_a_time_models_statistics() -> None:
    # Model mode draws whole sessions per block with numpy; the live driver and Locust draw
    # one action at a time. Same chain, same probabilities: the action mix per session, the
    # click-through and the checkout rate must agree within sampling error.
    world = World.create(WorldConfig(seed=5))
    n = 6000
    scalar, _ = run_sessions(world, n, seed=11)
    block, _ = block_sessions(world, n, seed=12)
    vector = block.kind_counts()
    assert vector[ActionKind.LEAVE] + vector[ActionKind.CHECKOUT] == n
    for kind in ActionKind:
        a, b = scalar[kind], vector.get(kind, 0)
        # Per-session counts are overdispersed (long sessions): a generous 5-sigma bound.
        assert abs(a - b) < 5 * np.sqrt(3 * (a + b)) + 5, (kind, a, b)
    ctr_scalar = scalar[ActionKind.CLICK] / (10 * scalar[ActionKind.RECOMMEND])
    ctr_block = block.clicked.sum() / block.shown.sum()
    assert block.shown.sum() == 10 * vector[ActionKind.RECOMMEND]
    assert block.clicked.sum() == vector[ActionKind.CLICK]
    assert abs(ctr_scalar - ctr_block) < 0.25 * ctr_scalar


def test_block_sessions_follow_the_session_config() -> None:
    world = World.create(WorldConfig(seed=6))
    cfg = world.sessions.config
    block, shoppers = block_sessions(world, 8000, seed=2)
    kinds = np.asarray([k.value for k in ActionKind])[block.kind]
    firsts = kinds[block.start[:-1]]
    # The first step is a free choice without leaving: browse/recommend/support by weight.
    assert not np.isin(firsts, ["leave", "checkout", "click", "add_to_cart"]).any()
    share = np.mean(firsts == "browse")
    expected = cfg.browse_weight / (cfg.browse_weight + cfg.recommend_weight + cfg.support_weight)
    assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / firsts.size)
    # Think times: lognormal with the configured mean.
    assert abs(block.think.mean() - cfg.think_mean_s) < 0.05 * cfg.think_mean_s
    # Leaving with a cart checks out with the configured probability.
    ends = kinds[block.start[1:] - 1]
    with_cart = block.cart_lines > 0
    buy_rate = np.mean(ends[with_cart] == "checkout")
    p = cfg.checkout_probability
    assert abs(buy_rate - p) < 4 * np.sqrt(p * (1 - p) / with_cart.sum())
    assert not (ends[~with_cart] == "checkout").any()
    # Support messages are capped; browsing follows tastes (mean affinity well above 1).
    support = np.add.reduceat((kinds == "support").astype(int), block.start[:-1])
    assert support.max() <= cfg.max_support_messages
    session = np.repeat(np.arange(shoppers.n), np.diff(block.start))
    browsed = kinds == "browse"
    categories = np.asarray([i.category_index for i in world.catalogue.items])
    affinity = shoppers.affinities[session[browsed], categories[block.item[browsed]]]
    assert affinity.mean() > 2.0
    # Shoppers: the radio mix and the returning share of the config.
    mix = dict(world.shoppers.config.radio_mix)
    names = world.shoppers._radios
    for r, name in enumerate(names):
        observed = np.mean(shoppers.radio == r)
        assert abs(observed - mix[name]) < 4 * np.sqrt(mix[name] / shoppers.n) + 1e-3
    returning = np.mean(shoppers.user >= 0)
    assert abs(returning - world.shoppers.config.returning_share) < 0.03


def test_block_orders_are_the_carts_of_checkouts() -> None:
    world = World.create(WorldConfig(seed=7))
    block, shoppers = block_sessions(world, 3000, seed=3)
    arrivals = np.linspace(0.0, 20_000.0, shoppers.n)
    orders = SessionSampler(world.sessions, world.recommender).orders(shoppers, block, arrivals)
    assert orders
    kinds = list(ActionKind)
    for j, order in orders.items():
        lo, hi = block.start[j], block.start[j + 1]
        assert kinds[block.kind[hi - 1]] is ActionKind.CHECKOUT
        adds = [i for i in range(lo, hi) if kinds[block.kind[i]] is ActionKind.ADD_TO_CART]
        assert len(order.item_ids) == len(adds) == block.cart_lines[j]
        assert order.demand == block.quantity[adds].sum()
        assert order.placed_at_s == pytest.approx(arrivals[j] + block.think[lo:hi].sum())
        assert order.window_start_s >= order.placed_at_s + world.config.orders.lead_time_s
