"""Builds `POST /transaction`'s endpoint from the settings and keeps it fed (the Django side).

* The ledger: `fraud.services.transaction_record`, `fraud.selectors.transaction_find` and
  `transaction_answer`, run on a small dedicated pool of threads that keep their database
  connections (`_in_thread`).
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
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from accounts.models import Tenant
from core.conf import sentinel_settings
from core.config_version import config_version_read
from fraud import metrics
from fraud.breaker import fraud_breaker
from fraud.engine.client import BrainClient
from fraud.engine.endpoint import ASGIApp, LedgerConflict, Stored, Thresholds, TransactionEndpoint
from fraud.engine.history import HistoryStore, MemoryHistory, RedisHistory
from fraud.engine.transaction import History, Reason, TransactionIn
from gateway.engine.proxy import Proxy
from gateway.engine.resp import RespClient, gateway_redis_client

logger = logging.getLogger("sentinel.fraud")

REFRESH_SECONDS = 0.5
T = TypeVar("T")
_NEVER_LOADED = object()


# The ledger's threads. Their PostgreSQL connections stay open between requests (a new one per
# ORM call, DB_CONN_MAX_AGE's default of 0, cost more than the rest of a request: bench figures in
# the report); a connection that failed is closed so the next call opens a fresh one. Four threads
# bound this process's connections, and a find or a record takes ~1 ms, so they are not the limit.
LEDGER_THREADS = 4
_ledger_executor: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _ledger_executor
    if _ledger_executor is None:
        _ledger_executor = ThreadPoolExecutor(max_workers=LEDGER_THREADS, thread_name_prefix="fraud-ledger")
    return _ledger_executor


def _executor_stop() -> None:
    global _ledger_executor
    if _ledger_executor is not None:
        _ledger_executor.shutdown(wait=False)
        _ledger_executor = None


def _in_thread(function: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """`function` (ORM calls) on the ledger's threads, keeping their connections."""

    def keeping_the_connection(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        except (OperationalError, InterfaceError):
            connection.close()  # dead or broken: the thread's next call connects again
            raise

    async def call(*args: Any, **kwargs: Any) -> T:
        job = functools.partial(keeping_the_connection, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(_executor(), job)

    return call


def _find(*, tenant_id: int, transaction_id: str) -> Stored | None:
    from fraud.selectors import transaction_answer, transaction_find

    row = transaction_find(tenant_id=tenant_id, transaction_id=transaction_id)
    return None if row is None else Stored(row.request_hash, cast(dict[str, Any], transaction_answer(row)))


def _record(**fields: Any) -> tuple[dict[str, Any], bool]:
    from fraud.selectors import transaction_answer
    from fraud.services import TransactionConflict, transaction_record

    try:
        row, created = transaction_record(**fields)
    except TransactionConflict:
        raise LedgerConflict(fields["tx"].transaction_id) from None
    return cast(dict[str, Any], transaction_answer(row)), created


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


_load_find = _in_thread(_find)
_load_record = _in_thread(_record)
_load_thresholds = _in_thread(thresholds_load)
_load_version = sync_to_async(config_version_read, thread_sensitive=False)


class DjangoLedger:
    """`fraud.engine.endpoint.Ledger` on the ORM."""

    async def find(self, *, tenant_id: int, transaction_id: str) -> Stored | None:
        return await _load_find(tenant_id=tenant_id, transaction_id=transaction_id)

    async def record(
        self,
        *,
        tenant_id: int,
        tx: TransactionIn,
        decision: str,
        scored: bool,
        score: float | None,
        reasons: Sequence[Reason],
        model_version: str,
        history: History,
        created_at: datetime,
    ) -> tuple[dict[str, Any], bool]:
        return await _load_record(
            tenant_id=tenant_id, tx=tx, decision=decision, scored=scored, score=score, reasons=reasons,
            model_version=model_version, history=history, created_at=created_at,
        )  # fmt: skip


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
        # The breaker and history need the server's loop for Redis: placeholders until start().
        self.brain = self._brain(None)
        self.endpoint = TransactionEndpoint(
            next_app,
            jwt_verifier=proxy.authenticator.jwt_verifier,
            keys=proxy.authenticator.keys,
            tenants=lambda: proxy.state.tenants,
            thresholds=self.thresholds.get,
            ledger=DjangoLedger(),
            history=MemoryHistory(),
            brain=self.brain,
            recorded=recorded,
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
        _executor_stop()
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
