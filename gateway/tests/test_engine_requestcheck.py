"""The head check of every request (issue 8 item 3): one reading only, or a JSON error.

Pure function tests; `test_gateway_frontdoor_e2e.py` sends the same kinds of request as raw bytes
to a real web process, including those its HTTP parser refuses before this check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.engine.requestcheck import RequestRefused, check_head, refusal_json, target_authority

HOST = (b"host", b"api.example")


@pytest.mark.parametrize(
    ("version", "target", "headers", "status", "reason"),
    [
        ("1.1", b"/x", [HOST, (b"host", b"evil.example")], 400, "duplicate_host"),
        ("1.1", b"/x", [HOST, HOST], 400, "duplicate_host"),
        ("1.1", b"/x", [], 400, "missing_host"),
        ("1.1", b"/x", [(b"host", b"a b")], 400, "invalid_host"),
        ("1.1", b"/x", [(b"host", b"user@api.example")], 400, "invalid_host"),
        ("1.1", b"/x", [(b"host", b"api.example/x")], 400, "invalid_host"),
        ("1.1", b"/x", [(b"host", b"api.example:80x")], 400, "invalid_host"),
        ("1.1", b"http://evil.example/x", [HOST], 400, "host_mismatch"),
        ("1.1", b"http://api.example:81/x", [HOST], 400, "host_mismatch"),
        ("1.1", b"http://u@api.example/x", [HOST], 400, "target_userinfo"),
        ("1.1", b"/x#frag", [HOST], 400, "fragment"),
        ("1.1", b"/x", [HOST, (b"content-length", b"5"), (b"content-length", b"5")], 400, "duplicate_content_length"),
        ("1.1", b"/x", [HOST, (b"content-length", b"5, 5")], 400, "content_length"),
        ("1.1", b"/x", [HOST, (b"content-length", b"-1")], 400, "content_length"),
        ("1.1", b"/x", [HOST, (b"content-length", b"0x5")], 400, "content_length"),
        ("1.1", b"/x", [HOST, (b"transfer-encoding", b"chunked"), (b"content-length", b"5")], 400, "te_and_cl"),
        ("1.1", b"/x", [HOST, (b"transfer-encoding", b"chunked, identity")], 400, "transfer_encoding"),
        ("1.1", b"/x", [HOST, (b"transfer-encoding", b"xchunked")], 400, "transfer_encoding"),
        ("1.1", b"/x", [HOST, (b"transfer-encoding", b"identity")], 400, "transfer_encoding"),
        ("1.1", b"/x", [HOST, (b"transfer-encoding", b"gzip, chunked")], 400, "transfer_encoding"),
        ("1.1", b"/x", [HOST, (b"transfer-encoding", b"chunked;q=1")], 400, "transfer_encoding"),
        (
            "1.1",
            b"/x",
            [HOST, (b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")],
            400,
            "transfer_encoding",
        ),
        ("1.0", b"/x", [HOST, (b"transfer-encoding", b"chunked")], 400, "te_in_http10"),
    ],
)
def test_ambiguous_heads_are_refused(
    version: str, target: bytes, headers: list[tuple[bytes, bytes]], status: int, reason: str
) -> None:
    with pytest.raises(RequestRefused) as refused:
        check_head(http_version=version, target=target, headers=headers)

    assert (refused.value.status, refused.value.code, refused.value.details) == (
        status,
        "ambiguous_request",
        {"reason": reason},
    )


@pytest.mark.parametrize("version", ["0.9", "2.0", "1.2"])
def test_other_versions_get_505(version: str) -> None:
    with pytest.raises(RequestRefused) as refused:
        check_head(http_version=version, target=b"/x", headers=[HOST])

    assert (refused.value.status, refused.value.code) == (505, "http_version_not_supported")


@pytest.mark.parametrize("target", [b"api.example:443", b"ftp://api.example/x", b"x"])
def test_targets_only_forward_proxies_serve_are_refused(target: bytes) -> None:
    with pytest.raises(RequestRefused) as refused:
        check_head(http_version="1.1", target=target, headers=[HOST])

    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("version", "target", "headers"),
    [
        ("1.1", b"/x", [HOST]),
        ("1.1", b"/x", [(b"host", b"")]),  # RFC 9112 3.2: empty when the target has no authority
        ("1.1", b"/x", [(b"host", b"127.0.0.1:8000")]),
        ("1.1", b"/x", [(b"host", b"[::1]:8000")]),
        ("1.0", b"/x", []),  # Host is required of HTTP/1.1 only
        ("1.1", b"*", [HOST]),
        ("1.1", b"http://API.example/x?y", [HOST]),  # host names are case-insensitive
        ("1.1", b"/x", [HOST, (b"content-length", b"12")]),
        ("1.1", b"/x", [HOST, (b"transfer-encoding", b"chunked")]),
        ("1.1", b"/x", [HOST, (b"transfer-encoding", b"Chunked ")]),  # coding names are case-insensitive
    ],
)
def test_unambiguous_heads_pass(version: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    check_head(http_version=version, target=target, headers=headers)


def test_the_error_body_is_spec_7s() -> None:
    refusal = RequestRefused(414, "uri_too_long", "Too long.", {"max_bytes": 8192})

    assert json.loads(refusal_json(refusal)) == {
        "error": {"code": "uri_too_long", "message": "Too long.", "details": {"max_bytes": 8192}}
    }
    assert target_authority(b"https://a.example:8443/x") == b"a.example:8443"


def test_the_request_check_imports_no_django() -> None:
    code = (
        "import sys, gateway.engine.requestcheck; "
        "bad = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True)
