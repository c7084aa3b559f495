"""Micro-batching of concurrent inference requests.

One worker task feeds a single inference thread. While a batch runs, new requests queue up;
the next batch takes everything queued (up to ``max_batch`` texts). An idle service therefore
adds no waiting time to a lone request, and a busy one amortises the per-call cost of ONNX
Runtime over many messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from services.runtime.metrics import BatchMetrics

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Runs ``predict(texts) -> results`` (one result per text) on batched requests."""

    def __init__(
        self,
        predict: Callable[[list[str]], Sequence[T]],
        *,
        max_batch: int = 32,
        metrics: BatchMetrics | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._predict = predict
        self._metrics = metrics
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[list[str], asyncio.Future[list[T]]]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intent-infer")
        self._task: asyncio.Task[None] | None = None
        self.batches_run = 0
        self.largest_batch = 0

    def start(self) -> None:
        """Start the worker task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, texts: list[str]) -> list[T]:
        """Results for ``texts`` (in order), computed in some batch with other requests."""
        if self._task is None:
            raise RuntimeError("batcher not started")
        future: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0][0])
            while size < self._max_batch and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                size += len(job[0])
            jobs = [job for job in jobs if not job[1].cancelled()]
            if not jobs:
                continue
            texts = [text for job_texts, _ in jobs for text in job_texts]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._predict, texts)
            except Exception as exc:  # every waiter gets the failure, the worker lives on
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if self._metrics is not None:
                self._metrics.observe(len(texts), time.perf_counter() - started)
            self.batches_run += 1
            self.largest_batch = max(self.largest_batch, len(texts))
            offset = 0
            for job_texts, future in jobs:
                if not future.done():
                    future.set_result(list(results[offset : offset + len(job_texts)]))
                offset += len(job_texts)

    async def stop(self) -> None:
        """Stop the worker; requests still queued fail with ``RuntimeError``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("batcher stopped"))
        self._executor.shutdown(wait=True)
