"""The telemetry service's domain facade: ingestion, latest state, queries, live fan-out,
alerts and maintenance, wired together and independent of gRPC.

The servicer (``server.py``) translates protobuf to calls on :class:`Telemetry` and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from services.runtime.errors import NotFoundError, ValidationError
from services.telemetry.alerts import AlertEngine, AlertEvent, Rule, load_rules
from services.telemetry.config import TelemetryOptions
from services.telemetry.ingest import CommitEvent, DeviceSequence, Ingestor
from services.telemetry.live import Hub, Subscription
from services.telemetry.model import (
    FLEET,
    BatchResult,
    Bucket,
    Rejection,
    Row,
    aggregate,
    rebucket,
)
from services.telemetry.store import SQLiteStore, TelemetryStore

log = structlog.get_logger("shoptwin.telemetry")

MAX_LATEST_IDS = 10_000
MAX_RANGE_LIMIT = 100_000
DEFAULT_RANGE_LIMIT = 10_000
FOREVER_MS = 2**62
ALERT_QUEUE = 64


@dataclass
class RangeResult:
    """Raw readings or buckets of one device, oldest first."""

    rows: list[Row]
    buckets: list[Bucket]
    truncated: bool


@dataclass
class MaintenanceReport:
    """What one retention pass did."""

    downsampled: int = 0
    deleted_raw: int = 0
    deleted_buckets: int = 0


class Telemetry:
    """Everything the telemetry service does, behind async methods."""

    def __init__(
        self,
        store: TelemetryStore,
        options: TelemetryOptions,
        *,
        rules: list[Rule] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.options = options
        self.clock = clock
        self.live: Hub[Row] = Hub(options.live_queue_size)
        self.alert_hub: Hub[AlertEvent] = Hub(options.live_queue_size)
        self.rules = rules if rules is not None else []
        self.alerts = AlertEngine(self.rules, self._emit_alerts) if options.alerts_enabled else None
        # Alert rules run on their own thread, fed by the writer after each commit, so that
        # they take no time from the event loop (which decodes the incoming batches). A full
        # queue holds the writer back: alerts lag by at most ALERT_QUEUE commits.
        self._alert_queue: queue.Queue[CommitEvent | None] = queue.Queue(ALERT_QUEUE)
        self._alert_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ingestor = Ingestor(
            store,
            reorder_window=options.reorder_window,
            max_queued_readings=options.max_queued_readings,
            max_commit_readings=options.max_commit_readings,
            listeners=(self._on_commit,),
            writer_listeners=(self._alert_queue.put,) if self.alerts is not None else (),
        )
        self._latest: dict[str, Row] = {}
        self._fleet_of: dict[str, str] = {}
        self._fleet_members: dict[str, set[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def open(
        cls, path: Path, options: TelemetryOptions, *, clock: Callable[[], float] = time.time
    ) -> Telemetry:
        """A service on the SQLite file ``path`` with the configured rules."""
        store = SQLiteStore(path, synchronous=options.synchronous)
        rules = load_rules(options.rules_file) if options.alerts_enabled else []
        return cls(store, options, rules=rules, clock=clock)

    async def start(self, *, background: bool = True) -> None:
        """Load state, start the writer and (unless ``background`` is false) the periodic
        maintenance and silence checks."""
        self._loop = asyncio.get_running_loop()
        if self.alerts is not None:
            self._alert_thread = threading.Thread(
                target=self._alert_worker, name="telemetry-alerts", daemon=True
            )
            self._alert_thread.start()
        records = await self.ingestor.start()
        for record in records:
            self._remember(record.device_id, record.fleet_id, record.latest)
        if background:
            self._tasks.append(asyncio.create_task(self._maintenance_loop()))
            if self.alerts is not None and any(r.kind == "device_silent" for r in self.rules):
                self._tasks.append(asyncio.create_task(self._silence_loop()))

    async def stop(self) -> None:
        """Stop background work, commit what is queued, close streams and the store."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.ingestor.stop()
        if self._alert_thread is not None:
            self._alert_queue.put(None)
            await asyncio.to_thread(self._alert_thread.join)
            self._alert_thread = None
        self.live.close()
        self.alert_hub.close()
        self.store.close()

    # -- ingestion --------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def submit(
        self, rows: list[Row], indices: list[int] | None, rejections: list[Rejection]
    ) -> asyncio.Future[BatchResult]:
        """Queue a decoded batch (waiting while storage is behind); the future resolves after
        the commit."""
        return await self.ingestor.submit(rows, indices, rejections)

    def check_window(self, rows: list[Row], indices: list[int] | None) -> None:
        """Raise ``ValidationError`` for the first reading far behind its device's reordering
        window (used by the unary Ingest, which refuses such a batch as a whole). Acknowledged
        sequences only grow, so the verdict cannot change before the writer sees the batch. A
        reading too far *ahead* is refused in the ack instead: whether it is depends on the
        readings before it in the same batch."""
        window = self.ingestor.reorder_window
        for k, row in enumerate(rows):
            acked = self.ingestor.acked_sequence(row[0])
            if row[1] + window <= acked:
                index = indices[k] if indices is not None else k
                raise ValidationError(
                    f"readings[{index}].sequence",
                    f"{row[1]} is {window} or more behind the acknowledged sequence {acked} "
                    "(outside the reordering window)",
                )

    def _remember(self, device_id: str, fleet_id: str, latest: Row | None) -> None:
        if latest is not None:
            self._latest[device_id] = latest
        old = self._fleet_of.get(device_id)
        if old != fleet_id:
            if old:
                self._fleet_members.get(old, set()).discard(device_id)
            self._fleet_of[device_id] = fleet_id
            if fleet_id:
                self._fleet_members.setdefault(fleet_id, set()).add(device_id)

    def _on_commit(self, event: CommitEvent) -> None:
        for device_id, (fleet_id, latest) in event.latest.items():
            self._remember(device_id, fleet_id, latest)
        if not event.rows:
            return
        if self.live.subscribers:
            fleet_of = self._fleet_of
            self.live.publish(event.rows, lambda row: (row[0], row[FLEET] or fleet_of[row[0]]))

    def _alert_worker(self) -> None:
        assert self.alerts is not None
        while True:
            event = self._alert_queue.get()
            if event is None:
                return
            try:
                self.alerts.observe(
                    event.rows,
                    {d: f for d, (f, _) in event.latest.items()},
                    int(event.committed_at * 1000),
                )
            except Exception as exc:  # one bad evaluation must not end alerting
                log.error("alert evaluation failed", error=repr(exc))

    def _emit_alerts(self, events: list[AlertEvent]) -> None:
        # Called on the alert thread (or the loop, for silence): publish on the loop.
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            self._loop.call_soon_threadsafe(
                self.alert_hub.publish, events, lambda e: (e.device_id, e.fleet_id)
            )

    # -- queries ----------------------------------------------------------------------------

    def latest(self, device_ids: Sequence[str], fleet_id: str) -> list[Row]:
        """Latest reading of each named device (or of each device of ``fleet_id``; with both,
        the named devices of that fleet). Unknown devices are left out."""
        if not device_ids and not fleet_id:
            raise ValidationError("device_ids", "give device_ids or fleet_id")
        if len(device_ids) > MAX_LATEST_IDS:
            raise ValidationError(
                "device_ids", f"must have at most {MAX_LATEST_IDS} entries, got {len(device_ids)}"
            )
        if device_ids:
            wanted: Sequence[str] = list(dict.fromkeys(device_ids))
            if fleet_id:
                wanted = [d for d in wanted if self._fleet_of.get(d) == fleet_id]
        else:
            wanted = sorted(self._fleet_members.get(fleet_id, ()))
        return [self._latest[d] for d in wanted if d in self._latest]

    def known(self, device_id: str) -> bool:
        return device_id in self._fleet_of

    async def query_range(
        self, device_id: str, start_ms: int, end_ms: int, resolution_ms: int, limit: int
    ) -> RangeResult:
        """Readings of a device in [start_ms, end_ms), raw (resolution 0) or as buckets of
        ``resolution_ms`` merged with stored downsampled history, at most ``limit``."""
        if not self.known(device_id):
            raise NotFoundError(f"device_id: no readings from device {device_id!r}")
        if resolution_ms <= 0:
            rows = await asyncio.to_thread(
                self.store.query_raw, device_id, start_ms, end_ms, limit + 1
            )
            return RangeResult(rows[:limit], [], len(rows) > limit)

        def buckets() -> list[Bucket]:
            raw = self.store.query_rows_for_buckets(device_id, start_ms, end_ms)
            fresh = aggregate(raw, resolution_ms)
            stored = self.store.query_buckets(device_id, start_ms, end_ms)
            return rebucket(fresh + stored, resolution_ms)

        merged = await asyncio.to_thread(buckets)
        return RangeResult([], merged[:limit], len(merged) > limit)

    # -- streams ----------------------------------------------------------------------------

    def watch_live(self, device_ids: Sequence[str], fleet_id: str) -> Subscription[Row]:
        """Subscribe to readings as they are stored (call :meth:`unwatch` when done)."""
        return self.live.subscribe(device_ids, fleet_id)

    def watch_alerts(self, device_ids: Sequence[str], fleet_id: str) -> Subscription[AlertEvent]:
        """Subscribe to alert transitions."""
        return self.alert_hub.subscribe(device_ids, fleet_id)

    def firing_alerts(self) -> list[AlertEvent]:
        return self.alerts.firing() if self.alerts is not None else []

    # -- maintenance ------------------------------------------------------------------------

    async def maintain(self, now_ms: int | None = None) -> MaintenanceReport:
        """One retention pass: downsample and delete raw readings older than the raw
        retention, delete buckets older than the bucket retention."""
        now_ms = self.now_ms() if now_ms is None else now_ms
        opts = self.options
        report = MaintenanceReport()
        if opts.raw_retention_s > 0:
            cutoff = now_ms - int(opts.raw_retention_s * 1000)
            width = int(opts.downsample_resolution_s * 1000)
            devices = list(self._fleet_of)
            # Small jobs, so that ingestion commits between them.
            for start in range(0, len(devices), 64):
                chunk = devices[start : start + 64]

                def job(
                    store: TelemetryStore,
                    states: dict[str, DeviceSequence],
                    chunk: list[str] = chunk,
                ) -> tuple[int, int]:
                    folded = deleted = 0
                    for device_id in chunk:
                        st = states.get(device_id)
                        if st is None:
                            continue
                        if width > 0:
                            folded += store.downsample(device_id, cutoff, st.acked, width)
                        else:
                            deleted += store.delete_raw(device_id, cutoff, st.acked)
                    return folded, deleted

                folded, deleted = await self.ingestor.run_job(job)  # type: ignore[arg-type]
                report.downsampled += folded
                report.deleted_raw += deleted
        if opts.bucket_retention_s > 0:
            cutoff = now_ms - int(opts.bucket_retention_s * 1000)
            report.deleted_buckets = await self.ingestor.run_job(
                lambda store, _states: store.delete_buckets(cutoff)
            )
        return report

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.maintenance_interval_s)
            try:
                report = await self.maintain()
                if report.downsampled or report.deleted_raw or report.deleted_buckets:
                    log.info("retention", **vars(report))
            except Exception as exc:
                log.error("retention failed", error=repr(exc))

    async def _silence_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.silence_check_interval_s)
            if self.alerts is not None:
                self.alerts.check_silence(self.now_ms())
