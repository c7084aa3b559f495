"""The ranking process: the same answers as ranking in the server, through feedback, catalogue
updates and reloads, and fail-over to the server when the child dies."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.recommendation.bench import synthetic_model
from services.recommendation.config import RecommendationOptions
from services.recommendation.engine import (
    PRIOR_REFRESH_S,
    CatalogEntry,
    FeedbackInput,
    ItemFilter,
    Query,
    RecommendationEngine,
    ThreadRanker,
)
from services.recommendation.model import RecommenderModel
from services.recommendation.ranker import ProcessRanker
from services.recommendation.store import FeedbackStore
from services.runtime.metrics import RpcMetrics
from services.runtime.testing import running_service
from shoptwin.v1 import recommendation_pb2 as pb
from shoptwin.v1 import recommendation_pb2_grpc as pb_grpc


@asynccontextmanager
async def engine(
    root: Path, model_dir: Path, data: Path, *, in_process: bool
) -> AsyncIterator[RecommendationEngine]:
    store = FeedbackStore(data / ("thread.db" if not in_process else "process.db"))
    ranker = ProcessRanker() if in_process else ThreadRanker()
    served = RecommendationEngine(root, store, model_dir=model_dir, ranker=ranker)
    await served.start()
    try:
        yield served
    finally:
        await served.stop()
        store.close()


async def answers(served: RecommendationEngine, queries: list[Query]) -> list[tuple]:
    results = await asyncio.gather(*(served.recommend(q) for q in queries))
    return [
        (
            r.items.scores,
            r.items.item_ids,
            r.items.categories,
            r.personalized,
            r.unknown_item_ids,
            r.model_version,
        )
        for r in results
    ]


def uncategorised(model: RecommenderModel) -> list[Query]:
    """The queries without a category filter (valid before any catalogue update)."""
    return [q for q in queries_for(model)[:-1] if not q.filter.categories]


def queries_for(model: RecommenderModel) -> list[Query]:
    users = model.user_ids[:: max(1, len(model.user_ids) // 12)]
    out = [Query(u, 10) for u in users]
    out.append(Query(users[0], 15, ItemFilter(exclude_purchased=True)))
    out.append(Query(users[1], 10, ItemFilter(exclude_item_ids=(model.item_ids[0], "ghost"))))
    out.append(Query(users[2], 10, ItemFilter(categories=("blue",), in_stock_only=True)))
    out.append(Query("nobody", 10, ItemFilter(in_stock_only=True)))
    out.append(Query("newcomer", 10))
    return out


async def drive(served: RecommendationEngine, model: RecommenderModel) -> list[list[tuple]]:
    """Answers before and after catalogue updates and feedback."""
    queries = queries_for(model)
    # Before the catalogue has categories and before the newcomer's feedback:
    rounds = [await answers(served, uncategorised(model))]
    blue = model.item_ids[: len(model.item_ids) // 3]
    served.update_catalog(
        [(i, CatalogEntry("blue", 100, i != blue[0], "")) for i in blue]
        + [(model.item_ids[-1], CatalogEntry("red", 5, False, ""))]
    )
    events = [
        FeedbackInput(f"e{n}", "newcomer", model.item_ids[-1 - n % 3], 4, 2, None) for n in range(6)
    ]
    events.append(FeedbackInput("e-click", model.user_ids[0], model.item_ids[5], 2, 1, None))
    assert await served.record(events) == [True] * len(events)
    # Past the popularity refresh, so both engines rank with the new popularity.
    await asyncio.sleep(PRIOR_REFRESH_S + 0.05)
    rounds.append(await answers(served, queries))
    return rounds


@pytest.mark.parametrize("kind", ["trained", "lowrank"])
async def test_process_ranks_exactly_as_the_server(
    tmp_path: Path, model_dir: Path, model: RecommenderModel, kind: str
) -> None:
    if kind == "lowrank":
        # Large enough for the norm-order shortcut (the ranking path of big catalogues).
        model = synthetic_model(20_000, 300, rank=16, seed=3)
        model_dir = tmp_path / "models" / model.metadata.version
        model.save(model_dir)
    async with (
        engine(model_dir.parent, model_dir, tmp_path, in_process=False) as here,
        engine(model_dir.parent, model_dir, tmp_path, in_process=True) as there,
    ):
        assert isinstance(there.ranker, ProcessRanker) and there.ranker.alive
        expected, got = await drive(here, model), await drive(there, model)
        assert there.ranker.batches_ranked > 0  # answered by the child, not the fail-over
        assert there.ranker.alive
    # Scores to float rounding: popularity decays with time, and the two engines read the
    # clock a few milliseconds apart.
    assert [[a[1:] for a in r] for r in got] == [[a[1:] for a in r] for r in expected]
    for got_round, expected_round in zip(got, expected, strict=True):
        for got_scores, expected_scores in zip(got_round, expected_round, strict=True):
            assert got_scores[0] == pytest.approx(expected_scores[0], rel=1e-5)
    # Feedback reached the child: the newcomer is personalised now, the clicker's scores moved.
    assert got[1][-1][3] is True
    assert got[1][0][0] != pytest.approx(got[0][0][0], rel=1e-3)


async def test_reload_moves_the_child_to_the_new_model(
    tmp_path: Path, model_dir: Path, model: RecommenderModel
) -> None:
    root = tmp_path / "models"
    shutil.copytree(model_dir, root / model_dir.name)
    newer = root / "zz-newer"
    shutil.copytree(model_dir, newer)
    meta = (newer / "metadata.json").read_text().replace(model_dir.name, "zz-newer")
    (newer / "metadata.json").write_text(meta)
    async with engine(root, root / model_dir.name, tmp_path, in_process=True) as served:
        assert isinstance(served.ranker, ProcessRanker)
        queries = uncategorised(model)
        before = await answers(served, queries)
        summary = await served.reload(newer)
        assert summary.version == "zz-newer"
        after = await answers(served, queries)
        assert {a[-1] for a in after} == {"zz-newer"}
        assert [a[1:-1] for a in after] == [b[1:-1] for b in before]
        with pytest.raises(Exception, match="not a model directory"):
            await served.reload(tmp_path / "nothing")
        assert [a[1:] for a in await answers(served, queries)] == [a[1:] for a in after]
        assert served.ranker.alive


async def test_a_dead_child_fails_over_to_the_server(
    tmp_path: Path, model_dir: Path, model: RecommenderModel
) -> None:
    async with engine(model_dir.parent, model_dir, tmp_path, in_process=True) as served:
        ranker = served.ranker
        assert isinstance(ranker, ProcessRanker) and ranker.pid is not None
        queries = uncategorised(model)
        before = await answers(served, queries)
        os.kill(ranker.pid, signal.SIGKILL)
        for _ in range(100):  # the socket's EOF reaches the loop
            if not ranker.alive:
                break
            await asyncio.sleep(0.02)
        assert not ranker.alive
        assert [a[1:] for a in await answers(served, queries)] == [b[1:] for b in before]


async def test_a_child_that_cannot_start_leaves_ranking_in_the_server(
    tmp_path: Path, model_dir: Path, model: RecommenderModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-such-python"))
    async with engine(model_dir.parent, model_dir, tmp_path, in_process=True) as served:
        assert isinstance(served.ranker, ProcessRanker) and not served.ranker.alive
        answered = await answers(served, uncategorised(model))
        assert all(a[1] for a in answered) and served.ranker.batches_ranked == 0


async def test_a_model_the_child_is_slow_to_load_is_ranked_in_the_server(
    tmp_path: Path, model_dir: Path, model: RecommenderModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.recommendation.ranker.LOAD_TIMEOUT_S", 0.0)
    async with engine(model_dir.parent, model_dir, tmp_path, in_process=True) as served:
        assert isinstance(served.ranker, ProcessRanker) and served.ranker.alive
        answered = await answers(served, uncategorised(model))
        assert all(a[1] for a in answered) and served.ranker.batches_ranked == 0


async def test_metrics_show_where_batches_are_ranked(
    tmp_path: Path, model_dir: Path, model: RecommenderModel
) -> None:

    registry = CollectorRegistry()

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    options = RecommendationOptions(model_dir=model_dir)
    async with running_service(
        "recommendation", options, data_dir=tmp_path, metrics=RpcMetrics.create(registry)
    ) as svc:
        stub = pb_grpc.RecommendationServiceStub(svc.channel)
        await stub.Recommend(pb.RecommendRequest(user_id=model.user_ids[0], k=5))
        assert sample("shoptwin_recommendation_ranking_process_up") == 1.0
        assert sample("shoptwin_recommendation_ranked_batches_total", where="process") >= 1
        # The batch series: one batch of one request, with the time it took to rank.
        assert sample("shoptwin_batch_size_count", service="recommendation") == 1.0
        assert sample("shoptwin_batch_size_sum", service="recommendation") == 1.0
        assert sample("shoptwin_batch_duration_seconds_sum", service="recommendation") > 0.0
        ranker = svc.server.app.engine.ranker  # type: ignore[attr-defined]
        assert isinstance(ranker, ProcessRanker) and ranker.pid is not None
        os.kill(ranker.pid, signal.SIGKILL)
        for _ in range(100):
            if not ranker.alive:
                break
            await asyncio.sleep(0.02)
        reply = await stub.Recommend(pb.RecommendRequest(user_id=model.user_ids[0], k=5))
        assert len(reply.items) == 5
        assert sample("shoptwin_recommendation_ranking_process_up") == 0.0
        assert sample("shoptwin_recommendation_ranked_batches_total", where="server") >= 1
