"""Request heads written as the client's octets, for the forwarder's aiohttp client (issue 8 item 5).

Why this exists: the ASGI server hands header values (and the raw path and query) over as bytes;
aiohttp takes only ``str`` headers and writes the whole request head as UTF-8. Decoding a byte as
Latin-1 and letting aiohttp encode it gave ``caf\\xc3\\xa9`` upstream for a client's ``caf\\xe9``;
decoding with ``surrogateescape`` is worse, as aiohttp's C writer silently drops lone surrogates
(``_http_writer.pyx``, ``_write_utf8``) and its Python writer raises on them. aiohttp offers no
encoding option (aio-libs/aiohttp#7943, closed without one).

How: the forwarder decodes every octet as one Latin-1 character (a lossless round trip), builds
its session with ``request_class=ExactRequest``, whose headers live in an ``OctetHeaders`` mapping,
and ``serialize_octet_headers`` replaces aiohttp's head writer: for an ``OctetHeaders`` mapping it
writes the request line and headers back as Latin-1, so each character is its octet again; for any
other aiohttp client in the process it calls aiohttp's own writer, unchanged.

The hook is private aiohttp API (``aiohttp.http_writer._serialize_headers``, looked up by
``StreamWriter.write_headers`` on every call, aiohttp 3.10 to 3.14 at least). aiohttp is pinned in
requirements.txt, and ``gateway/tests/test_exact_proxying_e2e.py`` fails if the hook stops
applying (the upstream would receive UTF-8 again). Cost, measured with timeit on a 13-header head:
4.9 us against 3.5 us for aiohttp's C writer.

Plain Python, no Django.
"""

from __future__ import annotations

import re
from typing import Final

import aiohttp
import aiohttp.http_writer
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict

__all__ = ["ExactRequest", "OctetHeaders", "serialize_octet_headers"]

# What may never be written into a request head (aiohttp's own rule; RFC 9110 5.5, RFC 9112 4):
# controls other than HTAB, and DEL. CR or LF would let a value start a header of its own.
_FORBIDDEN_IN_HEAD: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class OctetHeaders(CIMultiDict[str]):
    """A request's headers whose ``str`` names and values stand for octets, one character each
    (Latin-1), written as such by ``serialize_octet_headers``."""


class ExactRequest(aiohttp.ClientRequest):
    """aiohttp's request with its headers in an ``OctetHeaders`` mapping; aiohttp adds its own
    (Host, Content-Length, Transfer-Encoding) to that same mapping, in ASCII."""

    def update_headers(self, headers: LooseHeaders | None) -> None:
        super().update_headers(headers)
        self.headers = OctetHeaders(self.headers)


_utf8_serialize_headers = aiohttp.http_writer._serialize_headers


def serialize_octet_headers(status_line: str, headers: CIMultiDict[str]) -> bytes:
    """A request head as bytes: Latin-1 for an ``OctetHeaders`` mapping, aiohttp's own UTF-8
    writer for any other. Raises ValueError on a control character in either case (aiohttp's rule
    and message; the ASGI server has already refused such requests, so this is a last guard).
    """
    if type(headers) is not OctetHeaders:
        return _utf8_serialize_headers(status_line, headers)
    lines = [status_line, *[name + ": " + value for name, value in headers.items()]]
    if _FORBIDDEN_IN_HEAD.search("".join(lines)):
        raise ValueError("Forbidden control character detected in headers. Potential header injection attack.")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


aiohttp.http_writer._serialize_headers = serialize_octet_headers
