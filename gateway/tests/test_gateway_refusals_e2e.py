"""What a client and an operator see of the web process's refusals (issue 8 items 3 and 6,
SPEC 2.1 and 7): raw bytes on a socket to a real `manage.py serve` whose output is kept, so the
answers and the log lines are both checked.

* every protocol-level refusal carries ``x-correlation-id`` (the client's when valid and read,
  else a new one) and its "Refused a request" log line carries the same id;
* a path that matches nothing is the JSON 404 unless the client prefers HTML (a browser);
* the parser's Content-Length / Transfer-Encoding errors are ``ambiguous_request``;
* a Host not in ALLOWED_HOSTS is a JSON 400 naming it and a warning line, no traceback.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from accounts.models import User
from gateway.tests.test_gateway_frontdoor_e2e import POST, Answer, _Recorder, recorder, routes_on_one_backend
from tests.support.net import free_port, http_request
from tests.support.processes import BASE_DIR, child_env, python_command
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["recorder"]  # the fixture, imported to be used here

CLIENT_ID = "client-Trace_42.x"
NEW_ID = re.compile(r"[0-9a-f]{32}")
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@contextlib.contextmanager
def logged_web_process(log_path: Path) -> Iterator[int]:
    """`manage.py serve` on a free port with its output in `log_path`; yields the port."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            python_command("manage.py", "serve", "--port", str(port)),
            cwd=BASE_DIR,
            env=child_env(LOG_LEVEL="info"),  # the access lines are at info
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: http_request(port, "GET", "/health")[0] in (200, 503), timeout=60, what="the web process"
            )
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def log_lines(log_path: Path) -> list[dict[str, object]]:
    """The JSON log lines the process wrote (other output, e.g. uvicorn's banner, skipped)."""
    lines = []
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                lines.append(entry)
    return lines


def one(port: int, request: bytes) -> Answer:
    """Sends `request`, reads until the server closes; the one response, its body de-chunked."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        with contextlib.suppress(OSError):  # the server may answer and stop reading before the end
            sock.sendall(request)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    if headers.get("transfer-encoding") == "chunked":
        chunked, body = body, b""
        while (size := int(chunked.split(b"\r\n", 1)[0], 16)) > 0:
            start = chunked.index(b"\r\n") + 2
            body += chunked[start : start + size]
            chunked = chunked[start + size + 2 :]
    else:
        body = body[: int(headers.get("content-length", len(body)))]
    return Answer(int(status_line.split()[1]), headers, body)


CID = b"X-Correlation-Id: " + CLIENT_ID.encode() + b"\r\n"
GET = b"GET /pub/x HTTP/1.1\r\n"
# Refusals made after the client's x-correlation-id was read: each must echo it. (httptools hands
# a header over when the next one starts, so a fault in the very next line finds it unread.)
AFTER_THE_ID = {
    "two-hosts": (GET + CID + b"Host: localhost\r\nHost: evil.example\r\n\r\n", 400, "ambiguous_request"),
    "missing-host": (GET + CID + b"\r\n", 400, "ambiguous_request"),
    "header-too-large": (
        GET + CID + b"Host: localhost\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        431,
        "headers_too_large",
    ),
    "obs-fold": (GET + CID + b"Host: localhost\r\nX-A: b\r\n c\r\n\r\n", 400, "bad_request"),
    "space-before-colon": (GET + CID + b"X-A: 1\r\nHost : localhost\r\n\r\n", 400, "bad_request"),
    "cl-conflict": (POST + CID + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "ambiguous_request"),
    "te-cl": (
        POST + CID + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "ambiguous_request",
    ),
    # A well-formed version other than 1.0/1.1 is refused by the head check, after the headers.
    "http-2.0": (b"GET /pub/x HTTP/2.0\r\n" + CID + b"Host: localhost\r\n\r\n", 505, "http_version_not_supported"),
    "http-0.9": (b"GET /pub/x\r\n" + CID + b"Host: localhost\r\n\r\n", 505, "http_version_not_supported"),
    "bad-chunk-body": (POST + CID + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, "bad_request"),
}
# Refusals made before any header was read (the request line is at fault): a new id each.
BEFORE_ANY_HEADER = {
    "target-too-long": (b"GET /pub/" + b"a" * 70_000 + b" HTTP/1.1\r\n" + CID + b"Host: localhost\r\n\r\n", 414),
    "unknown-method": (b"FOO /pub/x HTTP/1.1\r\n" + CID + b"Host: localhost\r\n\r\n", 501),
    "tls-to-http-port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),
}
# Ids the client sent that SPEC 2.1 does not accept: replaced, never echoed.
INVALID_IDS = {"space": b"bad id", "too-long": b"a" * 129, "slash": b"a/b", "empty": b""}


def test_every_refusal_carries_a_correlation_id_and_logs_it(recorder: _Recorder, tmp_path: Path) -> None:
    routes_on_one_backend(recorder.server_address[1])
    log_path = tmp_path / "web.log"

    with logged_web_process(log_path) as port:
        echoed = {name: one(port, request) for name, (request, _, _) in AFTER_THE_ID.items()}
        fresh = {name: one(port, request) for name, (request, _) in BEFORE_ANY_HEADER.items()}
        replaced = {
            name: one(port, GET + b"X-Correlation-Id: " + value + b"\r\nHost: a\r\nHost: b\r\n\r\n")
            for name, value in INVALID_IDS.items()
        }

    assert {name: (a.status, a.headers.get("x-correlation-id")) for name, a in echoed.items()} == {
        name: (status, CLIENT_ID) for name, (_, status, _) in AFTER_THE_ID.items()
    }
    assert {name: a.error["code"] for name, a in echoed.items()} == {
        name: code for name, (_, _, code) in AFTER_THE_ID.items()
    }
    assert {name: a.status for name, a in fresh.items()} == {name: s for name, (_, s) in BEFORE_ANY_HEADER.items()}
    made = [a.headers.get("x-correlation-id", "") for a in [*fresh.values(), *replaced.values()]]
    assert all(NEW_ID.fullmatch(cid) for cid in made), made
    assert len(set(made)) == len(made)  # one per refusal
    # The operator finds each refusal in the log by the id the client was given.
    logged = [line for line in log_lines(log_path) if str(line.get("message", "")).startswith("Refused a request")]
    assert sorted(str(line.get("correlation_id")) for line in logged) == sorted([CLIENT_ID] * len(echoed) + made), (
        logged
    )
    # And no refused request reached the upstream: not one byte (a chunked body that fails to
    # parse may leave an empty connection behind, nothing more).
    assert [request for request in recorder.settled() if request] == []


# The forms the README names, and the others of the kind httptools refuses before Sentinel's
# own head check: all are about how long the body is.
FRAMING_CONFLICTS = {
    "cl-cl-different": b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl-cl-same": b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl-list": b"Content-Length: 5, 5\r\n\r\nhello",
    "cl-sign": b"Content-Length: +5\r\n\r\nhello",
    "cl-negative": b"Content-Length: -1\r\n\r\n",
    "cl-empty": b"Content-Length: \r\n\r\n",
    "cl-overflow": b"Content-Length: 99999999999999999999999\r\n\r\n",
    "te-cl": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl-te": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "te-chunked-identity": b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te-chunked-chunked": b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te-twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-xchunked": b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-identity": b"Transfer-Encoding: identity\r\n\r\n",
    "te-gzip-chunked": b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
}


def test_conflicting_framing_is_an_ambiguous_request(recorder: _Recorder, tmp_path: Path) -> None:
    routes_on_one_backend(recorder.server_address[1])

    with logged_web_process(tmp_path / "web.log") as port:
        answers = {name: one(port, POST + rest) for name, rest in FRAMING_CONFLICTS.items()}

    assert {name: (a.status, a.error["code"]) for name, a in answers.items()} == dict.fromkeys(
        FRAMING_CONFLICTS, (400, "ambiguous_request")
    )
    # details.reason says which: Sentinel's own slug or the parser's sentence.
    reasons = {name: a.error["details"]["reason"] for name, a in answers.items()}  # type: ignore[index]
    assert reasons["cl-cl-different"] == "Duplicate Content-Length"
    assert "Content-Length" in str(reasons["te-cl"])
    assert all(reasons.values()), reasons
    assert recorder.settled() == []


def request_line(path: str, *headers: str, host: str = "localhost") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


def test_every_error_is_json_unless_a_browser_asks(staff: User, tmp_path: Path) -> None:
    log_path = tmp_path / "web.log"
    browser = Client()
    browser.force_login(staff)  # a session the web process reads from the same database
    session = f"Cookie: sessionid={browser.cookies['sessionid'].value}"

    with logged_web_process(log_path) as port:
        json_404 = {
            "/nope json": one(
                port, request_line("/nope", "Accept: application/json", f"X-Correlation-Id: {CLIENT_ID}")
            ),
            "/nope no-accept": one(port, request_line("/nope")),
            "/nope any": one(port, request_line("/nope", "Accept: */*")),
            "/PUB/x no-accept": one(port, request_line("/PUB/x")),
            "/static/nope no-accept": one(port, request_line("/static/nope.css")),
            "/nope json-over-html": one(port, request_line("/nope", "Accept: text/html;q=0.5, application/json")),
            "/nope html-tie": one(port, request_line("/nope", "Accept: text/html, application/json")),
        }
        browser_nope = one(port, request_line("/nope", f"Accept: {BROWSER_ACCEPT}"))
        browser_admin = one(port, request_line("/admin/nope", f"Accept: {BROWSER_ACCEPT}", session))
        script_admin = one(port, request_line("/admin/nope", "Accept: application/json", session))
        browser_api = one(port, request_line("/api/v1/nope", f"Accept: {BROWSER_ACCEPT}"))

    assert {name: (a.status, a.error["code"]) for name, a in json_404.items()} == dict.fromkeys(
        json_404, (404, "not_found")
    )
    assert json_404["/nope json"].headers["x-correlation-id"] == CLIENT_ID
    # A browser keeps Django's pages; the API is JSON for everyone.
    assert (browser_nope.status, browser_nope.headers["content-type"][:9]) == (404, "text/html")
    assert (browser_admin.status, browser_admin.headers["content-type"][:9]) == (404, "text/html")
    assert (browser_api.status, browser_api.error["code"]) == (404, "not_found")
    assert (script_admin.status, script_admin.error["code"]) == (404, "not_found")
    # One access line per 404, carrying the id the client was given; Django's own "Not Found: /nope"
    # warning would repeat it (settings.LOGGING keeps django.request for errors only).
    lines = log_lines(log_path)
    not_found = [line for line in lines if line.get("logger") == "sentinel.access" and line.get("status") == 404]
    assert len(not_found) >= len(json_404), not_found
    assert CLIENT_ID in [line.get("correlation_id") for line in not_found], not_found
    assert all(line.get("correlation_id") for line in not_found), not_found
    assert not [line for line in lines if line.get("logger") == "django.request"]


def test_a_host_not_allowed_is_a_json_400_and_a_warning(tmp_path: Path) -> None:
    log_path = tmp_path / "web.log"
    long_host = "a" * 300 + ".example"

    with logged_web_process(log_path) as port:
        evil = {
            "/nope": one(port, request_line("/nope", host="evil.example")),
            "/api/v1/routes": one(port, request_line("/api/v1/routes", host="evil.example")),
            "/admin/": one(port, request_line("/admin/", host="evil.example:8000")),
            "ip": one(port, request_line("/nope", host="10.1.2.3")),
            "long": one(port, request_line("/nope", host=long_host)),
        }
        browser_evil = one(port, request_line("/admin/", f"Accept: {BROWSER_ACCEPT}", host="evil.example"))

    # The JSON 400 naming the problem, on every kind of path, never echoing more than a bounded part.
    assert {name: (a.status, a.error["code"]) for name, a in evil.items()} == dict.fromkeys(evil, (400, "bad_request"))
    assert "The Host header 'evil.example' is not allowed" in str(evil["/nope"].error["message"])
    assert "'evil.example:8000'" in str(evil["/admin/"].error["message"])
    assert long_host not in evil["long"].body.decode() and len(evil["long"].body) < 600
    assert (browser_evil.status, browser_evil.headers["content-type"][:9]) == (400, "text/html")
    # The client's mistake is a warning line, without a traceback.
    output = log_path.read_text(errors="replace")
    assert "Traceback" not in output
    host_lines = [line for line in log_lines(log_path) if line.get("logger") == "django.security.DisallowedHost"]
    assert [line["level"] for line in host_lines] == ["warning"] * (len(evil) + 1)
    assert all(line.get("correlation_id") for line in host_lines)
