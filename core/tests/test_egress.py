"""The egress policy (SPEC 7): which addresses tenant-configured targets may reach, at save and at connect."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from core.egress import EgressDenied, EgressPolicy, guarded_transport

PRODUCTION = EgressPolicy()

# (address, words of the rule the refusal must name). Every special-purpose kind, and every IPv6
# spelling that leads to a refused IPv4 address.
REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private (RFC 1918)"),
    ("172.16.5.4", "private (RFC 1918)"),
    ("172.31.255.255", "private (RFC 1918)"),
    ("192.168.1.1", "private (RFC 1918)"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.8", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("2001:db8::1", "documentation"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fe80::1", "link-local"),
    ("fe80::1%1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("100::1", "discard"),
    ("2001::1", "Teredo"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    # IPv4 inside IPv6: judged by the IPv4 address they lead to.
    ("::ffff:127.0.0.1", "loopback (RFC 1122), in its IPv4-mapped form 127.0.0.1"),
    ("::ffff:7f00:1", "loopback (RFC 1122), in its IPv4-mapped form 127.0.0.1"),
    ("0:0:0:0:0:ffff:7f00:0001", "in its IPv4-mapped form 127.0.0.1"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:10.0.0.1", "private"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("::ffff:0:7f00:1", "IPv4-translated"),
    ("64:ff9b::7f00:1", "loopback (RFC 1122), in its NAT64 (RFC 6052) form 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata"),
    ("2002:7f00:1::", "loopback (RFC 1122), in its 6to4 (RFC 3056) form 127.0.0.1"),
    ("2002:c0a8:101::1", "private (RFC 1918), in its 6to4"),
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001:82b::200e", "::ffff:8.8.8.8"]


@pytest.mark.parametrize(("address", "rule"), REFUSED)
def test_the_production_policy_refuses_every_non_public_address(address: str, rule: str) -> None:
    refusal = PRODUCTION.refusal(address)

    assert refusal is not None and rule in refusal, refusal


@pytest.mark.parametrize("address", PUBLIC)
def test_public_unicast_addresses_pass(address: str) -> None:
    assert PRODUCTION.refusal(address) is None


@pytest.mark.parametrize(
    ("networks", "allow_loopback", "address"),
    [
        (["10.0.0.0/8"], False, "10.20.30.40"),
        (["10.0.0.0/8"], False, "::ffff:10.20.30.40"),
        (["192.168.0.0/16", "fd00::/8"], False, "fd00::5"),
        (["169.254.169.254/32"], False, "169.254.169.254"),
        (["127.0.0.1"], False, "127.0.0.1"),
        ([], True, "127.0.0.1"),
        ([], True, "127.8.9.10"),
        ([], True, "::1"),
        ([], True, "::ffff:127.0.0.1"),
    ],
)
def test_the_operator_allows_networks_and_loopback(networks: list[str], allow_loopback: bool, address: str) -> None:
    policy = EgressPolicy.from_strings(networks, allow_loopback=allow_loopback)

    assert policy.refusal(address) is None


@pytest.mark.parametrize(
    ("networks", "allow_loopback", "address"),
    [
        (["10.0.0.0/8"], False, "172.16.0.1"),
        (["127.0.0.1/32"], False, "127.0.0.2"),
        ([], True, "10.0.0.1"),
        ([], True, "169.254.169.254"),
        ([], True, "0.0.0.0"),
    ],
)
def test_an_allowance_opens_only_what_it_names(networks: list[str], allow_loopback: bool, address: str) -> None:
    policy = EgressPolicy.from_strings(networks, allow_loopback=allow_loopback)

    assert policy.refusal(address) is not None


@pytest.mark.parametrize("junk", ["10.0.0.1/8", "10.0.0.0/33", "intranet", "fd00::/129"])
def test_a_network_that_is_not_a_cidr_is_refused_as_configuration(junk: str) -> None:
    with pytest.raises(ValueError):
        EgressPolicy.from_strings([junk], allow_loopback=False)


# Every spelling getaddrinfo (the OS's parser, which the connecting code uses) reads as loopback,
# link-local or unspecified: (target, the address the refusal must name).
SPELLINGS = [
    ("http://127.0.0.1:8080/", "127.0.0.1"),
    ("http://2130706433/", "127.0.0.1"),
    ("http://0x7f000001/", "127.0.0.1"),
    ("http://017700000001/", "127.0.0.1"),
    ("http://0177.0.0.1/", "127.0.0.1"),
    ("http://0x7f.1/", "127.0.0.1"),
    ("http://127.1/", "127.0.0.1"),
    ("http://127.0.1/", "127.0.0.1"),
    ("http://127.0.0.1./", "127.0.0.1"),
    ("http://[::1]:8080/x", "::1"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
    ("http://[0:0:0:0:0:ffff:7f00:1]/", "::ffff:127.0.0.1"),
    ("http://localhost/", "127.0.0.1"),
    ("http://LOCALHOST:9000/", "127.0.0.1"),
    ("http://localhost./", "127.0.0.1"),
    ("http://api.localhost/", "127.0.0.1"),
    ("http://user:secret@127.0.0.1/", "127.0.0.1"),
    ("https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "127.0.0.1"),  # full-width digits, NFKC-folded
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("http://2852039166/", "169.254.169.254"),
    ("http://0/", "0.0.0.0"),
    ("http://0.0.0.0:8000/", "0.0.0.0"),
    ("http://[::]/", "::"),
    ("10.1.2.3:6379", "10.1.2.3"),
    ("[::1]:25", "::1"),
]


@pytest.mark.parametrize(("target", "address"), SPELLINGS)
def test_every_spelling_of_a_refused_address_is_refused_at_save_naming_it(target: str, address: str) -> None:
    with pytest.raises(EgressDenied) as refused:
        PRODUCTION.check_target(target)

    assert refused.value.address == address
    assert address in str(refused.value)
    assert "EGRESS_ALLOWED_NETWORKS" in str(refused.value)


def test_public_targets_pass_at_save() -> None:
    assert PRODUCTION.check_target("https://8.8.8.8/hook") == ("8.8.8.8",)
    assert PRODUCTION.check_target("http://[2606:4700:4700::1111]:8080") == ("2606:4700:4700::1111",)


def test_a_name_that_does_not_resolve_is_accepted_at_save_and_left_to_the_connect_check() -> None:
    assert PRODUCTION.check_target("https://hooks.invalid/x") == ()


def test_every_resolved_address_must_pass() -> None:
    def split_horizon(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]

    with pytest.raises(EgressDenied) as refused:
        PRODUCTION.check_target("https://rebind.example/", resolver=split_horizon)

    assert refused.value.address == "10.0.0.7"


@pytest.mark.parametrize("target", ["http:///nohost", "http://[::1/", "http://h:99999/", ":80"])
def test_a_target_without_a_readable_host_is_refused(target: str) -> None:
    with pytest.raises(EgressDenied):
        PRODUCTION.check_target(target)


class _Listener:
    """A TCP server on 127.0.0.1 that counts the connections it accepts and answers 200."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")


@pytest.fixture
def listener() -> Iterator[_Listener]:
    server = _Listener()
    yield server
    server.sock.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
def test_an_httpx_client_under_the_policy_refuses_before_connecting(listener: _Listener, host: str) -> None:
    with httpx.Client(transport=guarded_transport(PRODUCTION)) as client, pytest.raises(EgressDenied) as refused:
        client.get(f"http://{host}:{listener.port}/")

    assert refused.value.rule.startswith("loopback")
    assert listener.accepted == 0


def test_an_httpx_client_under_an_allowing_policy_connects(listener: _Listener) -> None:
    policy = EgressPolicy.from_strings(["127.0.0.1/32"], allow_loopback=False)

    with httpx.Client(transport=guarded_transport(policy)) as client:
        response = client.get(f"http://127.0.0.1:{listener.port}/")

    assert response.status_code == 200
    assert listener.accepted == 1


def test_even_a_client_that_follows_redirects_cannot_be_bounced_to_a_refused_address(listener: _Listener) -> None:
    # Sentinel's clients never follow redirects; the transport would refuse the hop all the same.
    class Bounce(_Listener):
        def _serve(self) -> None:
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)
                    location = f"http://127.0.0.2:{listener.port}/internal"
                    conn.sendall(f"HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n".encode())

    bounce = Bounce()
    policy = EgressPolicy.from_strings(["127.0.0.1/32"], allow_loopback=False)
    try:
        with (
            httpx.Client(transport=guarded_transport(policy), follow_redirects=True) as client,
            pytest.raises(EgressDenied) as refused,
        ):
            client.get(f"http://127.0.0.1:{bounce.port}/")
    finally:
        bounce.sock.close()

    assert refused.value.address == "127.0.0.2"
    assert listener.accepted == 0
