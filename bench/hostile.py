"""What an HTTP server answers to the hardening issue's hostile requests (issue 13, lever 1, 1c).

Run: ``.venv/bin/python -m bench.hostile --port P`` against any server on 127.0.0.1:P (say
``python -m granian --interface asgi ... bench.servercost:app``, or ``manage.py serve``). Each
request goes on its own connection as raw bytes; the first response's status, content type and
body (cut to 70 characters) are printed, or ``reset``/``closed, no answer``/``no answer in 5 s``.

SPEC 7 wants the JSON error with a 4xx/5xx for each (gateway/tests/test_gateway_frontdoor_e2e.py
holds Sentinel's server to it); a ``400 text/plain`` or a reset is what Sentinel's protocol
replaced. The requests are a selection of that test's, by kind.
"""

from __future__ import annotations

import argparse
import contextlib
import socket

GET = b"GET /x HTTP/1.1\r\n"
POST = b"POST /x HTTP/1.1\r\nHost: localhost\r\n"
REQUESTS: dict[str, bytes] = {
    "control (a good GET)": GET + b"Host: localhost\r\nConnection: close\r\n\r\n",
    "target 70,000 bytes": b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "target 9,000 bytes": b"GET /x?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "one header 70,000 bytes": GET + b"Host: localhost\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    "headers 40 KiB in all": GET
    + b"Host: localhost\r\n"
    + b"".join(b"X-%d: %s\r\n" % (n, b"v" * 4000) for n in range(10))
    + b"\r\n",
    "duplicate Content-Length": POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "same Content-Length twice": POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "TE + CL": POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE chunked, identity": POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "obs-fold": GET + b"Host: localhost\r\nX-A: b\r\n c\r\n\r\n",
    "space before colon": GET + b"Host : localhost\r\n\r\n",
    "NUL in a header value": GET + b"Host: localhost\r\nX-A: a\x00b\r\n\r\n",
    "bad chunk size": POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk without CRLF": POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "HTTP/2.0 version": b"GET /x HTTP/2.0\r\nHost: localhost\r\n\r\n",
    "HTTP/1.2 version": b"GET /x HTTP/1.2\r\nHost: localhost\r\n\r\n",
    "unknown method FOO": b"FOO /x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "duplicate Host": GET + b"Host: localhost\r\nHost: evil.example\r\n\r\n",
    "missing Host": GET + b"\r\n",
    "TLS to the HTTP port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
}


def answer(port: int, request: bytes, timeout: float = 5.0) -> str:
    """The first response to `request` on a new connection, in one line."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer and stop reading before the end
            sock.sendall(request)
        try:
            while b"\r\n\r\n" not in received or len(received) < received.index(b"\r\n\r\n") + 200:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            if not received:
                return "reset"
        except TimeoutError:
            if not received:
                return f"no answer in {timeout:g} s"
    if not received:
        return "closed, no answer"
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", len(body)) or 0)
    text = body[:length].decode("latin-1").replace("\n", " ")
    return f"{' '.join(status_line.split()[1:])} | {headers.get('content-type', '-')} | {text[:70]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    print("| request | answer (status, content type, body) |\n|---|---|")
    for name, request in REQUESTS.items():
        print(f"| {name} | {answer(port, request).replace('|', '/')} |", flush=True)


if __name__ == "__main__":
    main()
