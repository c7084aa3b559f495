"""The IntentService servicer: validate, call the pipeline, build the response."""

from __future__ import annotations

from typing import Any

import grpc
import structlog
from grpc import aio

from services.intent.actions import ActionType, LookupOutcome
from services.intent.inference import IntentModel
from services.intent.pipeline import Classification, IntentPipeline, Request
from services.intent.wire import UndecodableRequest, parse_with
from services.runtime.errors import UnavailableError, ValidationError
from services.runtime.validation import require_count, require_text
from shoptwin.v1 import intent_pb2, intent_pb2_grpc

SERVICE_NAME = intent_pb2.DESCRIPTOR.services_by_name["IntentService"].full_name

MAX_TEXT_CHARS = 2000
MAX_LANGUAGE_CHARS = 35
MAX_CONVERSATION_ID_CHARS = 128
MAX_TOP_K = 10
MAX_BATCH = 256

_ACTIONS = {
    ActionType.ANSWER_WITH_TEMPLATE: intent_pb2.NEXT_ACTION_TYPE_ANSWER_WITH_TEMPLATE,
    ActionType.ASK_FOR_ORDER_ID: intent_pb2.NEXT_ACTION_TYPE_ASK_FOR_ORDER_ID,
    ActionType.HAND_OFF_TO_HUMAN: intent_pb2.NEXT_ACTION_TYPE_HAND_OFF_TO_HUMAN,
    ActionType.REPLY_WITH_ORDER_STATUS: intent_pb2.NEXT_ACTION_TYPE_REPLY_WITH_ORDER_STATUS,
    ActionType.ASK_TO_REPHRASE: intent_pb2.NEXT_ACTION_TYPE_ASK_TO_REPHRASE,
}
_OUTCOMES = {
    LookupOutcome.NOT_ATTEMPTED: intent_pb2.ORDER_LOOKUP_OUTCOME_NOT_ATTEMPTED,
    LookupOutcome.FOUND: intent_pb2.ORDER_LOOKUP_OUTCOME_FOUND,
    LookupOutcome.UNKNOWN_ORDER: intent_pb2.ORDER_LOOKUP_OUTCOME_UNKNOWN_ORDER,
    LookupOutcome.DISPATCH_UNAVAILABLE: intent_pb2.ORDER_LOOKUP_OUTCOME_DISPATCH_UNAVAILABLE,
}


def to_request(message: intent_pb2.ClassifyRequest, prefix: str = "") -> Request:
    """Validate a ClassifyRequest; errors name ``<prefix><field>``."""
    text = require_text(f"{prefix}text", message.text, max_length=MAX_TEXT_CHARS)
    if not text.strip():
        raise ValidationError(f"{prefix}text", "must not be blank")
    require_text(
        f"{prefix}language", message.language, max_length=MAX_LANGUAGE_CHARS, allow_empty=True
    )
    require_text(
        f"{prefix}conversation_id",
        message.conversation_id,
        max_length=MAX_CONVERSATION_ID_CHARS,
        allow_empty=True,
    )
    if message.top_k > MAX_TOP_K:
        raise ValidationError(f"{prefix}top_k", f"must be in 0..{MAX_TOP_K}, got {message.top_k}")
    return Request(
        text=text,
        top_k=message.top_k or 3,
        skip_order_lookup=message.skip_order_lookup,
    )


def to_response(result: Classification) -> intent_pb2.ClassifyResponse:
    """The protobuf form of a pipeline result."""
    top = [intent_pb2.IntentScore(intent=label, probability=p) for label, p in result.top]
    lookup = intent_pb2.OrderLookup(
        outcome=_OUTCOMES[result.lookup.outcome],
        order_id=result.lookup.order_id,
        detail=result.lookup.detail,
    )
    if result.lookup.status is not None:
        lookup.status.CopyFrom(result.lookup.status)  # type: ignore[arg-type]
    return intent_pb2.ClassifyResponse(
        intent=top[0],
        top_intents=top,
        out_of_scope=result.out_of_scope,
        entities=[
            intent_pb2.Entity(
                type=e.type, value=e.value, start=e.start, end=e.end, normalized=e.normalized
            )
            for e in result.entities
        ],
        next_action=intent_pb2.NextAction(
            type=_ACTIONS[result.action.type],
            template_id=result.action.template_id,
            reply_text=result.action.reply_text,
        ),
        order_lookup=lookup,
        model_version=result.model_version,
    )


class IntentServicer(intent_pb2_grpc.IntentServiceServicer):
    """Thin layer over :class:`IntentPipeline`; ``pipeline`` is None until a model exists."""

    def __init__(self, pipeline: IntentPipeline | None, missing_reason: str = "") -> None:
        self._pipeline = pipeline
        self._missing_reason = missing_reason or "no intent model loaded"

    def _require_pipeline(self) -> IntentPipeline:
        if self._pipeline is None:
            raise UnavailableError(self._missing_reason)
        return self._pipeline

    async def Classify(
        self,
        request: intent_pb2.ClassifyRequest | UndecodableRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> intent_pb2.ClassifyResponse:
        if isinstance(request, UndecodableRequest):
            raise ValidationError(request.field, request.problem)
        parsed = to_request(request)
        if request.conversation_id:
            # Ties the access-log line of this call to the conversation (task-local context).
            structlog.contextvars.bind_contextvars(conversation_id=request.conversation_id)
        pipeline = self._require_pipeline()
        return to_response(await pipeline.classify(parsed))

    async def ClassifyBatch(
        self,
        request: intent_pb2.ClassifyBatchRequest | UndecodableRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> intent_pb2.ClassifyBatchResponse:
        if isinstance(request, UndecodableRequest):
            raise ValidationError(request.field, request.problem)
        require_count("requests", request.requests, low=1, high=MAX_BATCH)
        parsed = [to_request(r, f"requests[{i}].") for i, r in enumerate(request.requests)]
        pipeline = self._require_pipeline()
        results = await pipeline.classify_many(parsed)
        return intent_pb2.ClassifyBatchResponse(results=[to_response(r) for r in results])

    async def GetModelInfo(
        self, request: intent_pb2.GetIntentModelInfoRequest, context: aio.ServicerContext[Any, Any]
    ) -> intent_pb2.IntentModelInfo:
        model: IntentModel = self._require_pipeline().model
        return intent_pb2.IntentModelInfo(
            version=model.version,
            kind=f"{model.kind}/{model.variant}",
            intents=model.labels,
            out_of_scope_threshold=model.threshold,
            temperature=model.temperature,
            metrics=model.metrics,
        )


def add_to_server(servicer: IntentServicer, server: aio.Server) -> None:
    """Register ``servicer`` like the generated ``add_IntentServiceServicer_to_server``, but with
    request parsers that let bad UTF-8 surface as INVALID_ARGUMENT naming the field."""
    handlers = {
        "Classify": grpc.unary_unary_rpc_method_handler(
            servicer.Classify,
            request_deserializer=parse_with(intent_pb2.ClassifyRequest),
            response_serializer=intent_pb2.ClassifyResponse.SerializeToString,
        ),
        "ClassifyBatch": grpc.unary_unary_rpc_method_handler(
            servicer.ClassifyBatch,
            request_deserializer=parse_with(intent_pb2.ClassifyBatchRequest),
            response_serializer=intent_pb2.ClassifyBatchResponse.SerializeToString,
        ),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            servicer.GetModelInfo,
            request_deserializer=intent_pb2.GetIntentModelInfoRequest.FromString,
            response_serializer=intent_pb2.IntentModelInfo.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    # Registered handlers skip the generic lookup per call (as the generated code does).
    server.add_registered_method_handlers(SERVICE_NAME, handlers)  # type: ignore[attr-defined]
