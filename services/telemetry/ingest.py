"""Durable, exactly-once ingestion: a bounded queue in front of one writer thread that commits
many batches per transaction (group commit) and acknowledges each batch after its commit.

Per device the writer tracks the *acknowledged sequence* (every reading at or below it is
durable) and the set of durable sequences above it (readings that arrived out of order while a
gap waits to be filled). That state decides, before anything is written, whether a reading is
new, a resend (duplicate) or out of the reordering window; it is written in the same
transaction as the readings, so it survives a crash exactly as far as they do. The primary key
(device_id, sequence) and ``INSERT OR IGNORE`` guard the same invariant inside the database.

Only the writer thread touches the store's write side and the sequence state; the event loop
hands it batches through a deque and gets results back with ``call_soon_threadsafe``. When
``max_queued_readings`` wait, :meth:`Ingestor.submit` blocks its caller (the Upload handler
stops reading, so HTTP/2 flow control pushes back on the client) instead of buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypeVar

import structlog

from services.runtime.errors import UnavailableError
from services.telemetry.model import BatchResult, DeviceRecord, Rejection, Row
from services.telemetry.store import TelemetryStore

log = structlog.get_logger("shoptwin.telemetry.ingest")

T = TypeVar("T")


class DeviceSequence:
    """Writer-side state of one device."""

    __slots__ = ("acked", "device_id", "fleet_id", "latest", "latest_sequence", "pending")

    def __init__(self, device_id: str, acked: int = 0, fleet_id: str = "") -> None:
        self.device_id = device_id
        self.acked = acked
        self.fleet_id = fleet_id
        #: Durable sequences above ``acked`` (never contains acked + 1).
        self.pending: set[int] = set()
        self.latest: Row | None = None
        self.latest_sequence = 0

    def record(self) -> DeviceRecord:
        return DeviceRecord(self.device_id, self.fleet_id, self.acked, self.latest)


@dataclass
class CommitEvent:
    """What one commit made durable, handed to listeners on the event loop."""

    rows: list[Row]
    #: device_id -> (fleet_id, latest row) for every device the commit touched.
    latest: dict[str, tuple[str, Row | None]]
    committed_at: float


@dataclass
class _Batch:
    rows: list[Row]
    indices: list[int] | None
    rejections: list[Rejection]
    future: asyncio.Future[BatchResult]


@dataclass
class _Job:
    fn: Callable[[TelemetryStore, Mapping[str, DeviceSequence]], Any]
    future: asyncio.Future[Any]


def classify(
    states: dict[str, DeviceSequence],
    rows: list[Row],
    indices: list[int] | None,
    window: int,
    inserts: list[Row],
    rejected: list[Rejection],
    prefix: str = "readings",
) -> tuple[int, int, list[str]]:
    """Sort one batch's rows into new (appended to ``inserts``), duplicates and rejections,
    advancing each device's acknowledged sequence. Returns (stored, duplicates, devices).

    The state changes are tentative until the caller commits ``inserts``.
    """
    stored = duplicates = 0
    devices: dict[str, DeviceSequence] = {}
    append = inserts.append
    for k, row in enumerate(rows):
        device_id = row[0]
        seq = row[1]
        st = devices.get(device_id)
        if st is None:
            st = states.get(device_id)
            if st is None:
                st = states[device_id] = DeviceSequence(device_id)
            devices[device_id] = st
        acked = st.acked
        if seq == acked + 1 and not st.pending:
            st.acked = seq
        elif seq <= acked:
            if seq + window <= acked:
                index = indices[k] if indices is not None else k
                rejected.append(
                    Rejection(
                        index,
                        f"{prefix}[{index}].sequence",
                        f"{seq} is {window} or more behind the acknowledged sequence {acked} "
                        "(outside the reordering window); a resend cannot be told from a reset "
                        "counter",
                    )
                )
            else:
                duplicates += 1
            continue
        elif seq - acked > window:
            index = indices[k] if indices is not None else k
            rejected.append(
                Rejection(
                    index,
                    f"{prefix}[{index}].sequence",
                    f"{seq} is more than {window} ahead of the acknowledged sequence {acked} "
                    f"(outside the reordering window); resend from {acked + 1}",
                )
            )
            continue
        elif seq in st.pending:
            duplicates += 1
            continue
        else:
            pending = st.pending
            pending.add(seq)
            while acked + 1 in pending:
                acked += 1
                pending.remove(acked)
            st.acked = acked
        stored += 1
        append(row)
        if seq > st.latest_sequence:
            st.latest_sequence = seq
            st.latest = row
            if row[3]:
                st.fleet_id = row[3]
    return stored, duplicates, list(devices)


class Ingestor:
    """The bounded queue and the single writer thread in front of a :class:`TelemetryStore`."""

    def __init__(
        self,
        store: TelemetryStore,
        *,
        reorder_window: int,
        max_queued_readings: int,
        max_commit_readings: int,
        listeners: tuple[Callable[[CommitEvent], None], ...] = (),
        writer_listeners: tuple[Callable[[CommitEvent], None], ...] = (),
    ) -> None:
        self._store = store
        self._window = reorder_window
        self._max_queued = max_queued_readings
        self._max_commit = max_commit_readings
        self._listeners = listeners
        #: Called on the writer thread after each commit; may block it (backpressure).
        self._writer_listeners = writer_listeners
        self._states: dict[str, DeviceSequence] = {}
        self._items: deque[_Batch | _Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queued = 0
        self._space = asyncio.Event()
        self.commits = 0

    @property
    def reorder_window(self) -> int:
        return self._window

    async def start(self) -> list[DeviceRecord]:
        """Load the sequence state from the store and start the writer; returns the devices."""
        self._loop = asyncio.get_running_loop()
        records = await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()
        return records

    def _load(self) -> list[DeviceRecord]:
        records = self._store.load_devices()
        states = {}
        for record in records:
            st = DeviceSequence(record.device_id, record.acked_sequence, record.fleet_id)
            if record.latest is not None:
                st.latest = record.latest
                st.latest_sequence = record.latest[1]
            states[record.device_id] = st
        for device_id, seqs in self._store.load_unacked(
            {d: s.acked for d, s in states.items()}
        ).items():
            states[device_id].pending.update(seqs)
        self._states = states
        return records

    def acked_sequence(self, device_id: str) -> int:
        """The acknowledged sequence of a device as the writer sees it now (0 when unknown)."""
        st = self._states.get(device_id)
        return st.acked if st is not None else 0

    async def _reserve(self, n: int) -> None:
        # A batch larger than the whole budget still goes through alone.
        while self._queued > 0 and self._queued + n > self._max_queued:
            self._space.clear()
            await self._space.wait()
        self._queued += n

    async def submit(
        self, rows: list[Row], indices: list[int] | None, rejections: list[Rejection]
    ) -> asyncio.Future[BatchResult]:
        """Queue one decoded batch, waiting while the queue is full; the returned future
        resolves to the batch's result after its commit."""
        if self._closing:
            raise UnavailableError("telemetry is shutting down")
        await self._reserve(len(rows))
        assert self._loop is not None
        future: asyncio.Future[BatchResult] = self._loop.create_future()
        with self._cond:
            self._items.append(_Batch(rows, indices, rejections, future))
            self._cond.notify()
        return future

    async def run_job(self, fn: Callable[[TelemetryStore, Mapping[str, DeviceSequence]], T]) -> T:
        """Run ``fn(store, states)`` on the writer thread between two commits."""
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        with self._cond:
            self._items.append(_Job(fn, future))
            self._cond.notify()
        return await future

    async def stop(self) -> None:
        """Commit what is queued, then stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    # -- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items:
                    return
                first = self._items.popleft()
                group: list[_Batch] = []
                if isinstance(first, _Batch):
                    group.append(first)
                    total = len(first.rows)
                    while self._items:
                        nxt = self._items[0]
                        if not isinstance(nxt, _Batch) or total + len(nxt.rows) > self._max_commit:
                            break
                        group.append(self._items.popleft())  # type: ignore[arg-type]
                        total += len(nxt.rows)
            if isinstance(first, _Job):
                self._run_job(first)
            else:
                self._commit_group(group)

    def _run_job(self, job: _Job) -> None:
        try:
            result = job.fn(self._store, self._states)
        except BaseException as exc:
            self._post(_fail, job.future, exc)
        else:
            self._post(_resolve, job.future, result)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    def _commit_group(self, group: list[_Batch]) -> None:
        states = self._states
        inserts: list[Row] = []
        partial: list[tuple[int, int, list[Rejection], list[str]]] = []
        touched: dict[str, None] = {}
        for batch in group:
            rejected = list(batch.rejections)
            stored, duplicates, devices = classify(
                states, batch.rows, batch.indices, self._window, inserts, rejected
            )
            if batch.rejections and len(rejected) > len(batch.rejections):
                rejected.sort(key=lambda r: r.index)
            partial.append((stored, duplicates, rejected, devices))
            touched.update(dict.fromkeys(devices))
        # Grouping a device's rows keeps its B-tree writes together (and hands listeners one
        # run per device); the sort is stable, so each run stays in arrival order.
        inserts.sort(key=itemgetter(0))
        records = [states[d].record() for d in touched]
        try:
            inserted = self._store.commit(inserts, records)
        except Exception as exc:
            log.error("commit failed; reloading sequence state", error=repr(exc))
            try:
                self._load()
            except Exception as reload_exc:  # pragma: no cover - storage is gone
                log.error("reload failed", error=repr(reload_exc))
            self._post(_fail_group, group, UnavailableError(f"storage failed, resend: {exc}"), self)
            return
        if inserted != len(inserts):
            log.warning(
                "primary key refused readings the tracker thought new",
                expected=len(inserts),
                inserted=inserted,
            )
        self.commits += 1
        results = [
            BatchResult(stored, duplicates, rejected, [(d, states[d].acked) for d in devices])
            for stored, duplicates, rejected, devices in partial
        ]
        event = CommitEvent(
            inserts,
            {d: (states[d].fleet_id, states[d].latest) for d in touched},
            time.time(),
        )
        self._post(self._complete, group, results, event)
        for listener in self._writer_listeners:
            try:
                listener(event)
            except Exception as exc:  # a listener must never stop the writer
                log.error("commit listener failed", error=repr(exc))

    # -- event loop side --------------------------------------------------------------------

    def _release(self, n: int) -> None:
        self._queued -= n
        self._space.set()

    def _complete(
        self, group: list[_Batch], results: list[BatchResult], event: CommitEvent
    ) -> None:
        self._release(sum(len(b.rows) for b in group))
        for batch, result in zip(group, results, strict=True):
            if not batch.future.done():
                batch.future.set_result(result)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as exc:  # a listener must never stop acknowledgements
                log.error("commit listener failed", error=repr(exc))


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _fail_group(group: list[_Batch], exc: BaseException, ingestor: Ingestor) -> None:
    ingestor._release(sum(len(b.rows) for b in group))
    for batch in group:
        _fail(batch.future, exc)
