"""`manage.py await_ready --ports-free`, which `make run` runs before starting anything: a taken
port stops it with a message naming the port and what needs it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from pytest_django import Settings

from tests.support.net import free_port


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_taken_brain_port_stops_make_run_before_it_starts(taken_port: int, settings: Settings) -> None:
    settings.SENTINEL_FRAUD = {**settings.SENTINEL_FRAUD, "BRAIN_ADDRESS": f"127.0.0.1:{taken_port}"}

    with pytest.raises(CommandError, match=rf"port {taken_port} \(fraud brain\) is already in use"):
        call_command("await_ready", "--ports-free", "--port", str(free_port()), "--upstream-port", str(free_port()))


def test_free_ports_and_a_remote_brain_pass(taken_port: int, settings: Settings) -> None:
    # A brain on another host is not this machine's to check, whatever its port.
    settings.SENTINEL_FRAUD = {**settings.SENTINEL_FRAUD, "BRAIN_ADDRESS": f"brain.internal:{taken_port}"}

    call_command("await_ready", "--ports-free", "--port", str(free_port()), "--upstream-port", str(free_port()))
