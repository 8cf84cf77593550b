"""The egress policy: which addresses an outbound connection that a tenant configured may reach (SPEC 7).

A tenant-owned target (a route's upstream, a notification channel; monitors next) may reach only
*public unicast* addresses, unless the operator allows a network (``EGRESS_ALLOWED_NETWORKS``) or
loopback (``EGRESS_ALLOW_LOOPBACK``, on in embedded mode so the demo works). Everything else is
refused, and the refusal names the address and the rule it fell under:

* IPv4: "this network" 0/8, RFC 1918 private, CGNAT 100.64/10, loopback 127/8, link-local 169.254/16
  (the cloud metadata service 169.254.169.254 by name), IETF 192.0.0/24, documentation, benchmarking
  198.18/15, multicast 224/4, broadcast, reserved 240/4;
* IPv6: unspecified ``::``, loopback ``::1``, unique local fc00::/7, link-local fe80::/10, site-local
  fec0::/10, multicast ff00::/8, documentation, discard, Teredo, local-use NAT64;
* IPv6 forms that carry an IPv4 address (mapped ``::ffff:127.0.0.1`` = ``::ffff:7f00:1``, compatible
  ``::127.0.0.1``, SIIT ``::ffff:0:a.b.c.d``, NAT64 ``64:ff9b::7f00:1``, 6to4 ``2002:7f00:1::``) are
  judged by the IPv4 address they lead to;
* anything else Python's ``ipaddress`` does not call global (the IANA special-purpose registries).

Two checks use it. At save time ``EgressPolicy.check_target`` resolves the target's host with
``getaddrinfo``, the parser the connecting code uses too, so ``2130706433``, ``0177.0.0.1``,
``0x7f.1``, ``127.1``, ``[::1]`` and ``localhost.`` are seen as the loopback they are; every address
must pass. A name that does not resolve at save time is accepted: DNS may be down or the name not yet
published, and the connect-time check judges whatever it resolves to later. At connect time the
caller judges the address it actually connects to (``EgressPolicy.refusal``), so a name re-pointed
after the save (DNS rebinding) cannot pass: the gateway's aiohttp connector does it in
``core.egress_aiohttp``, httpx clients through ``guarded_transport`` below.

Plain Python: no Django (the gateway engine imports this module).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpcore
import httpx

__all__ = [
    "EgressDenied",
    "EgressPolicy",
    "GuardedBackend",
    "IPAddress",
    "guarded_transport",
    "resolve",
    "split_target",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# What the operator reads in every refusal: the one setting that changes the outcome.
HOW_TO_ALLOW: Final = (
    "Tenant-owned targets must resolve to public unicast addresses; an operator can allow a network "
    "with EGRESS_ALLOWED_NETWORKS (comma-separated CIDRs)."
)

# First match wins, so the narrower and better-named ranges come first (the metadata service
# before link-local, broadcast before 240/4). Sources: IANA IPv4/IPv6 Special-Purpose Address
# Registries (RFC 6890 and the RFCs named).
_V4_RULES: Final = tuple(
    (ipaddress.IPv4Network(net), rule)
    for net, rule in (
        ("0.0.0.0/8", "'this network', including the unspecified 0.0.0.0 (RFC 1122)"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "shared address space / carrier-grade NAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback (RFC 1122)"),
        ("169.254.169.254/32", "link-local: the cloud metadata service (RFC 3927)"),
        ("169.254.0.0/16", "link-local (RFC 3927)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
        ("192.0.2.0/24", "documentation, TEST-NET-1 (RFC 5737)"),
        ("192.88.99.0/24", "6to4 relay anycast, deprecated (RFC 7526)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking (RFC 2544)"),
        ("198.51.100.0/24", "documentation, TEST-NET-2 (RFC 5737)"),
        ("203.0.113.0/24", "documentation, TEST-NET-3 (RFC 5737)"),
        ("224.0.0.0/4", "multicast (RFC 5771)"),
        ("255.255.255.255/32", "limited broadcast (RFC 919)"),
        ("240.0.0.0/4", "reserved (RFC 1112)"),
    )
)
_V6_RULES: Final = tuple(
    (ipaddress.IPv6Network(net), rule)
    for net, rule in (
        ("::/128", "unspecified (RFC 4291)"),
        ("::1/128", "loopback (RFC 4291)"),
        ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
        ("100::/64", "discard-only (RFC 6666)"),
        ("2001::/32", "Teredo tunnelling (RFC 4380)"),
        ("2001:db8::/32", "documentation (RFC 3849)"),
        ("3fff::/20", "documentation (RFC 9637)"),
        ("fc00::/7", "unique local (RFC 4193)"),
        ("fe80::/10", "link-local (RFC 4291)"),
        ("fec0::/10", "site-local, deprecated (RFC 3879)"),
        ("ff00::/8", "multicast (RFC 4291)"),
    )
)
# IPv6 prefixes whose low 32 bits are an IPv4 address the packet ends up at (6to4 is handled apart:
# its IPv4 address sits in bits 16-47).
_V4_CARRIERS: Final = tuple(
    (ipaddress.IPv6Network(net), form)
    for net, form in (
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("::ffff:0:0:0/96", "IPv4-translated (RFC 2765)"),
        ("64:ff9b::/96", "NAT64 (RFC 6052)"),
        ("::/96", "IPv4-compatible, deprecated (RFC 4291)"),
    )
)
_SIX_TO_FOUR: Final = ipaddress.IPv6Network("2002::/16")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class EgressDenied(Exception):
    """The egress policy refuses a target.

    ``target`` is what was configured (URL or host:port), ``address`` the address it resolved to
    (None when the target itself could not be read), ``rule`` why that address is refused. ``str()``
    is the operator-readable sentence, naming the address, the rule and how to allow it.
    """

    def __init__(self, *, target: str, address: str | None, rule: str) -> None:
        self.target, self.address, self.rule = target, address, rule
        if address is None:
            message = f"Egress to {target!r} refused: {rule}."
        else:
            message = f"Egress to {target!r} refused: it resolves to {address}, which is {rule}. {HOW_TO_ALLOW}"
        super().__init__(message)
        self.message = message

    def details(self) -> dict[str, str | None]:
        """The refusal as a JSON object: target, address, rule."""
        return {"target": self.target, "address": self.address, "rule": self.rule}


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Public unicast only, plus the operator's ``allowed_networks`` and, if ``allow_loopback``,
    127.0.0.0/8 and ::1. Immutable; build one from settings with ``from_strings``."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allow_loopback: bool = False

    @classmethod
    def from_strings(cls, networks: Iterable[str], *, allow_loopback: bool) -> EgressPolicy:
        """``networks`` are CIDRs (``10.0.0.0/8``, ``fd00::/8``; a bare address is a /32 or /128).

        Raises ValueError on a string that is not a network (host bits set included: ``10.0.0.1/8``
        is more likely a typo than an intent)."""
        return cls(tuple(ipaddress.ip_network(net.strip()) for net in networks if net.strip()), allow_loopback)

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why ``address`` may not be connected to, or None when it may. Raises ValueError when
        ``address`` is not an IP address (an IPv6 zone, ``fe80::1%eth0``, is accepted)."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if self._allowed(ip):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id:  # the zone names an interface, not a different address
                ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
            embedded = _embedded_ipv4(ip)
            # :: and ::1 sit inside the IPv4-compatible ::/96 but are IPv6's own unspecified and loopback.
            if embedded is not None and int(ip) > 1:
                form, v4 = embedded
                inner = self.refusal(v4)
                return None if inner is None else f"{inner}, in its {form} form {v4}"
            rules: Sequence[tuple[IPNetwork, str]] = _V6_RULES
        else:
            rules = _V4_RULES
        for network, rule in rules:
            if ip in network:
                return rule
        if not ip.is_global:
            return "not globally routable (IANA special-purpose registry)"
        return None

    def check_address(self, address: str | IPAddress, *, target: str) -> None:
        """Raises EgressDenied naming ``address`` and its rule when the policy refuses it."""
        rule = self.refusal(address)
        if rule is not None:
            raise EgressDenied(target=target, address=str(address), rule=rule)

    def check_target(self, target: str, *, resolver: Resolver | None = None) -> tuple[str, ...]:
        """The save-time check of a URL (``http://host:port/...``) or ``host:port``.

        Resolves the host (``resolve``: getaddrinfo) and returns the addresses checked, every one of
        which passed. Raises EgressDenied for the first refused address, or when the target has no
        host to read. A name that does not resolve returns ``()``: it is accepted here and judged at
        connect time (module docstring)."""
        try:
            host, port = split_target(target)
        except ValueError as exc:
            rule = f"it has no host and port Sentinel can read ({exc})"
            raise EgressDenied(target=target, address=None, rule=rule) from None
        try:
            addresses = (resolver or resolve)(host, port)
        except (OSError, UnicodeError):
            return ()
        for address in addresses:
            self.check_address(address, target=target)
        return tuple(addresses)

    def _allowed(self, ip: IPAddress) -> bool:
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
            candidates.append(embedded[1])
        for candidate in candidates:
            if self.allow_loopback and candidate.is_loopback:
                return True
            if any(candidate.version == net.version and candidate in net for net in self.allowed_networks):
                return True
        return False


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """(form, IPv4 address) for the IPv6 forms that lead to an IPv4 address, else None."""
    if ip.sixtofour is not None:
        return "6to4 (RFC 3056)", ip.sixtofour
    for network, form in _V4_CARRIERS:
        if ip in network:
            return form, ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def split_target(target: str) -> tuple[str, int]:
    """(host, port) of a URL or of ``host:port``; the port defaults to the scheme's (80, 443), else 0.

    The host comes out as ``urllib.parse`` reads it (lower-cased, IPv6 brackets removed, user
    information dropped), without trailing dots. Raises ValueError when there is no host or the port is not a number."""
    text = target.strip()
    parts = urlsplit(text if "://" in text else "//" + text)
    # A trailing dot only marks the name fully qualified: "localhost." is localhost, "127.0.0.1." is
    # 127.0.0.1 to a resolver that tolerates it.
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("no host")
    port = parts.port  # raises ValueError on junk or out of range
    return host, port if port is not None else _DEFAULT_PORTS.get(parts.scheme.lower(), 0)


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (getaddrinfo, TCP), in the resolver's order, without repeats.

    getaddrinfo is what socket.create_connection and aiohttp's default resolver call, so numeric
    spellings (``2130706433``, ``0x7f.1``, ``127.1``) come out as the address they mean. Raises
    OSError (socket.gaierror) when the name does not resolve, UnicodeError when it cannot be encoded."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        # RFC 6761 6.3: localhost names are loopback whatever DNS says (and whether or not it answers).
        return ["127.0.0.1", "::1"]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.NetworkBackend):
    """An httpcore network backend that connects only where ``policy`` allows.

    It resolves the host itself, refuses (EgressDenied) when any address is refused, connects to a
    vetted address and checks the connected socket's peer before a byte is sent; TLS then runs on
    that socket with the original host name (httpcore passes it to start_tls). A name that does not
    resolve fails as httpcore.ConnectError, a transient error.
    """

    def __init__(self, policy: EgressPolicy, inner: httpcore.NetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        target = f"{host}:{port}"
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        for address in addresses:
            self.policy.check_address(address, target=target)
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            _check_peer(self.policy, stream, target)
            return stream
        raise failure or httpcore.ConnectError(f"{host} resolved to no address")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        raise EgressDenied(target=path, address=None, rule="a Unix socket is not a network address")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def _check_peer(policy: EgressPolicy, stream: httpcore.NetworkStream, target: str) -> None:
    """The address actually connected to must pass too; the stream is closed when it does not."""
    sock = stream.get_extra_info("socket")
    if not isinstance(sock, socket.socket):
        return  # a backend without sockets (tests' MockBackend): nothing was really connected
    try:
        peer = str(sock.getpeername()[0])
        policy.check_address(peer, target=target)
    except BaseException:
        with contextlib.suppress(Exception):
            stream.close()
        raise


def guarded_transport(policy: EgressPolicy, *, verify: bool = True) -> httpx.HTTPTransport:
    """An httpx transport whose every connection goes through ``GuardedBackend(policy)``.

    httpx 0.28 takes no network backend (encode/httpx#3749 proposes it), so the transport's pool is
    replaced by an httpcore pool built with one. Environment proxies are ignored (``trust_env`` off):
    a proxy would be the address connected to, and the policy could no longer see the target.
    """
    transport = httpx.HTTPTransport(verify=verify, trust_env=False)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
        network_backend=GuardedBackend(policy),
    )
    return transport
