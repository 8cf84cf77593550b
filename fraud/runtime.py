"""Builds `POST /transaction`'s endpoint from the settings and keeps it fed (the Django side).

* The ledger: `fraud.services.transactions_record` and `fraud.selectors.transactions_by_key`,
  each a group commit (`Batcher`) on a thread of its own that keeps its database connection;
  with PostgreSQL, the records are `fraud.services.transactions_record_async`, a group commit on
  the event loop (`AsyncBatcher`) on a connection of their own.
* The tenants' thresholds: loaded once, reloaded when `core.config_version` moves (accounts
  bumps it on every tenant save, thresholds included), polled every REFRESH_SECONDS like
  `gateway.runtime`; a tenant without thresholds of its own gets SENTINEL_FRAUD's defaults.
* The brain client, its breaker (`fraud.breaker`), the history store (Redis or memory) and the
  metrics (`fraud.metrics`).

The auth parts and the tenant directory are the proxy's (`sentinel_site.asgi`), so one refresh
feeds both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar, cast

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from accounts.models import Tenant
from core.conf import sentinel_settings
from core.config_version import config_version_read
from core.db import postgres_connect_kwargs
from fraud import metrics
from fraud.breaker import fraud_breaker
from fraud.engine.admission import FraudLimits, TenantAdmission
from fraud.engine.client import BrainClient
from fraud.engine.endpoint import ASGIApp, LedgerConflict, Stored, Thresholds, TransactionEndpoint
from fraud.engine.history import HistoryStore, MemoryHistory, RedisHistory
from fraud.engine.transaction import LedgerEntry
from fraud.selectors import transaction_answer, transaction_keys_stored, transactions_by_key
from fraud.services import TransactionConflict, transactions_record, transactions_record_async
from gateway.engine.proxy import Proxy
from gateway.engine.resp import RespClient, gateway_redis_client

logger = logging.getLogger("sentinel.fraud")

REFRESH_SECONDS = 0.5
_NEVER_LOADED = object()


# The ledger's group commit (`Batcher`): a request's find or record waits in a queue; one thread
# per kind takes every request waiting when it is free and serves them with one query (finds) or
# one transaction (records, `fraud.services.transactions_record`). Under load a batch holds the
# requests that arrived while the last one was written, so the database work per transaction
# shrinks as the rate grows, with no timer adding latency when the process is quiet (bench/fraud:
# one thread-pool call per request cost ~2.5 ms of CPU and capped a process at ~330 tx/s).
MAX_BATCH = 256
In = TypeVar("In")
Out = TypeVar("Out")


class Batcher(Generic[In, Out]):
    """Calls `function(items) -> outcomes` (one per item, in order; an outcome that is an
    exception is raised to its caller alone) on a thread of its own, for every item waiting.

    The thread keeps its database connection between batches; one that failed is closed, so the
    next batch connects again. An exception from `function` fails every item of its batch."""

    def __init__(self, name: str, function: Callable[[list[In]], list[Out | BaseException]]) -> None:
        self.name = name
        self.function = function
        self._queue: queue.SimpleQueue[tuple[In, asyncio.Future[Out]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def __call__(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.put((item, future))
        if self._thread is None:
            self._start()
        return await future

    def stop(self) -> None:
        """Serves what is queued, then ends the thread (waits up to 5 s)."""
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(5)
            self._thread = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                ending = False
                while len(batch) < MAX_BATCH:
                    try:
                        waiting = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if waiting is None:
                        ending = True
                        break
                    batch.append(waiting)
                self._run(batch)
                if ending:
                    return
        finally:
            connection.close()

    def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            outcomes = self.function([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch, who answer 500
            if isinstance(exc, OperationalError | InterfaceError):
                connection.close()  # dead or broken: the next batch connects again
            outcomes = [exc] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.get_loop().call_soon_threadsafe(_settle, future, outcome)


class AsyncBatcher(Generic[In, Out]):
    """`Batcher` on the event loop: awaits `function(items) -> outcomes` (one per item, in order;
    an outcome that is an exception is raised to its caller alone) for every item waiting, one call
    at a time, up to MAX_BATCH items each. No thread: the caller's loop runs the batches (a thread
    of its own, taking the GIL back from the loop after every round trip to the database, waited
    up to the interpreter's switch interval each time: bench/fraud measured the ledger's batches
    at ~8 ms for 4 rows with ~2 ms of work). An exception from `function` fails every item of its
    batch."""

    def __init__(self, name: str, function: Callable[[list[In]], Awaitable[list[Out | BaseException]]]) -> None:
        self.name = name
        self.function = function
        self._waiting: list[tuple[In, asyncio.Future[Out]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=self.name)
        return await future

    async def stop(self) -> None:
        """Serves what is queued (waits up to 5 s)."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 5)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    outcomes = await self.function([item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch, who answer 500
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    _settle(future, outcome)
        finally:
            self._task = None


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # the request was cancelled (client gone, server stopping)
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _find_many(keys: list[tuple[int, str]]) -> list[Stored | BaseException | None]:
    # Almost every transaction is new: an index-only query says so; replays' rows are loaded.
    stored = transaction_keys_stored(keys)
    rows = transactions_by_key(stored) if stored else {}
    return [
        None
        if (row := rows.get(key)) is None
        else Stored(row.request_hash, cast(dict[str, Any], transaction_answer(row)))
        for key in keys
    ]


def _record_many(entries: list[LedgerEntry]) -> list[tuple[dict[str, Any], bool] | BaseException]:
    results: list[tuple[dict[str, Any], bool] | BaseException] = []
    for outcome in transactions_record(entries=entries):
        if isinstance(outcome, TransactionConflict):
            results.append(LedgerConflict(outcome.existing.transaction_id))
        else:
            row, created = outcome
            results.append((cast(dict[str, Any], transaction_answer(row)), created))
    return results


def thresholds_load() -> dict[str, Thresholds]:
    """Every tenant's uuid → (pk, review, decline), a tenant's own thresholds or the defaults."""
    conf = sentinel_settings.fraud
    rows = Tenant.objects.values_list("uuid", "pk", "fraud_review_threshold", "fraud_decline_threshold")
    return {
        str(uuid): Thresholds(
            pk,
            conf.REVIEW_THRESHOLD if review is None else review,
            conf.DECLINE_THRESHOLD if decline is None else decline,
        )
        for uuid, pk, review, decline in rows
    }


_load_thresholds = sync_to_async(thresholds_load, thread_sensitive=False)
_load_version = sync_to_async(config_version_read, thread_sensitive=False)


class PostgresRecords:
    """The ledger's records on PostgreSQL: `fraud.services.transactions_record_async` on a
    connection of the web process's own (made on first use, made again after it broke: a batch
    whose connection broke is tried once more on a new one), a group commit on the event loop
    (`AsyncBatcher`)."""

    def __init__(self, database: Mapping[str, Any]) -> None:
        self.connect_kwargs = postgres_connect_kwargs(database, application_name="sentinel-fraud-ledger")
        self.batches: AsyncBatcher[LedgerEntry, tuple[dict[str, Any], bool]] = AsyncBatcher(
            "fraud-ledger-record", self._record_many
        )
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def __call__(self, entry: LedgerEntry) -> tuple[dict[str, Any], bool]:
        return await self.batches(entry)

    async def stop(self) -> None:
        await self.batches.stop()
        await self._close()

    async def _connected(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None or self._connection.closed or self._connection.broken:
            self._connection = await psycopg.AsyncConnection.connect(**self.connect_kwargs)
        return self._connection

    async def _close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(psycopg.Error, OSError):
                await connection.close()

    async def _record_many(self, entries: list[LedgerEntry]) -> list[tuple[dict[str, Any], bool] | BaseException]:
        try:
            outcomes = await transactions_record_async(connection=await self._connected(), entries=entries)
        except psycopg.OperationalError:
            # The connection broke (PostgreSQL restarted, a proxy cut it): once more on a new one.
            # Safe, the insert being idempotent: rows a lost attempt stored come back as replays.
            await self._close()
            outcomes = await transactions_record_async(connection=await self._connected(), entries=entries)
        return [
            LedgerConflict(outcome.existing.transaction_id)
            if isinstance(outcome, TransactionConflict)
            else cast(tuple[dict[str, Any], bool] | BaseException, outcome)
            for outcome in outcomes
        ]


class DjangoLedger:
    """`fraud.engine.endpoint.Ledger`: finds on the ORM, a group commit on a thread of its own;
    records the same on SQLite, and on the event loop with PostgreSQL (`PostgresRecords`)."""

    def __init__(self) -> None:
        self.finds: Batcher[tuple[int, str], Stored | None] = Batcher("fraud-ledger-find", _find_many)
        self.records: Callable[[LedgerEntry], Awaitable[tuple[dict[str, Any], bool]]]
        if connection.vendor == "postgresql":
            self.records = PostgresRecords(settings.DATABASES["default"])
        else:
            self.records = Batcher("fraud-ledger-record", _record_many)

    async def find(self, *, tenant_id: int, transaction_id: str) -> Stored | None:
        return await self.finds((tenant_id, transaction_id))

    async def record(self, entry: LedgerEntry) -> tuple[dict[str, Any], bool]:
        return await self.records(entry)

    async def stop(self) -> None:
        await asyncio.to_thread(self.finds.stop)
        if isinstance(self.records, PostgresRecords):
            await self.records.stop()
        else:
            await asyncio.to_thread(cast(Batcher[LedgerEntry, Any], self.records).stop)


def recorded(decision: str, scored: bool) -> None:
    metrics.fraud_decisions.labels(decision=decision).inc()
    if not scored:
        metrics.fraud_fail_open.inc()


class FraudRuntime:
    """The endpoint and what it needs, started and stopped by the ASGI lifespan."""

    def __init__(self, proxy: Proxy, next_app: ASGIApp) -> None:
        self.proxy = proxy
        self.thresholds: dict[str, Thresholds] = {}
        self.version: object = _NEVER_LOADED
        self.redis: RespClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.ledger = DjangoLedger()
        # The breaker and history need the server's loop for Redis: placeholders until start().
        self.brain = self._brain(None)
        self.endpoint = TransactionEndpoint(
            next_app,
            jwt_verifier=proxy.authenticator.jwt_verifier,
            keys=proxy.authenticator.keys,
            tenants=lambda: proxy.state.tenants,
            thresholds=self.thresholds.get,
            ledger=self.ledger,
            history=MemoryHistory(),
            brain=self.brain,
            recorded=recorded,
            # The proxy's tier shedding and pressure, the fraud settings' burst bucket.
            admission=TenantAdmission(
                FraudLimits(sentinel_settings.fraud.BURST_CAPACITY, sentinel_settings.fraud.REFILL_RATE),
                tiers=proxy.admission,
                pressure=proxy.pressure,
                on_refusal=metrics.refusal_count,
            ),
        )

    @staticmethod
    def _brain(redis: RespClient | None) -> BrainClient:
        conf = sentinel_settings.fraud
        return BrainClient(
            conf.BRAIN_ADDRESS,
            timeout_ms=conf.BRAIN_TIMEOUT_MS,
            breaker=fraud_breaker(redis),
            observe=metrics.brain_latency_observe,
            on_breaker_unavailable=metrics.fraud_breaker_unavailable.inc,
        )

    async def start(self) -> None:
        if settings.REDIS_URL:
            # Clients of the server's loop, made here (the lifespan runs in it).
            self.redis = gateway_redis_client(settings.REDIS_URL)
            history: HistoryStore = RedisHistory(self.redis, f"{settings.CACHE_KEY_PREFIX}:fraud:")
            self.brain = self.endpoint.brain = self._brain(self.redis)
            self.endpoint.history = history
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever(), name="fraud-config-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.brain.close()
        await self.ledger.stop()
        if self.redis is not None:
            await self.redis.aclose()

    async def refresh(self) -> bool:
        """Reloads the thresholds when the config version moved; True when it did."""
        try:
            version = await _load_version()
        except Exception:  # a dead cache must not stop scoring with the last thresholds
            logger.warning("fraud config version unavailable", exc_info=True)
            if self.version is not _NEVER_LOADED:
                return False
            version = None
        if version == self.version:
            return False
        try:
            loaded = await _load_thresholds()
        except Exception:  # the database is down or not migrated yet: try again next tick
            logger.warning("fraud thresholds could not be loaded; retrying", exc_info=True)
            return False
        # Swapped in place: the endpoint holds this dict's bound .get.
        self.thresholds.clear()
        self.thresholds.update(loaded)
        self.version = version
        return True

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            await self.refresh()
