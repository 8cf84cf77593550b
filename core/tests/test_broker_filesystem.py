"""core.broker_filesystem: embedded mode's broker never hands a worker a half-written message."""

from __future__ import annotations

import threading
from pathlib import Path

from kombu import Connection

MESSAGES = 2000
BODY = "x" * 20_000


def test_messages_put_while_a_consumer_polls_arrive_whole(tmp_path: Path) -> None:
    options = {
        "data_folder_in": str(tmp_path / "queue"),
        "data_folder_out": str(tmp_path / "queue"),
        "control_folder": str(tmp_path / "control"),
        "store_processed": False,
        "polling_interval": 0.0005,  # the consumer polls as fast as it can
    }
    for folder in ("queue", "control"):
        (tmp_path / folder).mkdir()
    received: list[int] = []
    errors: list[BaseException] = []

    def consume() -> None:
        with Connection(transport="core.broker_filesystem:Transport", transport_options=options) as connection:
            queue = connection.SimpleQueue("checks")
            try:
                while len(received) < MESSAGES:
                    try:
                        message = queue.get(timeout=10)
                    except queue.Empty:
                        return
                    assert message.payload["body"] == BODY
                    received.append(message.payload["n"])
                    message.ack()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    with Connection(transport="core.broker_filesystem:Transport", transport_options=options) as connection:
        queue = connection.SimpleQueue("checks")
        for n in range(MESSAGES):
            queue.put({"n": n, "body": BODY})
    consumer.join(timeout=60)

    assert errors == []
    assert sorted(received) == list(range(MESSAGES))
