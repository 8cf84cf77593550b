"""An aiohttp connector that connects only where the egress policy allows.

Used by the gateway's forwarder for tenants' routes and by the monitors' check runner for every
http check (each redirect hop opens its connection through it too). The policy itself (which
addresses are refused, and why) is ``core.egress``; docs/egress.md tells the whole story. This
module is where aiohttp meets it. Plain Python, no Django.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.client_proto import ResponseHandler

from core.egress import EgressDenied, EgressPolicy

__all__ = ["GuardedConnector"]


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that connects only to addresses the egress policy allows.

    aiohttp resolves the host, then hands every address it will try to ``_wrap_create_connection``
    (private, aiohttp >= 3.10; numeric IP hosts skip the resolver but arrive here too). Every one is
    judged before any is tried, and the connected socket's peer again before a byte is sent, so a
    name re-pointed after the route was saved cannot lead anywhere the policy refuses.
    """

    def __init__(self, policy: EgressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy = policy

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: list[AddrInfoType],
        req: aiohttp.ClientRequest,
        timeout: aiohttp.ClientTimeout,
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        target = f"{req.url.raw_host}:{req.port}"
        for info in addr_infos:
            self._policy.check_address(str(info[4][0]), target=target)
        transport, protocol = await super()._wrap_create_connection(
            *args, addr_infos=addr_infos, req=req, timeout=timeout, client_error=client_error, **kwargs
        )
        peer = transport.get_extra_info("peername")
        rule = self._policy.refusal(str(peer[0])) if peer else "an address the socket does not report"
        if rule is not None:
            transport.close()
            raise EgressDenied(target=target, address=str(peer[0]) if peer else None, rule=rule)
        return transport, protocol
