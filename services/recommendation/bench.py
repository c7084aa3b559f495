"""``shoptwin bench recommendation``: Recommend over gRPC on a synthetic catalogue of any size,
beside the bare echo RPC measured in the same run.

A dense items x items matrix does not fit at 100k items, so the synthetic model is the low-rank
variant (``x_u P Q^T``, rank 64) that training switches to above ``max_dense_items``. The
service runs in a child process exactly as ``shoptwin serve recommendation`` does.

``--factors svd`` (the default) makes the factors the way training does at this size: a
truncated SVD (PureSVD, ``P = Q = V``) of the synthetic users' own recency-weighted histories,
so item factor norms follow item popularity as in a trained model. ``--factors random`` draws
i.i.d. Gaussian factors: every item has about the same norm, the worst case for the
norm-ordered early stop of :func:`services.recommendation.model.lowrank_top_k` (it then scores
the whole catalogue, like the exact baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.recommendation.features import DAY, Popularity
from services.recommendation.model import (
    BlendWeights,
    HistoryTable,
    ItemItem,
    ModelMetadata,
    RecommenderModel,
)
from services.runtime.bench import LatencyStats, closed_loop, open_loop, settle_heap

FACTORS = ("svd", "random")


def synthetic_model(
    num_items: int,
    num_users: int,
    *,
    rank: int = 64,
    history: int = 20,
    seed: int = 0,
    factors: str = "svd",
) -> RecommenderModel:
    """A low-rank model over Zipf-distributed synthetic histories (for benchmarks only).

    ``factors``: "svd" for PureSVD factors of those histories (as training builds them),
    "random" for i.i.d. Gaussian factors.
    """
    if factors not in FACTORS:
        raise ValueError(f"factors must be one of {FACTORS}")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    now = time.time()
    weights = 1.0 / np.arange(1, num_items + 1) ** 0.8
    weights /= weights.sum()
    lengths = rng.integers(1, 2 * history, size=num_users)
    # Distinct items per user (np.unique may shorten a history).
    histories = [np.unique(rng.choice(num_items, size=n, p=weights)) for n in lengths]
    items = np.concatenate(histories).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
    total = len(items)
    last_times = now - rng.uniform(0, 300 * DAY, size=total)
    table = HistoryTable(
        indptr,
        items,
        rng.integers(1, 5, size=total).astype(np.float32),
        last_times,
        np.exp(-(now - last_times) / (90 * DAY)).astype(np.float32),
        np.ones(total, dtype=bool),
    )
    if factors == "random":
        left = torch.randn(num_items, rank, generator=generator) / rank**0.5
    else:
        user_of = np.repeat(np.arange(num_users), np.diff(indptr))
        matrix = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([user_of, items])),
            torch.from_numpy(table.input_weights),
            (num_users, num_items),
            check_invariants=False,
        )
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        _, _, v = torch.svd_lowrank(matrix, q=min(rank, num_items - 1))
        torch.random.set_rng_state(state)
        left = v.float().contiguous()
    popularity = Popularity(num_items, now)
    popularity.sums = np.outer([0.5, 1.0], weights * 10_000.0)
    metadata = ModelMetadata(
        version=f"synthetic-{factors}-{num_items}x{num_users}-r{rank}",
        kind=f"synthetic (lowrank, {factors} factors)",
        trained_at=now,
        reference_time=now,
        num_users=num_users,
        num_items=num_items,
        hyperparameters={
            "tau_input_days": 90.0,
            "rank": rank,
            "seed": seed,
            "factors": factors,
        },
        metrics={},
        data="synthetic",
    )
    return RecommenderModel(
        metadata,
        [f"item-{i}" for i in range(num_items)],
        [f"user-{u}" for u in range(num_users)],
        {},
        table,
        popularity,
        ItemItem(left=left, right=left.clone()),
        BlendWeights(),
    )


def ranking_check(
    model: RecommenderModel, *, k: int, users: int = 256, shortcut_min_items: int = 20_000
) -> dict[str, float]:
    """The served ranking path against the full ranking, in process, on ``users`` evenly
    spaced users of ``model``: recall@k of the served top k against the exact top k of
    ``score_batch`` (1.0 expected: the shortcuts are exact), the mean number of items scored
    per user, and CPU milliseconds per batch of 1 and of 64 for both paths."""
    from services.recommendation.engine import Catalog, Query, ServingState

    catalog = Catalog()
    state = ServingState(model, catalog, shortcut_min_items)
    num_users = len(model.user_ids)
    chosen = np.unique(np.linspace(0, num_users - 1, min(users, num_users)).astype(np.int64))
    prepared = [state.prepare(Query(model.user_ids[u], k), catalog) for u in chosen]
    prior, _, recent = state.priors()
    hits = 0
    total = 0
    with torch.no_grad():
        for start in range(0, len(prepared), 64):
            group = prepared[start : start + 64]
            served = state.rank(group)
            exact = torch.topk(state._full_scores(group, prior, recent), k, dim=1).indices
            for result, row in zip(served, exact.tolist(), strict=True):
                ids = {model.item_ids[i] for i in row}
                hits += len(ids & set(result.item_ids))
                total += len(ids)
    stats: dict[str, float] = {}
    if state.norm_order_pays:
        from services.recommendation.model import HistoryBatch, lowrank_top_k

        group = prepared[:64]
        lowrank_top_k(
            model.item_item,
            model.weights,
            state._prior_bounds(prior),
            prior,
            HistoryBatch.concat([p.history for p in group if p.history is not None]),
            state.now(),
            k,
            [p.banned for p in group if p.history is not None],
            stats=stats,
        )

    def cpu_ms(call: Any) -> float:
        call()
        best = math.inf
        for _ in range(5):
            started = time.process_time()
            call()
            best = min(best, time.process_time() - started)
        return round(best * 1000.0, 2)

    from services.recommendation.model import top_k_rows

    out = {
        "recall_at_k_vs_exact": round(hits / total, 4) if total else 1.0,
        "users": float(len(prepared)),
        "norm_order": float(state.norm_order_pays),
        "items_scored_per_user": round(stats.get("items_scored", len(model.item_ids)), 1),
    }
    for size in (1, 64):
        group = prepared[:size]
        out[f"served_cpu_ms_batch{size}"] = cpu_ms(lambda g=group: state.rank(g))
        out[f"full_cpu_ms_batch{size}"] = cpu_ms(
            lambda g=group: top_k_rows(state._full_scores(g, prior, recent), k)
        )
    return out


async def _measure_recommend(
    target: str,
    users: int,
    k: int,
    concurrencies: list[int],
    duration_s: float,
) -> tuple[list[LatencyStats], LatencyStats | None]:
    from services.runtime.client import ChannelOptions, create_aio_channel
    from shoptwin.v1 import recommendation_pb2, recommendation_pb2_grpc

    channel = create_aio_channel(target, ChannelOptions())
    try:
        stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)
        requests = [
            recommendation_pb2.RecommendRequest(user_id=f"user-{(i * 7919) % users}", k=k)
            for i in range(min(users, 4096))
        ]

        async def call(index: int) -> None:
            await stub.Recommend(requests[index % len(requests)])

        closed = []
        for concurrency in concurrencies:
            closed.append(
                await closed_loop("recommend", call, concurrency=concurrency, duration_s=duration_s)
            )
            await asyncio.sleep(0.2)
        best = max(s.qps for s in closed)
        half = None
        if best > 0:
            half = await open_loop("recommend@half", call, rate=best / 2, duration_s=duration_s)
        return closed, half
    finally:
        await channel.close(None)


def run_benchmark(args: argparse.Namespace, concurrencies: list[int]) -> int:
    """Build the synthetic model, serve it and echo in child processes, measure, report."""
    from services.echo.bench import measure_echo, measure_echo_open_loop, start_echo_process
    from services.runtime.bench import render_table, run_metadata, write_json
    from services.runtime.process import ServiceProcess, free_port

    with tempfile.TemporaryDirectory(prefix="shoptwin-bench-rec-") as tmp:
        workdir = args.workdir or Path(tmp)
        started = time.monotonic()
        model = synthetic_model(args.items, args.users, factors=args.factors)
        model_dir = workdir / "models" / model.metadata.version
        if not (model_dir / "metadata.json").is_file():
            model.save(model_dir)
        build_s = time.monotonic() - started
        with torch.no_grad():
            torch.set_num_threads(1)  # as the service ranks
            check = ranking_check(model, k=args.k)
        del model
        settle_heap()
        echo = start_echo_process()
        service = ServiceProcess(
            "recommendation",
            free_port(),
            extra_args=[
                "--metrics-port",
                "0",
                "--log-level",
                "warning",
                "--data-dir",
                str(workdir),
                "--model-dir",
                str(model_dir),
            ],
        )
        service.start()
        echo_half: LatencyStats | None = None
        try:
            service.wait_serving(120)
            echo_stats = asyncio.run(
                measure_echo(echo.target, concurrencies, duration_s=args.duration)
            )
            rec_stats, half = asyncio.run(
                _measure_recommend(service.target, args.users, args.k, concurrencies, args.duration)
            )
            # Echo at the same arrival rate: what gRPC, the load generator and this machine
            # alone cost in latency there, the baseline for the open loop's p99.
            if half is not None:
                rate = max(s.qps for s in rec_stats) / 2
                echo_half = asyncio.run(
                    measure_echo_open_loop(echo.target, rate, duration_s=args.duration)
                )
        finally:
            service.stop()
            echo.stop()
    rows = []
    for e, r in zip(echo_stats, rec_stats, strict=True):
        rows.append(
            {
                "concurrency": r.concurrency,
                "recommend_qps": r.qps,
                "recommend_p50_ms": r.p50_ms,
                "recommend_p99_ms": r.p99_ms,
                "echo_qps": e.qps,
                "echo_p50_ms": e.p50_ms,
                "echo_p99_ms": e.p99_ms,
                "qps_ratio": round(r.qps / e.qps, 3) if e.qps else 0.0,
                "errors": r.errors,
            }
        )
    best_ratio = (
        round(max(r.qps for r in rec_stats) / max(e.qps for e in echo_stats), 3)
        if echo_stats
        else 0.0
    )
    payload: dict[str, Any] = {
        "meta": run_metadata(vars(args) | {"handler": None}),
        "model": {
            "items": args.items,
            "users": args.users,
            "kind": f"lowrank r64, {args.factors} factors",
            "build_s": round(build_s, 1),
        },
        "ranking_check": check,
        "levels": rows,
        "max_qps_ratio": best_ratio,
        "half_max_open_loop": half.as_dict() if half else None,
        "half_max_echo_open_loop": echo_half.as_dict() if echo_half else None,
        "echo": [s.as_dict() for s in echo_stats],
        "recommend": [s.as_dict() for s in rec_stats],
    }
    if args.json_path == Path("-"):
        json.dump(payload, sys.stdout, indent=2)
        print()
        return 0
    print(
        render_table(
            rows,
            [
                "concurrency",
                "recommend_qps",
                "recommend_p50_ms",
                "recommend_p99_ms",
                "echo_qps",
                "echo_p50_ms",
                "echo_p99_ms",
                "qps_ratio",
                "errors",
            ],
        )
    )
    print(
        f"ranking (in process, one torch thread): recall@{args.k} of the served path vs exact "
        f"{check['recall_at_k_vs_exact']} over {check['users']:.0f} users; "
        f"{check['items_scored_per_user']:.0f} of {args.items} items scored per user; "
        f"CPU ms per batch of 1 / 64: served {check['served_cpu_ms_batch1']} / "
        f"{check['served_cpu_ms_batch64']}, full {check['full_cpu_ms_batch1']} / "
        f"{check['full_cpu_ms_batch64']}"
    )
    print(f"max Recommend QPS / max echo QPS: {best_ratio}")
    if half is not None:
        print(
            f"open loop at half the max Recommend QPS ({half.qps:.0f}/s achieved): "
            f"p50 {half.p50_ms:.2f} ms, p99 {half.p99_ms:.2f} ms, errors {half.errors}"
        )
    if echo_half is not None:
        print(
            f"echo open loop at the same rate ({echo_half.qps:.0f}/s achieved): "
            f"p50 {echo_half.p50_ms:.2f} ms, p99 {echo_half.p99_ms:.2f} ms"
        )
    if args.json_path:
        write_json(args.json_path, payload)
    return 0
