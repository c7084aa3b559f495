"""One message in, one classification out: model (batched), entities, order lookup, next action.

Knows nothing of gRPC: the order lookup is any object with an async ``lookup(order_id)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.intent.actions import (
    LookupOutcome,
    NextAction,
    choose_next_action,
    needs_order_lookup,
)
from services.intent.batching import MicroBatcher
from services.intent.entities import Entity, extract_entities, first_of_type
from services.intent.inference import IntentModel, Prediction
from services.runtime.metrics import BatchMetrics

DEFAULT_TOP_K = 3


@dataclass(frozen=True)
class LookupReport:
    outcome: LookupOutcome
    order_id: str = ""
    status: object | None = None  # the dispatch OrderStatus when FOUND
    detail: str = ""
    summary: str = ""  # a reply sentence when FOUND


class OrderLookup(Protocol):
    async def lookup(self, order_id: str) -> LookupReport: ...


@dataclass(frozen=True)
class Request:
    text: str
    top_k: int = DEFAULT_TOP_K
    skip_order_lookup: bool = False


@dataclass(frozen=True)
class Classification:
    top: list[tuple[str, float]]
    out_of_scope: bool
    entities: list[Entity]
    action: NextAction
    lookup: LookupReport
    model_version: str
    extra: dict[str, str] = field(default_factory=dict)


class IntentPipeline:
    """Classifies messages with a loaded model; concurrent calls share inference batches."""

    def __init__(
        self,
        model: IntentModel,
        *,
        lookup: OrderLookup | None,
        templates: Mapping[str, str] | None = None,
        max_batch: int = 32,
        batch_metrics: BatchMetrics | None = None,
    ) -> None:
        self.model = model
        self._lookup = lookup
        self._templates = dict(templates or {})
        self._batcher: MicroBatcher[Prediction] = MicroBatcher(
            model.predict, max_batch=max_batch, metrics=batch_metrics
        )

    def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()

    async def classify(self, request: Request) -> Classification:
        """Classify one message (batched with concurrent callers)."""
        (prediction,) = await self._batcher.submit([request.text])
        return await self._finish(request, prediction)

    async def classify_many(self, requests: Sequence[Request]) -> list[Classification]:
        """Classify several messages in one inference batch; results in request order."""
        predictions = await self._batcher.submit([r.text for r in requests])
        return list(
            await asyncio.gather(
                *(self._finish(r, p) for r, p in zip(requests, predictions, strict=True))
            )
        )

    async def _finish(self, request: Request, prediction: Prediction) -> Classification:
        labels = self.model.labels
        top = prediction.top(labels, max(request.top_k, 2))
        intent = top[0][0]
        margin = top[0][1] - top[1][1] if len(top) > 1 else 1.0
        entities = extract_entities(request.text)
        order = first_of_type(entities, "order_id")
        order_id = order.normalized or order.value if order else None
        report = LookupReport(LookupOutcome.NOT_ATTEMPTED)
        if (
            self._lookup is not None
            and not request.skip_order_lookup
            and needs_order_lookup(intent, prediction.out_of_scope, order_id)
            and order_id
        ):
            report = await self._lookup.lookup(order_id)
        action = choose_next_action(
            intent,
            margin,
            prediction.out_of_scope,
            order_id,
            report.outcome,
            status_text=report.summary,
            templates=self._templates,
        )
        return Classification(
            top=top[: request.top_k],
            out_of_scope=prediction.out_of_scope,
            entities=entities,
            action=action,
            lookup=report,
            model_version=self.model.version,
        )
