"""Ranking in a child process, so a batch's scoring never holds the server's GIL.

Why: in one process the ranking thread and the gRPC event loop share one GIL. Torch drops it
on every op and must win it back from a busy loop each time (waiting up to the 5 ms switch
interval), so under load a batch took 2.7x its own CPU time and the server stayed on one core.
Here the child ranks on the other core with its own interpreter, and the loop only pickles a
few arrays per batch and reads the answer when the socket is readable (no thread in the
parent, so no GIL hand-off at all).

The child holds a mirror of every :class:`ServingState` the server serves: the same model
(loaded by the child itself from the model directory, while the server loads its copy), the
same catalogue and popularity (the server forwards every catalogue update and feedback event
in order on the same socket as the queries, so a query sees every update sent before it) and
the same clock offset. Queries carry the user's history snapshot, so the child keeps no
per-user state.

Protocol (parent -> child, one socket, pickled tuples, handled strictly in order):
``("fetch", serial, model_dir)`` start loading a model in a child thread;
``("activate", serial, clock_offset, events)`` build the state from it and replay ``events``;
``("forget", serial)`` the server gave up on that model; ``("events", serial, events)``;
``("catalog", serial | None, entries)``; ``("rank", batch, serial, queries)``; ``("stop",)``.
Child -> parent: ``("loaded", serial, error | None)`` once per fetch (the server activates,
and swaps in, a model only once the child has it, so no request waits for the child's load),
``("ranked", batch, [RankedItems])``, ``("failed", batch, reason)`` and
``("state", serial, error | None)`` once per activation.

If the child dies, the parent fails over to ranking in a thread of its own (it has the full
state) and logs the error; the service keeps answering.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.recommendation.engine import (
    Catalog,
    CatalogEntry,
    ItemFilter,
    PreparedQuery,
    Query,
    RankedItems,
    ServingState,
    ThreadRanker,
    update_catalog,
)
from services.recommendation.model import HistoryBatch, RecommenderModel
from services.recommendation.store import StoredEvent

log = structlog.get_logger("shoptwin.recommendation.ranker")

#: States the child keeps: the one served now and the one before it (requests accepted under
#: the old model are still ranked with it during a reload).
KEPT_STATES = 2

#: Seconds a reload waits for the child's copy of the model before ranking that model in the
#: server instead (the server's own load has finished by then).
LOAD_TIMEOUT_S = 300.0

#: What a query needs in the child: k, in-stock-only, history, banned items, allowed category
#: codes (the rest of a query stays with the server).
WireQuery = tuple[int, bool, HistoryBatch | None, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class RankerMetrics:
    """Whether the ranking process is up, and where batches were ranked (an alert on
    ``where="server"`` growing catches a fail-over)."""

    up: Gauge
    batches: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> RankerMetrics:
        return cls(
            Gauge(
                "shoptwin_recommendation_ranking_process_up",
                "1 while the ranking process serves this server's batches (summed over workers)",
                multiprocess_mode="livesum",
                registry=registry,
            ),
            Counter(
                "shoptwin_recommendation_ranked_batches",
                "Recommend batches ranked, by where: the ranking process or the server",
                ["where"],
                registry=registry,
            ),
        )


class RankerGone(Exception):
    """The ranking process exited or could not rank a batch."""


def to_wire(prepared: Sequence[PreparedQuery]) -> list[WireQuery]:
    return [
        (p.query.k, p.query.filter.in_stock_only, p.history, p.banned, p.allowed_codes)
        for p in prepared
    ]


def from_wire(queries: Sequence[WireQuery]) -> list[PreparedQuery]:
    return [
        PreparedQuery(
            Query("", k, ItemFilter(in_stock_only=in_stock)), history, banned, [], allowed
        )
        for k, in_stock, history, banned, allowed in queries
    ]


class ProcessRanker:
    """The server's side (an engine :class:`~services.recommendation.engine.Ranker`): starts
    the child, mirrors state changes to it, ranks batches there, and ranks in a thread of its
    own when the child cannot. Every method runs on the event loop thread."""

    def __init__(self, torch_threads: int = 1, *, metrics: RankerMetrics | None = None) -> None:
        self.torch_threads = torch_threads
        self.metrics = metrics
        self.fallback = ThreadRanker()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._pending: dict[int, asyncio.Future[list[RankedItems]]] = {}
        self._batches = itertools.count()
        self._serials = itertools.count(1)
        #: Models the child is loading: resolved True when loaded, False when it could not.
        self._loads: dict[int, asyncio.Future[bool]] = {}
        #: Serials the child has a model for (the others are ranked here).
        self._usable: set[int] = set()
        #: The child's name for each served state (weak: a replaced state is forgotten here
        #: once its last request is answered; the child keeps its last few).
        self._state_serials: weakref.WeakKeyDictionary[ServingState, int] = (
            weakref.WeakKeyDictionary()
        )
        self.alive = False
        #: Batches the child has answered.
        self.batches_ranked = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        # The child imports this package from where this process did.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.recommendation.ranker",
                    "--fd",
                    str(child.fileno()),
                    "--torch-threads",
                    str(self.torch_threads),
                ],
                pass_fds=(child.fileno(),),
                env=env,
            )
        except OSError as exc:
            parent.close()
            child.close()
            log.error("ranking process did not start; ranking in the server", error=str(exc))
            return
        child.close()
        self._conn = Connection(parent.detach())
        asyncio.get_running_loop().add_reader(self._conn.fileno(), self._on_readable)
        self.alive = True
        if self.metrics is not None:
            self.metrics.up.set(1)
        log.info("ranking process started", pid=self._process.pid)

    async def stop(self) -> None:
        self._send(("stop",))
        self._gone(None)
        process = self._process
        if process is not None:
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
            self._process = None

    async def rank(self, state: ServingState, prepared: list[PreparedQuery]) -> list[RankedItems]:
        serial = self._state_serials.get(state)
        if self.alive and serial is not None:
            batch = next(self._batches)
            future: asyncio.Future[list[RankedItems]] = asyncio.get_running_loop().create_future()
            self._pending[batch] = future
            self._send(("rank", batch, serial, to_wire(prepared)))
            try:
                ranked = await future
            except RankerGone as exc:
                log.warning("ranking in the server", reason=str(exc))
            else:
                self._count("process")
                return ranked
        self._count("server")
        return await self.fallback.rank(state, prepared)

    def _count(self, where: str) -> None:
        if self.metrics is not None:
            self.metrics.batches.labels(where=where).inc()

    def begin_load(self, directory: Path) -> object:
        serial = next(self._serials)
        if self.alive:
            self._loads[serial] = asyncio.get_running_loop().create_future()
            self._send(("fetch", serial, str(directory)))
        return serial

    async def wait_loaded(self, token: object) -> None:
        assert isinstance(token, int)
        future = self._loads.get(token)
        if future is None:
            return
        try:
            loaded = await asyncio.wait_for(asyncio.shield(future), LOAD_TIMEOUT_S)
        except TimeoutError:
            log.error("ranking process did not load a model in time; ranking it here")
            self.abandon_load(token)
            return
        if loaded:
            self._usable.add(token)

    def abandon_load(self, token: object) -> None:
        assert isinstance(token, int)
        self._loads.pop(token, None)
        self._send(("forget", token))

    def activate(self, token: object, state: ServingState, events: list[StoredEvent]) -> None:
        assert isinstance(token, int)
        self._loads.pop(token, None)
        if token in self._usable:
            self._state_serials[state] = token
            self._send(("activate", token, state.clock_offset, events))

    def apply_events(self, state: ServingState, events: list[StoredEvent]) -> None:
        serial = self._state_serials.get(state)
        if serial is not None:
            self._send(("events", serial, events))

    def apply_catalog(
        self, state: ServingState | None, entries: Sequence[tuple[str, CatalogEntry]]
    ) -> None:
        serial = None if state is None else self._state_serials.get(state)
        self._send(("catalog", serial, list(entries)))

    def _send(self, message: tuple[Any, ...]) -> None:
        if not self.alive or self._conn is None:
            return
        try:
            self._conn.send(message)
        except OSError as exc:
            self._gone(f"send failed: {exc}")

    def _on_readable(self) -> None:
        conn = self._conn
        try:
            while self.alive and conn is not None and conn.poll():
                self._dispatch(conn.recv())
        except (EOFError, OSError) as exc:
            self._gone(f"it exited ({type(exc).__name__})")

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind in ("ranked", "failed"):
            future = self._pending.pop(message[1], None)
            if future is None or future.done():
                return
            if kind == "ranked":
                self.batches_ranked += 1
                future.set_result(message[2])
            else:
                future.set_exception(RankerGone(message[2]))
        elif kind == "loaded":
            _, serial, error = message
            if error is not None:
                log.error("ranking process could not load a model; ranking it here", error=error)
            load = self._loads.get(serial)
            if load is not None and not load.done():
                load.set_result(error is None)
        elif kind == "state" and message[2] is not None:
            self._usable.discard(message[1])
            log.error("ranking process could not build a model's state", error=message[2])

    def _gone(self, reason: str | None) -> None:
        """Stop using the child (``reason`` None: a normal stop)."""
        if not self.alive:
            return
        self.alive = False
        if self.metrics is not None:
            self.metrics.up.set(0)
        if reason is not None:
            log.error("ranking process lost; ranking in the server from now on", reason=reason)
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            conn.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RankerGone(reason or "stopped"))
        self._pending.clear()
        for load in self._loads.values():
            if not load.done():
                load.set_result(False)
        self._usable.clear()


class RankerChild:
    """The child's side: a reader thread queues messages, the main thread handles them in
    order, a loader thread loads models ahead of their activation."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.catalog = Catalog()
        self.states: OrderedDict[int, ServingState] = OrderedDict()
        self.loading: dict[int, Future[RecommenderModel]] = {}
        self.loader = ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        self.inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()

    def run(self) -> None:
        threading.Thread(target=self._read, name="ranker-reader", daemon=True).start()
        while (message := self.inbox.get()) is not None:
            if message[0] == "stop":
                break
            self.handle(message)
        self.loader.shutdown(wait=False, cancel_futures=True)

    def _reply(self, message: tuple[Any, ...]) -> None:
        try:
            self.conn.send(message)
        except OSError:
            self.inbox.put(None)  # the server is gone: exit after this message

    def _read(self) -> None:
        try:
            while True:
                self.inbox.put(self.conn.recv())
        except (EOFError, OSError):
            self.inbox.put(None)  # the server is gone: exit

    def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "rank":
            _, batch, serial, queries = message
            state = self.states.get(serial)
            if state is None:
                self._reply(("failed", batch, f"no model state {serial} in the ranker"))
                return
            try:
                ranked = state.rank(from_wire(queries))
            except Exception as exc:  # reported to the server, which ranks the batch itself
                self._reply(("failed", batch, f"{type(exc).__name__}: {exc}"))
                return
            self._reply(("ranked", batch, ranked))
        elif kind == "events":
            state = self.states.get(message[1])
            if state is not None:
                for event in message[2]:
                    state.apply_event(event, with_history=False)
        elif kind == "catalog":
            _, serial, entries = message
            state = self.states.get(serial) if serial is not None else None
            update_catalog(self.catalog, state, entries)
        elif kind == "fetch":
            _, serial, model_dir = message
            future = self.loader.submit(RecommenderModel.load, Path(model_dir))
            self.loading[serial] = future
            # Reported from this (main) thread: only it writes to the socket.
            future.add_done_callback(lambda _: self.inbox.put(("loaded", serial)))
        elif kind == "loaded":
            loaded = self.loading.get(message[1])
            if loaded is not None and not loaded.cancelled():
                error = loaded.exception()
                self._reply(("loaded", message[1], None if error is None else repr(error)))
        elif kind == "forget":
            abandoned = self.loading.pop(message[1], None)
            if abandoned is not None:
                abandoned.cancel()
        elif kind == "activate":
            self._activate(*message[1:])

    def _activate(self, serial: int, clock_offset: float, events: list[StoredEvent]) -> None:
        future = self.loading.pop(serial, None)
        error: str | None = None
        try:
            if future is None:
                raise RuntimeError("activated before it was fetched")
            state = ServingState(future.result(), self.catalog, clock_offset=clock_offset)
            for event in events:
                state.apply_event(event, with_history=False)
            self.states[serial] = state
            while len(self.states) > KEPT_STATES:
                self.states.popitem(last=False)
            # As the server does after a swap: a full collection among the model's objects
            # would stop ranking for ~60 ms at 100k items.
            gc.freeze()
        except Exception as exc:  # reported; batches for this serial then fail over
            error = f"{type(exc).__name__}: {exc}"
        self._reply(("state", serial, error))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ranking process of the recommendation service")
    parser.add_argument("--fd", type=int, required=True, help="socket to the server")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args(argv)
    # The server stops this process by closing the socket; a Ctrl-C or SIGTERM sent to the
    # whole process group is the server's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import torch

    torch.set_num_threads(args.torch_threads)
    conn = Connection(args.fd)
    RankerChild(conn).run()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
