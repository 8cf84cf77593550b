"""A `RequestRecord` as a row of `observability_requestlog`: the columns, in the order COPY and
`bulk_create` take them, and the conversion (done by the writer, per batch, never on the request).

Every text is cut to its column's length and NUL characters are removed (PostgreSQL's text types
cannot hold them; a path may carry one, percent-decoded): a batch must never fail on one row's
content, or its 999 neighbours would wait behind it.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.engine.proxy import RequestRecord
from observability.models import RequestLog

Row = tuple[Any, ...]

COLUMNS: tuple[str, ...] = (
    "time", "correlation_id", "trace_id", "tenant_uuid", "tenant_key", "tier", "principal", "route_id",
    "route", "method", "path", "status", "decision", "reason", "latency_ms", "upstream",
    "upstream_latency_ms", "client_ip", "user_agent", "bytes_in", "bytes_out", "breaker_transition",
)  # fmt: skip
# Their PostgreSQL types, in the same order, for a binary COPY (`backends.PostgresBackend`), which
# sends each value in its column's own binary format and so must name the types; the model's
# (`RequestLog`'s db_type on PostgreSQL) must match, which a test checks.
PG_TYPES: tuple[str, ...] = (
    "timestamptz", "varchar", "varchar", "uuid", "varchar", "varchar", "varchar", "int4",
    "varchar", "varchar", "varchar", "int2", "varchar", "varchar", "float8", "varchar",
    "float8", "inet", "varchar", "int8", "int8", "varchar",
)  # fmt: skip

# Every text column's max_length, from the model (the migration's varchar(n)).
_MAX = {field.name: int(field.max_length) for field in RequestLog._meta.fields if field.max_length}
# A record's cost in memory beyond the characters of its path, user agent and correlation id:
# tracemalloc measured 620 bytes for the instance, its attribute dict, its floats and a 32-character
# trace id (CPython 3.11); a record made by the proxy also holds its own client address, tenant
# key and the three texts' headers (~50 bytes each). Rounded up. (Measured when the record was a
# dataclass; as a named tuple it holds less, so the bound errs on the safe side.)
RECORD_OVERHEAD_BYTES = 1000
# The writer converts and copies a batch this many rows at a time, letting the event loop run the
# proxy's requests in between: a whole batch of 1,000 rows held the loop ~7 ms (~3.5 µs a row to
# convert, ~4 µs to COPY), which every request arriving meanwhile waited out.
ROWS_PER_TURN = 100


def record_bytes(record: RequestRecord) -> int:
    """An estimate of the memory `record` holds (bytes), for the queue's byte bound: the fixed
    overhead plus the variable-length texts (one byte a character: they are ASCII or latin-1)."""
    return RECORD_OVERHEAD_BYTES + len(record.path) + len(record.user_agent) + len(record.correlation_id)


def record_row(record: RequestRecord) -> Row:
    """The row for `record`, in `COLUMNS` order."""
    return (
        datetime.fromtimestamp(record.arrived_at, tz=UTC),
        _text(record.correlation_id, "correlation_id"),
        _text(record.trace_id, "trace_id"),
        record.tenant_uuid,
        _text(record.tenant_key or "", "tenant_key"),
        _text(record.tier or "", "tier"),
        _text(record.principal, "principal"),
        record.route_id,
        _text(record.route or "", "route"),
        _text(record.method, "method"),
        _text(record.path, "path"),
        record.status,
        record.decision,
        _text(record.reason, "reason"),
        record.latency_ms,
        _text(record.upstream or "", "upstream"),
        record.upstream_latency_ms,
        ip_or_none(record.client_ip),
        _text(record.user_agent, "user_agent"),
        record.bytes_in,
        record.bytes_out,
        _text(record.breaker_transition, "breaker_transition"),
    )


async def records_rows(records: Sequence[RequestRecord]) -> list[Row]:
    """`record_row` of each record, in order, letting the event loop run its other tasks (the
    proxy's requests) after every `ROWS_PER_TURN` rows."""
    rows = []
    for done, record in enumerate(records, 1):
        rows.append(record_row(record))
        if done % ROWS_PER_TURN == 0:
            await asyncio.sleep(0)
    return rows


def _text(value: str, column: str) -> str:
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value[: _MAX[column]]


def ip_or_none(address: str) -> str | None:
    """`address` if it is an IP address (the column is `inet`), else None (the ASGI server may
    report no peer, which the proxy records as "unknown").

    The answers for the last `_KNOWN_ADDRESSES_MAX` distinct addresses are kept: clients come
    back, and parsing one costs more than the rest of its row (~1.4 µs)."""
    if address in _known_addresses:
        return _known_addresses[address]
    try:
        ipaddress.ip_address(address)
        answer: str | None = address
    except ValueError:
        answer = None
    if len(_known_addresses) >= _KNOWN_ADDRESSES_MAX:
        _known_addresses.clear()
    _known_addresses[address] = answer
    return answer


_KNOWN_ADDRESSES_MAX = 10_000
_known_addresses: dict[str, str | None] = {}
