"""`forwarded_client`: whose address a request comes from behind TRUSTED_PROXY_COUNT proxies."""

from __future__ import annotations

import pytest

from core.forwarded import forwarded_client

PEER = "10.0.0.5"  # the load balancer the request arrived from


@pytest.mark.parametrize(
    ("forwarded_for", "hops", "client"),
    [
        ([], 0, PEER),
        (["203.0.113.7"], 0, PEER),  # no proxy trusted: the header is the client's word
        (["203.0.113.7"], 1, "203.0.113.7"),
        (["6.6.6.6, 203.0.113.7"], 1, "203.0.113.7"),  # a forged entry left of the proxy's
        (["6.6.6.6", "203.0.113.7"], 1, "203.0.113.7"),  # repeated header lines are one list
        (["203.0.113.7, 10.1.1.1"], 2, "203.0.113.7"),  # CDN then load balancer
        (["203.0.113.7"], 2, PEER),  # fewer entries than proxies: it bypassed one
        ([], 1, PEER),
        (["  ,203.0.113.7 , "], 1, "203.0.113.7"),
    ],
)
def test_the_client_is_the_entry_the_trusted_proxies_wrote(forwarded_for: list[str], hops: int, client: str) -> None:
    assert forwarded_client(PEER, forwarded_for, hops) == client
