"""The dispatch-down path with the intent server in its own process (as deployed) and no
dispatch listening: Classify still succeeds and says dispatch is unavailable."""

from __future__ import annotations

from pathlib import Path

from services.runtime.client import ChannelOptions, create_aio_channel
from services.runtime.process import ServiceProcess, free_port
from shoptwin.v1 import intent_pb2, intent_pb2_grpc


async def test_intent_process_with_dispatch_down(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = ServiceProcess(
        "intent",
        free_port(),
        extra_args=[
            "--model-dir",
            str(tiny_model_dir),
            "--dispatch-target",
            f"127.0.0.1:{free_port()}",
            "--dispatch-timeout-s",
            "0.5",
            "--data-dir",
            str(tmp_path),
            "--log-level",
            "warning",
            "--metrics-port",
            "0",  # never the default port: other servers may hold it
        ],
        log_path=tmp_path / "intent.log",
    )
    proc.start()
    try:
        proc.wait_serving(60)
        channel = create_aio_channel(proc.target, ChannelOptions(retry=None))
        try:
            stub = intent_pb2_grpc.IntentServiceStub(channel)
            reply = await stub.Classify(
                intent_pb2.ClassifyRequest(text="where is my order 113542617735902?"),
                timeout=10,
            )
        finally:
            await channel.close(None)
    finally:
        assert proc.stop() == 0
    assert reply.intent.intent == "track_order"
    assert reply.order_lookup.outcome == intent_pb2.ORDER_LOOKUP_OUTCOME_DISPATCH_UNAVAILABLE
    assert reply.next_action.type == intent_pb2.NEXT_ACTION_TYPE_ANSWER_WITH_TEMPLATE
