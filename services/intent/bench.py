"""``shoptwin bench intent``: in-process single-message latency of the served model (fp32 and
int8 ONNX, and the whole pipeline), and Classify throughput over gRPC beside the bare echo RPC
measured in the same run."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.echo.bench import measure_echo, start_echo_process
from services.intent.defaults import DEFAULT_DATA
from services.intent.encoder import load_tokenizer
from services.intent.inference import IntentModel
from services.intent.pipeline import IntentPipeline, Request
from services.intent.training import TOKENIZER_FILE
from services.runtime.bench import closed_loop, settle_heap
from services.runtime.client import ChannelOptions, create_aio_channel
from services.runtime.process import ServiceProcess, free_port
from shoptwin.v1 import intent_pb2, intent_pb2_grpc


def sample_messages(limit: int = 400) -> list[str]:
    """Distinct realistic messages from the shipped Bitext sample (deterministic order)."""
    with gzip.open(DEFAULT_DATA, "rt", encoding="utf-8", newline="") as handle:
        texts = [row["instruction"] for row in csv.DictReader(io.StringIO(handle.read()))]
    return list(dict.fromkeys(texts))[:limit]


def _percentiles(label: str, latencies_s: Sequence[float]) -> dict[str, Any]:
    values = np.asarray(latencies_s) * 1000.0
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "label": label,
        "calls": len(values),
        "p50_ms": round(float(p50), 3),
        "p90_ms": round(float(p90), 3),
        "p99_ms": round(float(p99), 3),
        "mean_ms": round(float(values.mean()), 3),
    }


def measure_in_process(
    model_dir: Path, messages: Sequence[str], *, calls: int, threads: int
) -> list[dict[str, Any]]:
    """Latency of one message at a time: bare tokenize+ONNX per variant, then the pipeline
    (batcher hop, entities, next action; no dispatch) on the served variant."""
    rows = []
    # Baseline of the same run: the tokenizer alone (what no model can avoid paying).
    tokenizer = load_tokenizer(model_dir / TOKENIZER_FILE, 128)
    latencies = []
    for i in range(calls):
        t0 = time.perf_counter()
        tokenizer.encode_batch([messages[i % len(messages)]])
        latencies.append(time.perf_counter() - t0)
    rows.append(_percentiles("baseline: tokenize only", latencies))
    for variant in ("fp32", "int8"):
        model = IntentModel(model_dir, variant=variant, threads=threads)
        for text in messages[:20]:  # warm-up
            model.predict([text])
        latencies = []
        for i in range(calls):
            text = messages[i % len(messages)]
            t0 = time.perf_counter()
            model.predict([text])
            latencies.append(time.perf_counter() - t0)
        rows.append(_percentiles(f"model {variant}", latencies))

    async def pipeline_run() -> list[float]:
        model = IntentModel(model_dir, threads=threads)
        pipeline = IntentPipeline(model, lookup=None, templates=model.templates)
        pipeline.start()
        try:
            for text in messages[:20]:
                await pipeline.classify(Request(text))
            latencies = []
            for i in range(calls):
                t0 = time.perf_counter()
                await pipeline.classify(Request(messages[i % len(messages)]))
                latencies.append(time.perf_counter() - t0)
            return latencies
        finally:
            await pipeline.stop()

    served = IntentModel(model_dir, threads=threads).variant
    rows.append(_percentiles(f"pipeline {served}", asyncio.run(pipeline_run())))
    return rows


async def measure_classify(
    target: str, messages: Sequence[str], concurrencies: Sequence[int], *, duration_s: float
) -> list[Any]:
    """Closed-loop Classify throughput at each concurrency over one channel."""
    channel = create_aio_channel(target, ChannelOptions())
    try:
        stub = intent_pb2_grpc.IntentServiceStub(channel)
        requests = [intent_pb2.ClassifyRequest(text=t, skip_order_lookup=True) for t in messages]

        async def call(index: int) -> None:
            await stub.Classify(requests[index % len(requests)])

        results = []
        for concurrency in concurrencies:
            results.append(
                await closed_loop("intent", call, concurrency=concurrency, duration_s=duration_s)
            )
            await asyncio.sleep(0.2)
        return results
    finally:
        await channel.close(None)


def run_intent_bench(
    model_dir: Path,
    *,
    calls: int,
    threads: int,
    concurrencies: Sequence[int],
    duration_s: float,
) -> dict[str, Any]:
    """Everything ``bench intent`` reports, as JSON-ready dicts."""
    messages = sample_messages()
    in_process = measure_in_process(model_dir, messages, calls=calls, threads=threads)
    settle_heap()
    echo = start_echo_process()
    intent = ServiceProcess(
        "intent",
        free_port(),
        extra_args=[
            "--metrics-port",
            "0",
            "--log-level",
            "warning",
            "--model-dir",
            str(model_dir),
            "--dispatch-target",
            "",
            "--inference-threads",
            str(threads),
        ],
    )
    intent.start()
    try:
        intent.wait_serving(120)
        echo_stats = asyncio.run(measure_echo(echo.target, concurrencies, duration_s=duration_s))
        intent_stats = asyncio.run(
            measure_classify(intent.target, messages, concurrencies, duration_s=duration_s)
        )
    finally:
        intent.stop()
        echo.stop()
    grpc_rows = [s.as_dict() for s in (*echo_stats, *intent_stats)]
    ratios = [
        {
            "concurrency": i.concurrency,
            "intent_qps": i.qps,
            "echo_qps": e.qps,
            "intent_over_echo": round(i.qps / e.qps, 4) if e.qps else 0.0,
        }
        for i, e in zip(intent_stats, echo_stats, strict=True)
    ]
    return {"in_process": in_process, "grpc": grpc_rows, "ratios": ratios}
