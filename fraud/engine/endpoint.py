"""`POST /transaction` and `POST /api/v1/transactions` (SPEC 6): a plain ASGI app in front of the
proxy, no Django on its path. Every other request goes to `next_app` untouched.

Flow: body (<= 16 KiB) → credentials → JSON → validation → tenant → admission (burst bucket,
shedding: `fraud.engine.admission`; a refusal ends here) → history (and whether this
transaction id was recorded in the last 24 h) → if it was: ledger find (replay or 409) → brain
(fail-open on BrainUnavailable) → decision → ledger record (a concurrent twin, or an older
replay, may be there already: its answer, or 409) → if this request created the row: the
`recorded` hook → the answer sent → then, if it created the row, the history add.

Credentials are checked before the body is parsed, so a caller without them learns nothing about
the body's shape. Errors are SPEC 7's JSON (`core.errors.error_json`); client input never 500s.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Protocol

from core.correlation import accept_correlation_id, current_correlation_id
from core.errors import OWN_ANSWER_HEADERS, error_json
from core.strict_json import DuplicateKey, unique_keys
from fraud.engine.admission import Admission, AdmitAll
from fraud.engine.client import BrainClient
from fraud.engine.history import HistoryStore, HistoryUnavailable
from fraud.engine.transaction import BrainUnavailable, History, LedgerEntry, Reason, TransactionIn, decide
from fraud.engine.validation import InvalidTransaction, parse_transaction
from gateway.engine.auth import ApiKeyResolver, AuthFailure, JwtVerifier, TenantDirectory, TenantInfo

__all__ = ["BODY_LIMIT", "PATHS", "Ledger", "LedgerConflict", "Thresholds", "TransactionEndpoint"]

logger = logging.getLogger("sentinel.fraud")
# The same JSON line per request as Django's AccessLogMiddleware: this app answers before Django.
access_logger = logging.getLogger("sentinel.access")

BODY_LIMIT: Final = 16 * 1024
PATHS: Final = frozenset({"/transaction", "/api/v1/transactions", "/api/v1/transactions/"})
SCOPE: Final = "transactions:write"

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class LedgerConflict(Exception):
    """The tenant already has this transaction_id with another request hash (409)."""


@dataclass(frozen=True)
class Stored:
    """A ledger row as the endpoint needs it: its request hash and its JSON answer."""

    request_hash: str
    answer: dict[str, Any]


class Ledger(Protocol):
    """The Django side's ledger (fraud.runtime adapts fraud.services / fraud.selectors)."""

    async def find(self, *, tenant_id: int, transaction_id: str) -> Stored | None: ...

    async def record(self, entry: LedgerEntry) -> tuple[dict[str, Any], bool]:
        """(the row's answer, created). Raises LedgerConflict."""
        ...


@dataclass(frozen=True)
class Thresholds:
    """A tenant as scoring needs it: its primary key and its review/decline thresholds."""

    tenant_id: int
    review: float
    decline: float


# (decision, scored): called once per row this process created.
RecordedHook = Callable[[str, bool], None]


def _ignore(decision: str, scored: bool) -> None:
    return None


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _reject_constant(name: str) -> Any:
    raise _Refusal(400, "invalid_json", f"{name} is not a number JSON allows.")


class TransactionEndpoint:
    """The ASGI app. `tenants` and `thresholds` are called per request: the runtime swaps them."""

    def __init__(
        self,
        next_app: ASGIApp,
        *,
        jwt_verifier: JwtVerifier,
        keys: ApiKeyResolver,
        tenants: Callable[[], TenantDirectory],
        thresholds: Callable[[str], Thresholds | None],
        ledger: Ledger,
        history: HistoryStore,
        brain: BrainClient,
        recorded: RecordedHook = _ignore,
        admission: Admission | None = None,
    ) -> None:
        self.next_app = next_app
        self.jwt_verifier = jwt_verifier
        self.keys = keys
        self.tenants = tenants
        self.thresholds = thresholds
        self.ledger = ledger
        self.history = history
        self.brain = brain
        self.recorded = recorded
        self.admission = admission or AdmitAll()

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        # Not a coroutine function: a request for another path gets the next app's own awaitable,
        # so this layer is not in its await chain (each resumption of the proxy's request passed
        # through every coroutine frame above it; issue 13).
        if scope["type"] != "http" or scope["path"] not in PATHS or scope["method"] != "POST":
            if scope["type"] == "http" and scope["path"] == "/transaction":
                # /api/v1/transactions' GET is the ledger's list (Django); /transaction is only this.
                body = error_json("method_not_allowed", f"Method {scope['method']!r} is not allowed here.")
                return _respond(send, 405, body, [(b"allow", b"POST"), _correlation_header(scope)])
            return self.next_app(scope, receive, send)
        return self._serve_transaction(scope, receive, send)

    async def _serve_transaction(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # SPEC 2.1's correlation id, as every other answer has it: kept when valid, else made; on
        # the answer, and on every log line written while serving it (core.jsonlog reads it).
        correlation = _correlation_header(scope)
        token = current_correlation_id.set(correlation[1].decode())
        try:
            await self._serve(scope, receive, send, correlation)
        finally:
            current_correlation_id.reset(token)

    async def _serve(self, scope: dict[str, Any], receive: Any, send: Any, correlation: tuple[bytes, bytes]) -> None:
        started = time.perf_counter()
        after: list[Callable[[], Awaitable[None]]] = []
        try:
            status, body, headers = await self.handle(scope, receive, after)
        except _Refusal as refusal:
            status, body, headers = refusal.status, error_json(refusal.code, refusal.message, refusal.details), []
        except Exception:  # a bug or a dead database: SPEC 7's JSON all the same, and the traceback logged
            logger.exception("POST %s failed", scope["path"])
            status, body, headers = 500, error_json("internal_error", "The transaction could not be processed."), []
        try:
            await _respond(send, status, body, [*headers, correlation])
        finally:
            # What the answer need not wait for (the history's add), done once it is sent, or
            # once sending it failed: the transaction is in the ledger either way.
            for step in after:
                await step()
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        client = scope.get("client") or ("", 0)
        access_logger.info(
            "POST %s %s", scope["path"], status,
            extra={"method": "POST", "path": scope["path"], "status": status, "duration_ms": elapsed_ms,
                   "client_ip": client[0]},
        )  # fmt: skip

    async def handle(
        self, scope: dict[str, Any], receive: Any, after: list[Callable[[], Awaitable[None]]] | None = None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """(status, body, headers) of the request's answer. Steps to run once it is sent are
        appended to `after` (run here, before returning, when it is None). Raises _Refusal."""
        started_ms = time.time_ns() // 1_000_000
        headers = _headers(scope)
        raw = await _read_body(headers, receive)
        caller = await self._authenticate(headers)
        _check_media_type(headers)
        data = _decode(raw)
        try:
            tx, tenant_ref = parse_transaction(data)
        except InvalidTransaction as exc:
            raise _Refusal(400, "validation_error", "The transaction is not valid.", exc.details) from None
        tenant = self._tenant(caller, tenant_ref)
        # Per-tenant burst limit and shedding (fraud.engine.admission): a refused transaction is
        # neither scored nor recorded, and the client retries it.
        if (refused := self.admission.check(tenant)) is not None:
            return refused
        limits = self.thresholds(tenant.uuid)
        if limits is None:  # created after the last refresh: the next one brings it
            raise _Refusal(503, "tenant_loading", "This tenant is not loaded yet; try again.")
        try:
            history, recorded = await self.history.recall(tenant.uuid, tx, started_ms)
        except HistoryUnavailable:
            logger.warning("fraud history unavailable; scoring with none", exc_info=True)
            history, recorded = History(), True  # unknown: the ledger says whether it is a replay
        # A replay answers the stored decision without asking the brain again. The history knows
        # the ids of the last 24 h, so a new transaction (nearly all of them) costs no ledger read;
        # an older replay is scored again and then refused by the ledger's unique index, which
        # answers the stored row all the same.
        if recorded:
            stored = await self.ledger.find(tenant_id=limits.tenant_id, transaction_id=tx.transaction_id)
            if stored is not None:
                return self._replay(stored, tx)
        try:
            answer, created = await self._score_and_record(tx, tenant, limits, started_ms, history)
            if created:
                # Counted in the user's history once answered: a client waits a Redis round trip
                # less, and its next request still sees this one (the add is queued first on the
                # process's Redis connection, which Redis serves in order).
                remember = functools.partial(self._remember, tenant.uuid, tx, started_ms)
                if after is None:
                    await remember()
                else:
                    after.append(remember)
        except LedgerConflict:  # a concurrent request with this id and another body won
            raise _Refusal(409, "idempotency_conflict", "This transaction_id was used with another body.") from None
        # A concurrent identical request won the insert: this one is its replay.
        return 201, _json(answer), [] if created else [(b"idempotent-replayed", b"true")]

    def _replay(self, stored: Stored, tx: TransactionIn) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if stored.request_hash != tx.request_hash():
            raise _Refusal(409, "idempotency_conflict", "This transaction_id was used with another body.")
        return 201, _json(stored.answer), [(b"idempotent-replayed", b"true")]

    async def _score_and_record(
        self, tx: TransactionIn, tenant: TenantInfo, limits: Thresholds, at_ms: int, history: History
    ) -> tuple[dict[str, Any], bool]:
        try:
            score = await self.brain.score(tx, history, tenant_uuid=tenant.uuid, created_at_ms=at_ms)
        except BrainUnavailable as exc:
            reasons: tuple[Reason, ...] = (exc.reason(),)
            decision, scored, value, version = "approve", False, None, ""
        else:
            decision, scored, value, version = (
                decide(score.score, limits.review, limits.decline),
                True,
                score.score,
                score.model_version,
            )
            reasons = score.reasons
        answer, created = await self.ledger.record(
            LedgerEntry(
                tenant_id=limits.tenant_id,
                tx=tx,
                decision=decision,
                scored=scored,
                score=value,
                reasons=reasons,
                model_version=version,
                history=history,
                created_at=datetime.fromtimestamp(at_ms / 1000, tz=UTC),
            )
        )
        if created:
            self.recorded(decision, scored)
        return answer, created

    async def _remember(self, tenant_uuid: str, tx: TransactionIn, at_ms: int) -> None:
        try:
            await self.history.add(tenant_uuid, tx, at_ms)
        except HistoryUnavailable:
            logger.warning("fraud history add lost", exc_info=True)

    async def _authenticate(self, headers: Mapping[str, str]) -> _Caller:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            claims = self.jwt_verifier.verify(token.strip())
            if isinstance(claims, AuthFailure):
                raise _Refusal(claims.status, claims.code, claims.message)
            if str(claims["user_id"]) in self.tenants().inactive_users:
                raise _Refusal(401, "user_inactive", "This user is deactivated.")
            tenant = claims.get("tenant")
            return _Caller(str(tenant) if tenant else "", staff=bool(claims.get("staff")))
        raw_key = headers.get("x-api-key", "").strip()
        if raw_key:
            info = await self.keys.resolve(raw_key)
            if info is None:
                raise _Refusal(401, "invalid_api_key", "Invalid, revoked or expired API key.")
            if SCOPE not in info.scopes:
                raise _Refusal(403, "insufficient_scope", f"This API key lacks the {SCOPE!r} scope.")
            return _Caller(info.tenant_uuid, staff=False)
        raise _Refusal(401, "not_authenticated", "A bearer token or an X-API-Key is required.")

    def _tenant(self, caller: _Caller, reference: str) -> TenantInfo:
        directory = self.tenants()
        if caller.tenant_ref:
            if reference and directory.find(reference) is not directory.find(caller.tenant_ref):
                raise _Refusal(403, "wrong_tenant", "You may only submit transactions of your own tenant.")
            reference = caller.tenant_ref
        elif not caller.staff:
            raise _Refusal(403, "no_tenant", "You do not belong to a tenant.")
        elif not reference:
            raise _Refusal(
                400, "validation_error", "Staff must name the tenant.", {"tenant": ["This field is required."]}
            )
        tenant = directory.find(reference)
        if tenant is None:
            status = 401 if caller.tenant_ref else 400
            raise _Refusal(status, "unknown_tenant", "The tenant is unknown.")
        if not tenant.active:
            raise _Refusal(403, "tenant_inactive", "This tenant is deactivated.")
        return tenant


@dataclass(frozen=True)
class _Caller:
    tenant_ref: str  # the tenant the credentials belong to, "" for staff (or a tenant-less user)
    staff: bool


def _correlation_header(scope: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The answer's `x-correlation-id` header: the request's id when valid, else a new one."""
    sent = next((value for name, value in scope["headers"] if name.lower() == b"x-correlation-id"), b"")
    return b"x-correlation-id", accept_correlation_id(sent.decode("latin-1")).encode()


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


async def _read_body(headers: Mapping[str, str], receive: Any) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > BODY_LIMIT):
        if not declared.isdigit():
            raise _Refusal(400, "bad_request", "Content-Length is not a number.")
        raise _Refusal(413, "payload_too_large", f"The body exceeds {BODY_LIMIT} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Refusal(400, "bad_request", "The client went away.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > BODY_LIMIT:
            raise _Refusal(413, "payload_too_large", f"The body exceeds {BODY_LIMIT} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=unique_keys)
    except _Refusal:
        raise
    except DuplicateKey as exc:
        raise _Refusal(400, "invalid_json", f"The body is not valid JSON: {exc}.") from None
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Refusal(400, "invalid_json", "The body is not valid JSON.") from None


def _check_media_type(headers: Mapping[str, str]) -> None:
    """A body declared as something other than JSON is refused (415, as the REST API's parser
    does); one with no Content-Type is read as JSON."""
    declared = headers.get("content-type")
    if declared is None:
        return
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise _Refusal(415, "unsupported_media_type", f"Unsupported media type {media_type!r}: send application/json.")


def _json(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, default=str).encode()


async def _respond(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *OWN_ANSWER_HEADERS, *extra]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
