"""Checks of a request's head that decide whether Sentinel reads it at all (issue 8 items 3 and 6).

A request that two parsers could read differently is refused with 400 before anything is
forwarded or handed to Django (RFC 9112 3.2, 6.1, 6.3; SPEC 7): the Host header missing (HTTP/1.1),
repeated, malformed or disagreeing with an absolute-form target; Content-Length repeated or not a
plain number; Transfer-Encoding other than exactly ``chunked``, repeated, next to Content-Length,
or on HTTP/1.0. The web process's HTTP protocol (`gateway.http_server`) runs `check_head` once per
request, when the head is complete and before the body is read; what its parser refuses by itself
(obs-fold, whitespace before the colon, NUL/CR/LF in values, invalid names, ...) never gets here
and is answered with the same JSON error.

Plain Python: no Django, no server import.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from core.errors import error_json

Header = tuple[bytes, bytes]

# RFC 9112 2.3: the versions Sentinel speaks. HTTP/2 arrives through its own connection preface,
# never as an HTTP/1 request line; "HTTP/2.0" or "HTTP/0.9" in one is refused with 505.
SUPPORTED_VERSIONS: Final = frozenset({"1.0", "1.1"})
# RFC 3986 3.2.2 host (IP-literal, IPv4 or reg-name) and an optional port, as Host carries them
# (RFC 9110 7.2). One pass, no nested quantifiers: linear on any input.
_HOST: Final = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_OWS: Final = b" \t"


class RequestRefused(Exception):
    """A request answered with the JSON error of SPEC 7 before any application sees it.

    ``status`` is the HTTP status (400, 414, 431, 501, 505), ``code`` the error code, ``message``
    the sentence for the client, ``details`` a JSON value or None.
    """

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def ambiguous(reason: str, message: str) -> RequestRefused:
    """The 400 of a request two parsers could read differently; ``details.reason`` names the kind."""
    return RequestRefused(400, "ambiguous_request", message, {"reason": reason})


def refusal_json(refusal: RequestRefused) -> bytes:
    """The JSON body of SPEC 7: ``{"error": {"code", "message", "details"}}``."""
    return error_json(refusal.code, refusal.message, refusal.details)


def check_head(
    *,
    http_version: str,
    target: bytes,
    headers: Sequence[Header],
    max_header_bytes: int | None = None,
    max_total_bytes: int | None = None,
) -> None:
    """Raises RequestRefused unless the request head has one reading only and fits the limits.

    ``http_version`` is "1.0", "1.1", ...; ``target`` the request target as received; ``headers``
    the header fields with lower-case names, in order, repeats included (as ASGI carries them).
    ``max_header_bytes`` / ``max_total_bytes`` bound one header's and all headers' name + value
    bytes (431 ``headers_too_large``); None means no limit.
    """
    if http_version not in SUPPORTED_VERSIONS:
        raise RequestRefused(
            505,
            "http_version_not_supported",
            f"HTTP/{http_version} is not supported; use HTTP/1.1.",
            {"supported": sorted(SUPPORTED_VERSIONS)},
        )
    hosts: list[bytes] = []
    lengths: list[bytes] = []
    codings: list[bytes] = []
    largest = total = 0
    # One pass over the headers: this runs for every request the web process serves.
    for name, value in headers:
        size = len(name) + len(value)
        total += size
        if size > largest:
            largest = size
        if name == b"host":
            hosts.append(value)
        elif name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings.append(value)
    if (max_header_bytes is not None and largest > max_header_bytes) or (
        max_total_bytes is not None and total > max_total_bytes
    ):
        raise headers_too_large(max_header_bytes, max_total_bytes)
    _check_host(http_version, target, hosts)
    if lengths or codings:
        _check_framing(http_version, lengths, codings)


def headers_too_large(max_header_bytes: int | None, max_total_bytes: int | None) -> RequestRefused:
    """The 431 of a head over its limits (RFC 6585 5)."""
    return RequestRefused(
        431,
        "headers_too_large",
        "Request headers are too large.",
        {"max_header_bytes": max_header_bytes, "max_total_bytes": max_total_bytes},
    )


def _check_host(http_version: str, target: bytes, hosts: list[bytes]) -> None:
    if len(hosts) > 1:
        raise ambiguous("duplicate_host", "The request has more than one Host header.")
    if not hosts:
        if http_version == "1.0":
            return
        raise ambiguous("missing_host", "An HTTP/1.1 request must have a Host header.")
    host = hosts[0].strip(_OWS)
    if not _HOST.fullmatch(host):
        raise ambiguous("invalid_host", "The Host header is not a valid host[:port].")
    authority = target_authority(target)
    if authority is not None and authority.lower() != host.lower():
        raise ambiguous("host_mismatch", "The Host header disagrees with the absolute-form request target.")


def target_authority(target: bytes) -> bytes | None:
    """The authority of an absolute-form target (``http://a.example:81/x`` → ``a.example:81``),
    None for origin form (``/x``) and ``*``. RequestRefused for the other forms, which only
    forward proxies serve (authority form: CONNECT), and for a fragment, which no target carries."""
    if target.startswith(b"/") or target == b"*":
        if b"#" in target:
            raise ambiguous("fragment", "A request target cannot carry a fragment ('#').")
        return None
    scheme, separator, rest = target.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        raise RequestRefused(400, "bad_request", "The request target must be a path or an http(s) URL.")
    authority = re.split(rb"[/?#]", rest, maxsplit=1)[0]
    if b"@" in authority or b"#" in rest:
        raise ambiguous("target_userinfo", "The request target carries user information or a fragment.")
    return authority


def _check_framing(http_version: str, lengths: list[bytes], codings: list[bytes]) -> None:
    """RFC 9112 6.1 and 6.3: one way to find where the body ends, or 400 (then the connection
    closes, as the caller does for every refusal)."""
    if codings:
        if lengths:
            raise ambiguous("te_and_cl", "Transfer-Encoding and Content-Length cannot both frame a request.")
        if http_version == "1.0":
            raise ambiguous("te_in_http10", "HTTP/1.0 requests cannot use Transfer-Encoding.")
        # Coding names are case-insensitive (RFC 9112 7); OWS around the value is no part of it.
        if len(codings) > 1 or codings[0].strip(_OWS).lower() != b"chunked":
            raise ambiguous("transfer_encoding", "The only Transfer-Encoding accepted is 'chunked', once.")
        return
    if len(lengths) > 1:
        raise ambiguous("duplicate_content_length", "The request has more than one Content-Length header.")
    if not lengths[0].strip(_OWS).isdigit():
        raise ambiguous("content_length", "Content-Length must be one non-negative integer.")
