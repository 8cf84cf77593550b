"""Whose address a request comes from, behind reverse proxies: one rule for Django and the proxy.

No Django here: the gateway's engine (plain async Python) and `core.http.client_ip` both call
`forwarded_client`.
"""

from __future__ import annotations

from collections.abc import Iterable


def forwarded_client(peer: str, forwarded_for: Iterable[str], trusted_hops: int) -> str:
    """The client's address: `peer` (the socket's), or the X-Forwarded-For entry that the last
    `trusted_hops` reverse proxies wrote.

    `forwarded_for` holds the header's values in order (a repeated header is one list, RFC 9110
    5.3). Each trusted proxy appends the address it received from, so the client is the entry
    `trusted_hops` from the right; anything left of it was written by the client and could be
    forged, so it is never believed (the rule of nginx's `real_ip_recursive`/Envoy's
    `xff_num_trusted_hops`). With fewer entries than hops (a request that bypassed a proxy, or
    `trusted_hops` 0) the peer is the answer.
    """
    if trusted_hops <= 0:
        return peer
    entries = [part.strip() for value in forwarded_for for part in value.split(",") if part.strip()]
    if len(entries) >= trusted_hops:
        return entries[-trusted_hops]
    return peer
