"""Where a batch of rows goes: PostgreSQL by COPY on the writer's own connection, or any other
database through the ORM's `bulk_create` in a thread.

Both take a batch id and the rows, and either write the batch once or raise. `write` returns False
when the batch had already been written by an earlier attempt whose answer was lost.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any, Protocol

import psycopg
from asgiref.sync import sync_to_async
from django.db import close_old_connections
from psycopg.types.net import AddressBinaryDumper
from psycopg.types.uuid import UUIDBinaryDumper

from observability.request_log import partitions
from observability.request_log.rows import COLUMNS, PG_TYPES, ROWS_PER_TURN, Row

logger = logging.getLogger("sentinel.request_log")

_COLUMN_LIST = ", ".join(f'"{column}"' for column in COLUMNS)
# Binary, not text: the text format spelt out every row's timestamp (datetime.isoformat) and floats
# in the proxy's process, ~25,000 CPU instructions a row, a few % of a proxied request's (callgrind,
# issue 13); the binary format packs them as they are.
_COPY = f'COPY "{partitions.TABLE}" ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)'
_LEDGER_INSERT = f'INSERT INTO "{partitions.LEDGER}" ("batch_id", "rows") VALUES (%s, %s) ON CONFLICT DO NOTHING'  # noqa: S608


class Backend(Protocol):
    async def write(self, batch_id: uuid.UUID, rows: list[Row]) -> bool: ...

    async def prepare(self, days: list[date]) -> None: ...

    async def close(self) -> None: ...


class PermanentWriteError(Exception):
    """The database refused the batch's content: retrying the same rows cannot succeed."""


class _UuidTextBinaryDumper(UUIDBinaryDumper):
    """A `uuid` column's binary value from a row's text (rows keep the tenant's uuid as text, as
    the ORM backend takes it). Registered for the oid only: used by the binary COPY alone."""

    def dump(self, obj: str) -> bytes:  # type: ignore[override]
        return _uuid_octets(obj)


class _InetTextBinaryDumper(AddressBinaryDumper):
    """An `inet` column's binary value from a row's text (an address `rows.ip_or_none` checked)."""

    def dump(self, obj: str) -> bytes:  # type: ignore[override]
        return _inet_octets(obj)


# Clients and tenants come back: each text is parsed once (bounded).
@functools.lru_cache(maxsize=4096)
def _uuid_octets(text: str) -> bytes:
    return uuid.UUID(text).bytes


@functools.lru_cache(maxsize=4096)
def _inet_octets(text: str) -> bytes:
    return bytes(AddressBinaryDumper(ipaddress.IPv4Address).dump(ipaddress.ip_address(text)) or b"")


class PostgresBackend:
    """COPY into the partitioned table, on a psycopg 3 connection of the writer's own (Django's
    connections belong to threads, and a COPY holds its connection for the whole batch).

    Exactly once: the batch id goes into a ledger table (`partitions.LEDGER`, primary key) in the
    batch's own transaction, before the COPY. A COMMIT that reached the server but whose answer
    was lost with the connection looks like a failure; the retry's ledger insert then finds the id
    (or waits for the first transaction to end, if the server has not finished it) and the batch
    is not written twice. Days whose partition this process has not seen are created first; a row
    of a day without one still lands in the default partition.
    """

    def __init__(self, connect_kwargs: Mapping[str, Any]) -> None:
        self.connect_kwargs = dict(connect_kwargs)
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._days: set[date] = set()

    async def write(self, batch_id: uuid.UUID, rows: list[Row]) -> bool:
        await self.prepare(sorted({row[0].date() for row in rows}))
        connection = await self._connect()
        try:
            async with connection.transaction():
                cursor = connection.cursor()
                await cursor.execute(_LEDGER_INSERT, (batch_id, len(rows)))
                if cursor.rowcount == 0:
                    return False  # an earlier attempt wrote it, and its answer was lost
                async with cursor.copy(_COPY) as copy:
                    copy.set_types(PG_TYPES)
                    for done, row in enumerate(rows, 1):
                        await copy.write_row(row)
                        if done % ROWS_PER_TURN == 0:
                            await asyncio.sleep(0)  # see ROWS_PER_TURN
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise PermanentWriteError(str(exc)) from exc
        except BaseException:
            await self.close()  # its state is unknown: the next attempt starts on a fresh one
            raise
        return True

    async def prepare(self, days: list[date]) -> None:
        """Makes sure `days` have their partitions (once per day and process). A failure is only
        logged: the default partition takes the rows meanwhile."""
        missing = [day for day in days if day not in self._days]
        if not missing:
            return
        try:
            connection = await self._connect()
        except (psycopg.Error, OSError):
            return  # the database is unreachable: the writer's own attempt will say so
        try:
            async with connection.transaction():
                await connection.execute(partitions.LOCK)
                existing = {name for (name,) in await (await connection.execute(partitions.LIST_PARTITIONS)).fetchall()}
                for day in missing:
                    if partitions.partition_name(day) not in existing:
                        for statement in partitions.create_partition_statements(day):
                            await connection.execute(statement.encode())
        except (psycopg.Error, OSError) as exc:
            logger.warning("request log: could not create the partitions of %s (%r)", missing, exc)
            await self.close()
            return
        self._days.update(missing)

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None or self._connection.closed:
            connection = await psycopg.AsyncConnection.connect(**self.connect_kwargs)
            # By oid only (no Python type): what the binary COPY's set_types looks up.
            connection.adapters.register_dumper(None, _UuidTextBinaryDumper)
            connection.adapters.register_dumper(None, _InetTextBinaryDumper)
            self._connection = connection
        return self._connection


class OrmBackend:
    """`bulk_create` through the services, in a worker thread (SQLite has no COPY). SQLite commits
    locally or raises: no answer can be lost between the two, so no ledger is needed."""

    async def write(self, batch_id: uuid.UUID, rows: list[Row]) -> bool:
        await sync_to_async(_insert, thread_sensitive=False)(rows)
        return True

    async def prepare(self, days: list[date]) -> None:
        return None

    async def close(self) -> None:
        return None


def _insert(rows: list[Row]) -> None:
    from observability.services import request_log_rows_insert

    try:
        request_log_rows_insert(rows=rows)
    finally:
        close_old_connections()
