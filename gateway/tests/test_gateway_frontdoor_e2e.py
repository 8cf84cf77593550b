"""What a real web process does with requests that are hostile, ambiguous or malformed (issue 8
items 2, 3 and 6): raw bytes on a socket to `manage.py serve`, and a raw recording server as the
upstream, so nothing in between normalises what either side sees.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from accounts.api.serializers import TokenSerializer
from accounts.models import User
from gateway import services
from tests.support.processes import web_process
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class _Recorder(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.received: list[bytes] = []  # each connection's bytes, as they came
        self.lock = threading.Lock()
        self.active = 0

    def settled(self) -> list[bytes]:
        """What was received, once no connection is being read any more."""
        wait_until(lambda: self.active == 0, timeout=15, what="the recording upstream's connections to end")
        return list(self.received)


class _RecordingHandler(socketserver.BaseRequestHandler):
    """Records what arrives (the head, and a body to its end, its framing's or the connection's)
    and answers with a small 200, then closes."""

    def setup(self) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.active += 1  # type: ignore[attr-defined]

    def finish(self) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.active -= 1  # type: ignore[attr-defined]

    def handle(self) -> None:
        server: _Recorder = self.server  # type: ignore[assignment]
        self.request.settimeout(10)
        data = self._read_until(lambda data: b"\r\n\r\n" in data, b"")
        head = data.partition(b"\r\n\r\n")[0].lower()
        if b"\r\ntransfer-encoding: chunked" in head:
            data = self._read_until(lambda data: data.endswith(b"\r\n0\r\n\r\n"), data)
        elif b"\r\ncontent-length: " in head:
            length = int(head.split(b"\r\ncontent-length: ")[1].split(b"\r\n")[0])
            data = self._read_until(lambda data: len(data) >= len(head) + 4 + length, data)
        with server.lock:
            server.received.append(data)
        if b"\r\n\r\n" in data:
            self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream")

    def _read_until(self, done: Callable[[bytes], bool], data: bytes) -> bytes:
        try:
            while not done(data):
                chunk = self.request.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return data


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, name="recording-upstream", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def error(self) -> dict[str, object]:
        assert self.headers.get("content-type") == "application/json", self
        error: dict[str, object] = json.loads(self.body)["error"]
        assert set(error) == {"code", "message", "details"}, error
        return error


def exchange(port: int, request: bytes) -> tuple[list[Answer], bool]:
    """Sends `request` as it is; returns every response read and whether the server closed the
    connection (read until EOF, 15 s at most)."""
    received = b""
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        with contextlib.suppress(OSError):  # the server may answer and stop reading before the end
            sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    return parse_answers(received), closed


def parse_answers(data: bytes) -> list[Answer]:
    answers = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        answers.append(Answer(int(status_line.split()[1]), headers, data[:length]))
        data = data[length:]
    return answers


def routes_on_one_backend(port: int) -> None:
    """The issue's setting: a public route and a key-protected route on the same backend."""
    backend = f"http://127.0.0.1:{port}"
    services.route_create(
        tenant=None, name="pub", path_prefix="/pub/", targets=[f"{backend}/svc/public"], auth_mode="none"
    )
    services.route_create(
        tenant=None, name="admin", path_prefix="/admin-api/", targets=[f"{backend}/svc/admin"], auth_mode="api_key"
    )


# Paths routed to /pub/ that a backend could resolve outside /svc/public/ (Tomcat, Jetty, Spring,
# IIS, double-decoding servers).
ESCAPING_PATHS = [
    "/pub/..;/admin-api/secret",
    "/pub/..;jsessionid=x/admin-api/secret",
    "/pub/..%3b/admin-api/secret",
    "/pub/..%3B/admin-api/secret",
    "/pub/../admin-api/secret",
    "/pub/%2e%2e/admin-api/secret",
    "/pub/%2E%2e/admin-api/secret",
    "/pub/.%2e/admin-api/secret",
    "/pub/%2e%2e;/admin-api/secret",
    "/pub/./../admin-api/secret",
    "/pub/x/..",
    "/pub/..%2fadmin-api/secret",
    "/pub/..%2Fadmin-api/secret",
    "/pub/..%5cadmin-api/secret",
    "/pub/..\\admin-api/secret",
    "/pub/%252e%252e/admin-api/secret",
    "/pub/%c0%ae%c0%ae/admin-api/secret",
    "/pub/..%00/admin-api/secret",
    "/pub/.../admin-api/secret",
    "/pub/..%20/admin-api/secret",
    "/pub/%ef%bc%8e%ef%bc%8e/admin-api/secret",
    "/pub;x/../admin-api/secret",
    "/admin-api;x/secret",
]


def test_a_public_route_never_leads_to_the_protected_one(recorder: _Recorder) -> None:
    routes_on_one_backend(recorder.server_address[1])

    with web_process() as port:
        escaping = {
            path: exchange(port, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())[0]
            for path in ESCAPING_PATHS
        }
        refused_upstream = recorder.settled()
        merged = exchange(port, b"GET /pub//orders//7 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")[0]
        escaped = exchange(port, b"GET /pub/a%3Db/caf%C3%A9 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")[
            0
        ]
        protected = exchange(port, b"GET /admin-api/secret HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")[0]

    outcomes = {path: (answers[0].status, answers[0].error["code"]) for path, answers in escaping.items()}
    assert outcomes == dict.fromkeys(ESCAPING_PATHS, (400, "unsafe_path"))
    assert refused_upstream == []  # not one byte of them reached the backend
    # What is routed is what is forwarded: merged slashes, the client's escapes as they were.
    forwarded = [request.split(b"\r\n", 1)[0] for request in recorder.settled()]
    assert forwarded == [b"GET /svc/public/orders/7 HTTP/1.1", b"GET /svc/public/a%3Db/caf%C3%A9 HTTP/1.1"]
    assert [merged[0].status, escaped[0].status] == [200, 200]
    assert (protected[0].status, protected[0].error["code"]) == (401, "not_authenticated")


# Requests two parsers could read differently (RFC 9112 3.2, 5, 6.1, 6.3). Some reach Sentinel's
# head check, the others its HTTP parser: all must be the JSON 400, and the connection closed.
GET = b"GET /pub/x HTTP/1.1\r\n"
POST = b"POST /pub/x HTTP/1.1\r\nHost: localhost\r\n"
AMBIGUOUS = {
    "duplicate-host": GET + b"Host: localhost\r\nHost: evil.example\r\n\r\n",
    "duplicate-host-same": GET + b"Host: localhost\r\nHost: localhost\r\n\r\n",
    "missing-host": GET + b"\r\n",
    "invalid-host": GET + b"Host: local host\r\n\r\n",
    "host-userinfo": GET + b"Host: user@localhost\r\n\r\n",
    "absolute-form-other-host": b"GET http://evil.example/pub/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "absolute-form-userinfo": b"GET http://u@localhost/pub/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "authority-form": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    "fragment": b"GET /pub/x#y HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "cl-cl-same": POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl-cl-different": POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl-list": POST + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl-sign": POST + b"Content-Length: +5\r\n\r\nhello",
    "cl-empty": POST + b"Content-Length: \r\n\r\n",
    "te-cl": POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl-te": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "te-chunked-identity": POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te-xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-identity": POST + b"Transfer-Encoding: identity\r\n\r\n",
    "te-gzip-chunked": POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-twice": POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-http10": b"POST /pub/x HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-obs-fold": POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": GET + b"Host: localhost\r\nX-A: b\r\n c\r\n\r\n",
    "obs-fold-tab": GET + b"Host: localhost\r\nX-A: b\r\n\tc\r\n\r\n",
    "space-before-colon": GET + b"Host : localhost\r\n\r\n",
    "tab-before-colon": GET + b"Host\t: localhost\r\n\r\n",
    "te-space-before-colon": POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "nul-in-value": GET + b"Host: localhost\r\nX-A: a\x00b\r\n\r\n",
    "cr-in-value": GET + b"Host: localhost\r\nX-A: a\rb\r\n\r\n",
    "lf-in-value": GET + b"Host: localhost\r\nX-A: a\nX-B: b\r\n\r\n",
    "bare-lf-line-ends": b"GET /pub/x HTTP/1.1\nHost: localhost\n\n",
    "name-with-space": GET + b"Host: localhost\r\nBad Header: x\r\n\r\n",
    "name-with-separator": GET + b"Host: localhost\r\nX(y): x\r\n\r\n",
    "empty-name": GET + b"Host: localhost\r\n: x\r\n\r\n",
    "non-ascii-name": GET + b"Host: localhost\r\nX\xe9: x\r\n\r\n",
    "first-line-folded": GET + b" Host: localhost\r\n\r\n",
}


def test_ambiguous_requests_are_refused_before_anything_is_forwarded(recorder: _Recorder) -> None:
    routes_on_one_backend(recorder.server_address[1])

    with web_process() as port:
        results = {name: exchange(port, request) for name, request in AMBIGUOUS.items()}
        control = exchange(port, POST + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n")[0]

    outcomes = {
        name: (len(answers), answers[0].status, answers[0].error["code"] in ("ambiguous_request", "bad_request"))
        for name, (answers, _) in results.items()
    }
    assert outcomes == dict.fromkeys(AMBIGUOUS, (1, 400, True))
    assert [name for name, (_, closed) in results.items() if not closed] == []  # connections closed
    assert all(answers[0].headers["connection"] == "close" for answers, _ in results.values())
    assert results["duplicate-host"][0][0].error["details"] == {"reason": "duplicate_host"}
    assert results["missing-host"][0][0].error["details"] == {"reason": "missing_host"}
    # Only the well-formed chunked request, sent last, reached the upstream.
    assert control[0].status == 200
    assert [request.split(b"\r\n", 1)[0] for request in recorder.settled()] == [b"POST /svc/public/x HTTP/1.1"]


def test_an_http10_request_without_host_is_served(recorder: _Recorder) -> None:
    routes_on_one_backend(recorder.server_address[1])

    with web_process() as port:
        answers, _ = exchange(port, b"GET /pub/x HTTP/1.0\r\n\r\n")

    assert answers[0].status == 200  # RFC 9112 3.2 requires Host of HTTP/1.1 only


# What uvicorn's parser refused with "400 text/plain Invalid HTTP request received." (or did not
# limit at all) and the status each one calls for.
SERVER_LEVEL = {
    "target-70000": (b"GET /pub/" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414, "uri_too_long"),
    "target-query-9000": (b"GET /pub/x?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414, "uri_too_long"),
    "header-70000": (GET + b"Host: localhost\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "headers_too_large"),
    "header-1mb": (GET + b"Host: localhost\r\nX-Big: " + b"a" * 1_200_000 + b"\r\n\r\n", 431, "headers_too_large"),
    "headers-total-40k": (
        GET + b"Host: localhost\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"v" * 4000) for n in range(10)) + b"\r\n",
        431,
        "headers_too_large",
    ),
    "http-2.0": (b"GET /pub/x HTTP/2.0\r\nHost: localhost\r\n\r\n", 505, "http_version_not_supported"),
    "http-1.2": (b"GET /pub/x HTTP/1.2\r\nHost: localhost\r\n\r\n", 505, "http_version_not_supported"),
    "http-3.0": (b"GET /pub/x HTTP/3.0\r\nHost: localhost\r\n\r\n", 505, "http_version_not_supported"),
    "http-0.9": (b"GET /pub/x\r\nHost: localhost\r\n\r\n", 505, "http_version_not_supported"),
    "unknown-method": (b"FOO /pub/x HTTP/1.1\r\nHost: localhost\r\n\r\n", 501, "method_not_implemented"),
    "lower-case-method": (b"get /pub/x HTTP/1.1\r\nHost: localhost\r\n\r\n", 501, "method_not_implemented"),
    "not-a-method": (b"G(T /pub/x HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "bad_request"),
    "tls-to-http-port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400, "bad_request"),
    "lower-case-version": (b"GET /pub/x http/1.1\r\nHost: localhost\r\n\r\n", 400, "bad_request"),
    "space-in-target": (b"GET /pub/x y HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "bad_request"),
    "control-in-target": (b"GET /pub/x\x01 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "bad_request"),
    "non-ascii-target": (b"GET /pub/caf\xe9 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "bad_request"),
    "bad-chunk-size": (POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, "bad_request"),
    "chunk-size-overflow": (
        POST + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    "chunk-without-crlf": (POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400, "bad_request"),
}


def test_server_level_errors_are_the_json_error_with_the_right_status(recorder: _Recorder) -> None:
    routes_on_one_backend(recorder.server_address[1])

    with web_process() as port:
        results = {name: exchange(port, request) for name, (request, _, _) in SERVER_LEVEL.items()}
        after = exchange(port, b"GET /pub/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")[0]

    outcomes = {
        name: [(answer.status, answer.error["code"], answer.headers.get("connection")) for answer in answers]
        for name, (answers, _) in results.items()
    }
    assert outcomes == {name: [(status, code, "close")] for name, (_, status, code) in SERVER_LEVEL.items()}
    assert [name for name, (_, closed) in results.items() if not closed] == []
    assert after[0].status == 200  # and the process serves the next connection as usual
    # The chunked ones may have started a request to the upstream: none got a complete body.
    received = recorder.settled()
    assert all(not request.endswith(b"0\r\n\r\n") for request in received)
    assert [request.split(b"\r\n", 1)[0] for request in received if request] == [b"GET /svc/public/x HTTP/1.1"]


def test_a_refusal_waits_for_the_pipelined_requests_before_it(recorder: _Recorder) -> None:
    routes_on_one_backend(recorder.server_address[1])
    good = b"GET /pub/first HTTP/1.1\r\nHost: localhost\r\n\r\n"

    with web_process() as port:
        answers, closed = exchange(port, good + good.replace(b"first", b"second") + GET + b"Host: a\r\nHost: b\r\n\r\n")

    assert [(answer.status, answer.body) for answer in answers[:2]] == [(200, b"upstream"), (200, b"upstream")]
    assert (answers[2].status, answers[2].error["code"]) == (400, "ambiguous_request")
    assert len(answers) == 3 and closed
    # The upstream got the two good ones, and nothing of the third
    forwarded = [request.split(b"\r\n", 1)[0] for request in recorder.settled()]
    assert forwarded == [b"GET /svc/public/first HTTP/1.1", b"GET /svc/public/second HTTP/1.1"]


WEBSOCKET = (
    b"GET /ws/nowhere/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://localhost\r\n\r\n"
)


def test_djangos_paths_and_websockets_get_the_same_checks(alice: User) -> None:
    with web_process() as port:
        dotted = exchange(port, b"GET /api/v1/..;/admin/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")[0]
        merged = exchange(port, b"GET //health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")[0]
        two_hosts = exchange(port, b"GET /health HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n")[0]
        no_socket = exchange(port, WEBSOCKET)[0]
        two_hosts_socket = exchange(port, WEBSOCKET.replace(b"Host: localhost", b"Host: localhost\r\nHost: evil"))[0]

    assert (dotted[0].status, dotted[0].error["code"]) == (400, "unsafe_path")
    assert merged[0].status == 200
    assert (two_hosts[0].status, two_hosts[0].error["code"]) == (400, "ambiguous_request")
    # A handshake to a path no consumer serves was the server's 500 (Channels raises ValueError).
    assert (no_socket[0].status, no_socket[0].error["code"]) == (404, "not_found")
    assert (two_hosts_socket[0].status, two_hosts_socket[0].error["code"]) == (400, "ambiguous_request")


def test_trailer_fields_never_become_headers(alice: User) -> None:
    # A chunked request carrying its credentials in a trailer, where no proxy or WAF in front
    # looks: uvicorn used to append trailers to the scope's headers, and Django, which reads the
    # headers after the body, authenticated the request with them (200 and alice's profile).
    token = str(TokenSerializer.get_token(alice).access_token).encode()
    request = (
        b"GET /auth/me HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"0\r\nAuthorization: Bearer " + token + b"\r\n\r\n"
    )

    with web_process() as port:
        answers, _ = exchange(port, request)

    assert (answers[0].status, answers[0].error["code"]) == (401, "not_authenticated")
