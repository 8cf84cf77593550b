"""``CheckRunner``: runs http and tcp checks and says, in words, why one failed.

One runner per worker process and event loop: one aiohttp session whose connector keeps no
connection alive between checks (see ``monitors/engine/__init__.py`` for why) and shares a short
DNS cache. ``run`` judges one spec; ``run_batch`` starts many, each at its due time, with a
bounded concurrency. Nothing here raises for a target's fault: every failure is a ``down``
report whose ``reason`` is one of these (one per kind of failure):

* ``timeout: no answer within 10 s (while connecting)``: the whole check, from the first DNS
  lookup to the last byte read, is bounded by ``timeout_seconds``; the phase it was in is named;
* ``DNS failure: db.example.invalid does not resolve (Name or service not known)``;
* ``connection refused by 127.0.0.1:8080``, or ``cannot connect to host:port (...)``;
* ``TLS error: certificate has expired`` (OpenSSL's words for the certificate's problem:
  ``self-signed certificate``, ``Hostname mismatch, certificate is not valid for 'x'``...), only
  when ``verify_tls`` is on; with it off the check goes on and the expiry is still recorded;
* ``status 500, expected 200-299``;
* ``keyword "UP" not found in the body`` / ``keyword "ERROR" found in the body, where it must be
  absent``;
* ``condition failed: status (500) == 200`` (and ``failed_condition`` set to the conjunct);
* ``too slow: 812 ms, the limit is 300 ms``;
* ``egress denied: Egress to '10.0.0.5:80' refused: it resolves to 10.0.0.5, which is private
  (RFC 1918). ...`` (core.egress's sentence, naming the address and the rule);
* ``the server closed the connection without answering``, ``too many redirects``, ``the answer
  is not valid HTTP (...)``, ``the body could not be read (...)`` for the rarer faults.

Judged in this order: a check fails on its first failure (status, then keyword, then
conditions, then latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp.client_proto import ResponseHandler
from cryptography import x509

from core.egress import EgressDenied, EgressPolicy
from core.egress_aiohttp import GuardedConnector
from monitors.engine.spec import CheckReport, CheckSpec, format_expected_status, split_tcp_target
from rules.dsl import CompiledCondition, DslError, compile_condition

__all__ = ["CheckRunner"]

logger = logging.getLogger(__name__)

#: The CheckResult columns' length (reason, failed_condition): longer text is cut to fit.
MAX_REASON_CHARS: Final = 500
#: Seconds a DNS answer is shared between checks: aiohttp's default, and the shortest interval,
#: so no check acts on an answer older than that (see the package docstring).
DNS_CACHE_SECONDS: Final = 10
#: Compiled conditions kept, by (monitor_id, version): more than a worker's monitors, bounded.
CONDITION_CACHE_SIZE: Final = 20_000
#: Parsed certificates kept, by their DER bytes: many monitors share one certificate.
CERT_CACHE_SIZE: Final = 4_096
#: Redirects followed before "too many redirects" (aiohttp's default, as browsers' ~20 is generous).
MAX_REDIRECTS: Final = 10
READ_CHUNK: Final = 65_536
USER_AGENT: Final = "Sentinel-Monitor/1.0"
SECONDS_PER_DAY: Final = 86_400


class _Failure(Exception):
    """A check's verdict of down, raised inside the runner and turned into a report."""

    def __init__(self, reason: str, *, failed_condition: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.failed_condition = failed_condition


@dataclass(slots=True)
class _Progress:
    """What one check got to, filled in as it goes (by aiohttp's trace hooks too)."""

    started_at: float = 0.0  # epoch seconds, as in the report
    phase: str = "resolving the name"
    # DER of the certificate the latest connection presented (None over plain TCP).
    peer_certificate: bytes | None = None
    status_code: int | None = None
    latency_ms: float | None = None
    cert_expires_at: float | None = None
    hops: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Body:
    text: str
    truncated: bool
    looks_json: bool


class CheckRunner:
    """Runs checks (``CheckSpec`` → ``CheckReport``) in the running event loop.

    Every check opens a new connection, never reusing one (no keep-alive): each sees the TCP
    connect and the TLS handshake (and a DNS lookup unless another check of the same name made
    one in the last 10 s), as a user's first request would, and reads the certificate anew.

    ``egress`` judges every address an http connection (each redirect hop included) or a tcp
    check connects to (``core.egress``); None means no policy (the platform's own monitors).
    ``concurrency`` bounds the checks in flight in ``run_batch`` (and the connector's open
    connections). ``body_limit_bytes`` (1 MiB by default) bounds what is read of a response
    body, and the body is read only when a keyword or a condition over ``body`` needs it: past
    the bound, the keyword is searched in what was read, and a condition over ``body`` of a JSON
    body that was cut fails with a reason saying the body was larger than the bound (a text body
    is judged on what was read). Response headers are bounded by aiohttp's parser (8190 bytes a
    line). ``ssl_context`` verifies certificates when a spec's ``verify_tls`` is on; by default
    the system's CAs (``ssl.create_default_context()``). ``on_egress_denied(spec, denied)`` is
    called in the loop for each connection the policy refused (the site logs and counts it); it
    must not block.

    Create it inside the loop that runs the checks; ``aclose`` it when done.
    """

    def __init__(
        self,
        *,
        egress: EgressPolicy | None,
        concurrency: int = 200,
        body_limit_bytes: int = 1_048_576,
        ssl_context: ssl.SSLContext | None = None,
        on_egress_denied: Callable[[CheckSpec, EgressDenied], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if body_limit_bytes < 0:
            raise ValueError("body_limit_bytes cannot be negative")
        self.egress = egress
        self.on_egress_denied = on_egress_denied
        self.concurrency = concurrency
        self.body_limit_bytes = body_limit_bytes
        self._verified_ssl: ssl.SSLContext = ssl_context or ssl.create_default_context()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._conditions: OrderedDict[tuple[int, int], tuple[str, CompiledCondition | DslError]] = OrderedDict()
        self._certs: OrderedDict[bytes, float | None] = OrderedDict()

    # --- the session ---------------------------------------------------------------------------

    def _session_for_checks(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            options: dict[str, Any] = {
                # A new connection every check: DNS, connect and TLS are what a monitor watches.
                "force_close": True,
                "limit": self.concurrency,
                "use_dns_cache": True,
                "ttl_dns_cache": DNS_CACHE_SECONDS,
            }
            connector = (
                _GuardedRecordingConnector(self.egress, **options)
                if self.egress is not None
                else _RecordingConnector(**options)
            )
            trace = aiohttp.TraceConfig()
            trace.on_dns_resolvehost_start.append(_phase("resolving the name"))
            trace.on_connection_create_start.append(_phase("connecting"))
            trace.on_connection_create_end.append(_phase("waiting for the response"))
            trace.on_request_redirect.append(_on_redirect)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=[trace],
                timeout=aiohttp.ClientTimeout(total=None),  # the check's own deadline rules
                headers={"User-Agent": USER_AGENT},
                auto_decompress=True,
                trust_env=False,  # a proxy would be what we connect to: the policy must see the target
            )
        return self._session

    async def aclose(self) -> None:
        """Closes the session; the runner can be used again (a new session is made)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- batches -------------------------------------------------------------------------------

    async def run_batch(
        self,
        specs: Sequence[CheckSpec],
        *,
        on_report: Callable[[CheckReport], None] | None = None,
    ) -> list[CheckReport]:
        """Runs every spec, each started at its ``due_at`` (a spec already due, or with
        ``due_at`` 0, starts at once), at most ``concurrency`` at a time; returns the reports in
        the order of ``specs``. ``on_report`` is called as each check finishes (an exception it
        raises is logged, not propagated). A check that waits for a free slot starts late, and
        its ``lag_ms`` says by how much.
        """
        order = sorted(range(len(specs)), key=lambda index: specs[index].due_at)
        reports: list[CheckReport | None] = [None] * len(specs)
        tasks: set[asyncio.Task[None]] = set()

        async def one(index: int) -> None:
            report = await self._run_holding_slot(specs[index])
            reports[index] = report
            if on_report is not None:
                try:
                    on_report(report)
                except Exception:
                    logger.exception("on_report failed for monitor %s", report.monitor_id)

        def finished(task: asyncio.Task[None]) -> None:
            # A done callback, not a `finally` in `one`: a task cancelled before it ever ran
            # must give its slot back too.
            tasks.discard(task)
            self._semaphore.release()

        try:
            for index in order:
                # One feeder sleeps until the next due time, rather than a sleeping task per spec.
                # A loop: the loop's clock is monotonic, due times are wall-clock; never start early.
                while (delay := specs[index].due_at - time.time()) > 0:
                    await asyncio.sleep(delay)
                await self._semaphore.acquire()
                task = asyncio.create_task(one(index))
                tasks.add(task)
                task.add_done_callback(finished)
            while tasks:
                await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return [report for report in reports if report is not None]

    # --- one check -----------------------------------------------------------------------------

    async def run(self, spec: CheckSpec) -> CheckReport:
        """The report of one check, started now (within ``concurrency`` with other ``run``s and
        batches of this runner). Never raises for the target's fault."""
        async with self._semaphore:
            return await self._run_holding_slot(spec)

    async def _run_holding_slot(self, spec: CheckSpec) -> CheckReport:
        started_at = time.time()
        lag_ms = max(0.0, (started_at - spec.due_at) * 1000.0) if spec.due_at else 0.0
        progress = _Progress(started_at=started_at)
        reason, failed_condition = "", ""
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                if spec.kind == "tcp":
                    await self._tcp(spec, progress)
                elif spec.kind == "http":
                    await self._http(spec, progress)
                else:
                    raise _Failure(f"unknown check kind {spec.kind!r}")
        except _Failure as failure:
            reason, failed_condition = failure.reason, failure.failed_condition
        except TimeoutError:
            reason = f"timeout: no answer within {spec.timeout_seconds:g} s (while {progress.phase})"
        except EgressDenied as denied:
            reason = f"egress denied: {denied}"
            if self.on_egress_denied is not None:
                self.on_egress_denied(spec, denied)
        except aiohttp.ClientError as exc:
            reason = _client_error_reason(exc, spec)
        except OSError as exc:
            reason = _os_error_reason(exc, spec.target)
        except Exception as exc:
            # A fault of ours, not the target's: the check is down (it did not pass), the batch goes on.
            logger.exception("check of monitor %s failed unexpectedly", spec.monitor_id)
            reason = f"the check could not run ({type(exc).__name__})"
        expires_at = progress.cert_expires_at
        return CheckReport(
            monitor_id=spec.monitor_id,
            started_at=started_at,
            outcome="down" if reason else "up",
            status_code=progress.status_code,
            latency_ms=progress.latency_ms,
            reason=_cut(reason),
            failed_condition=_cut(failed_condition),
            cert_expiry_days=_days_left(expires_at, started_at) if expires_at is not None else None,
            cert_expires_at=expires_at,
            lag_ms=lag_ms,
        )

    # --- http ----------------------------------------------------------------------------------

    async def _http(self, spec: CheckSpec, progress: _Progress) -> None:
        condition = self._condition(spec)
        needs_body = bool(spec.keyword) or (condition is not None and "body" in condition.fields)
        session = self._session_for_checks()
        began = time.perf_counter()
        _CHECK_IN_PROGRESS.set(progress)  # this task's own context: concurrent checks do not mix
        async with session.request(
            spec.method,
            spec.target,
            headers=spec.headers or None,
            data=spec.body or None,
            allow_redirects=spec.follow_redirects,
            max_redirects=MAX_REDIRECTS,
            ssl=self._verified_ssl if spec.verify_tls else False,
            trace_request_ctx=progress,
        ) as response:
            progress.status_code = response.status
            progress.cert_expires_at = self._cert_expiry(progress.peer_certificate)
            body: _Body | None = None
            if needs_body:
                progress.phase = "reading the body"
                body = await self._read_body(response)
            progress.latency_ms = (time.perf_counter() - began) * 1000.0
            headers = _headers(response)
        self._judge_http(spec, condition, progress, headers, body)

    def _judge_http(
        self,
        spec: CheckSpec,
        condition: CompiledCondition | None,
        progress: _Progress,
        headers: dict[str, str],
        body: _Body | None,
    ) -> None:
        status = progress.status_code
        assert status is not None and progress.latency_ms is not None
        if not any(low <= status <= high for low, high in spec.expected_status):
            raise _Failure(f"status {status}, expected {format_expected_status(spec.expected_status)}")
        if spec.keyword and body is not None:
            where = f"the first {self.body_limit_bytes} bytes of the body" if body.truncated else "the body"
            found = spec.keyword in body.text
            if found and spec.keyword_absent:
                raise _Failure(f"keyword {_quoted(spec.keyword)} found in {where}, where it must be absent")
            if not found and not spec.keyword_absent:
                raise _Failure(f"keyword {_quoted(spec.keyword)} not found in {where}")
        if condition is not None:
            values: dict[str, Any] = {
                "status": status,
                "response_time": progress.latency_ms,
                "headers": headers,
            }
            if progress.cert_expires_at is not None:
                values["cert_expiry_days"] = _days_left(progress.cert_expires_at, progress.started_at)
            cut_json = False
            if body is not None and "body" in condition.fields:
                parsed, cut_json = _body_value(body)
                if not cut_json:
                    values["body"] = parsed
            failed = condition.failure(values)
            if failed is not None:
                if cut_json:
                    raise _Failure(
                        f"condition failed: {failed}: the body was larger than the {self.body_limit_bytes}-byte "
                        "bound and was cut, so it could not be read as JSON",
                        failed_condition=failed,
                    )
                raise _Failure(f"condition failed: {failed}", failed_condition=failed)
        if spec.max_latency_ms is not None and progress.latency_ms > spec.max_latency_ms:
            raise _Failure(f"too slow: {progress.latency_ms:.0f} ms, the limit is {spec.max_latency_ms:g} ms")

    async def _read_body(self, response: aiohttp.ClientResponse) -> _Body:
        limit = self.body_limit_bytes
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await response.content.read(min(READ_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        truncated = len(data) > limit
        data = data[:limit]
        charset = response.charset or "utf-8"
        try:
            text = data.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            text = data.decode("utf-8", errors="replace")
        content_type = response.content_type or ""
        looks_json = "json" in content_type or text.lstrip()[:1] in ("{", "[")
        return _Body(text, truncated, looks_json)

    def _condition(self, spec: CheckSpec) -> CompiledCondition | None:
        """The spec's compiled condition, compiled once per (monitor_id, version)."""
        if not spec.conditions.strip():
            return None
        key = (spec.monitor_id, spec.version)
        cached = self._conditions.get(key)
        if cached is not None and cached[0] == spec.conditions:
            self._conditions.move_to_end(key)
            compiled = cached[1]
        else:
            try:
                compiled = compile_condition(spec.conditions)
            except DslError as exc:
                compiled = exc
            self._conditions[key] = (spec.conditions, compiled)
            if len(self._conditions) > CONDITION_CACHE_SIZE:
                self._conditions.popitem(last=False)
        if isinstance(compiled, DslError):
            # Saved conditions are checked when saved; this is a row written around the services.
            raise _Failure(f"the condition cannot be compiled: {compiled}")
        return compiled

    def _cert_expiry(self, der: bytes | None) -> float | None:
        """notAfter of a DER certificate (epoch seconds), parsed once per distinct certificate."""
        if not der:
            return None
        if der in self._certs:
            self._certs.move_to_end(der)
            return self._certs[der]
        try:
            expires: float | None = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
        except ValueError:
            expires = None
        self._certs[der] = expires
        if len(self._certs) > CERT_CACHE_SIZE:
            self._certs.popitem(last=False)
        return expires

    # --- tcp -----------------------------------------------------------------------------------

    async def _tcp(self, spec: CheckSpec, progress: _Progress) -> None:
        try:
            host, port = split_tcp_target(spec.target)
        except ValueError as exc:
            raise _Failure(f"the target cannot be read: {exc}") from None
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        progress.phase = "resolving the name"
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise _Failure(_dns_reason(host, exc)) from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        target = _host_port(host, port)
        if self.egress is not None:
            for address in addresses:  # every one judged before any is tried, as for http
                self.egress.check_address(address, target=target)
        progress.phase = "connecting"
        failure: OSError | None = None
        for address in addresses:
            try:
                _, writer = await asyncio.open_connection(address, port)
            except OSError as exc:
                failure = exc
                continue
            try:
                peer = writer.get_extra_info("peername")
                if self.egress is not None:
                    self.egress.check_address(str(peer[0]) if peer else "", target=target)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            progress.latency_ms = (time.perf_counter() - began) * 1000.0
            return
        if failure is None:
            raise _Failure(f"DNS failure: {host} resolves to no address")
        raise _Failure(_os_error_reason(failure, target))


# --- connections --------------------------------------------------------------------------------

#: The check running in this task, for the connector to hand the peer's certificate to. aiohttp
#: opens connections in the task that made the request, so each check sees only its own.
_CHECK_IN_PROGRESS: ContextVar[_Progress | None] = ContextVar("monitors_check_in_progress", default=None)


def _record_peer_certificate(transport: asyncio.Transport) -> None:
    """Keeps the DER certificate of a just-made connection on the check in progress.

    Read here, right after the handshake: by the time the request returns, a small answer has
    been read whole and its connection (no keep-alive) released. ``getpeercert(binary_form=True)``
    returns the certificate whether or not it was verified."""
    progress = _CHECK_IN_PROGRESS.get()
    if progress is None:
        return
    ssl_object = transport.get_extra_info("ssl_object")
    progress.peer_certificate = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


class _RecordingConnector(aiohttp.TCPConnector):
    """aiohttp's connector, recording each connection's peer certificate (no egress policy)."""

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> tuple[asyncio.Transport, ResponseHandler]:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        _record_peer_certificate(transport)
        return transport, protocol


class _GuardedRecordingConnector(GuardedConnector):
    """The egress-guarded connector, recording each connection's peer certificate."""

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> tuple[asyncio.Transport, ResponseHandler]:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        _record_peer_certificate(transport)
        return transport, protocol


# --- trace hooks --------------------------------------------------------------------------------


def _phase(name: str) -> Callable[..., Any]:
    async def hook(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
        progress = context.trace_request_ctx
        if isinstance(progress, _Progress):
            progress.phase = name

    return hook


async def _on_redirect(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
    progress = context.trace_request_ctx
    if isinstance(progress, _Progress):
        progress.hops.append(str(params.url))
        progress.phase = "following a redirect"


# --- reasons ------------------------------------------------------------------------------------


def _client_error_reason(exc: aiohttp.ClientError, spec: CheckSpec) -> str:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return _dns_reason(exc.host, exc.os_error)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        words = getattr(error, "verify_message", "") or str(error)
        return f"TLS error: {words.rstrip('.')} ({_host_port(exc.host, exc.port)})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return f"TLS error: {_ssl_words(exc)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_error_reason(exc.os_error, _host_port(exc.host, exc.port))
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"too many redirects (more than {MAX_REDIRECTS})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return f"invalid URL: only http:// and https:// can be checked ({exc})"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {exc}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the body could not be read ({_first_line(exc)})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"the answer is not valid HTTP ({_first_line(exc)})"
    if isinstance(exc, aiohttp.ClientOSError):
        return _os_error_reason(exc, spec.target)
    return f"request failed ({type(exc).__name__}: {_first_line(exc)})"


def _host_port(host: str, port: int | None) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:22``)."""
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port is not None else shown


def _dns_reason(host: str, error: BaseException) -> str:
    words = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"DNS failure: {host} does not resolve ({words})"


def _os_error_reason(exc: OSError, target: str) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {target}"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by {target}"
    if isinstance(exc, TimeoutError):
        return f"timeout connecting to {target}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {_ssl_words(exc)}"
    words = exc.strerror or _first_line(exc) or type(exc).__name__
    return f"cannot connect to {target} ({words})"


def _ssl_words(exc: BaseException) -> str:
    inner = getattr(exc, "os_error", None) or exc
    reason = getattr(inner, "reason", None)
    return str(reason).replace("_", " ").lower() if reason else _first_line(inner)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _quoted(text: str) -> str:
    shown = text if len(text) <= 60 else text[:59] + "…"
    return json.dumps(shown, ensure_ascii=False)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


# --- values -------------------------------------------------------------------------------------


def _headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    """Response headers with lower-cased names, a repeated header's values joined by ", ".

    Each name with a ``-`` is there a second time with ``_`` instead (``content_type``), since
    a DSL field name cannot hold a dash: ``headers.content_type == "application/json"``."""
    headers: dict[str, str] = {}
    for name, value in response.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    for key in [key for key in headers if "-" in key]:
        headers.setdefault(key.replace("-", "_"), headers[key])
    return headers


def _body_value(body: _Body) -> tuple[Any, bool]:
    """(the body as conditions see it, whether it is JSON that was cut). Parsed JSON when it is
    JSON, else the text."""
    if body.looks_json:
        try:
            return json.loads(body.text), False
        except (ValueError, RecursionError):
            if body.truncated:
                return None, True
    return body.text, False


def _days_left(expires_at: float, now: float) -> int:
    """Whole days until ``expires_at`` (floor: 0 on its last day, negative once expired)."""
    return math.floor((expires_at - now) / SECONDS_PER_DAY)
