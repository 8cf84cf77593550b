"""core.broker_filesystem: embedded mode's broker never hands a worker a half-written message."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from kombu import Connection, Exchange, Queue

from tests.support.threads import at_once

MESSAGES = 2000
BODY = "x" * 20_000
EXCHANGES = 200


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


def test_queues_bound_while_a_publisher_reads_the_table_are_all_kept(tmp_path: Path) -> None:
    """The exchange table appears whole: a publisher reading it while queues are being bound never
    reads it empty or cut (kombu's own bind created it before writing it), and no bind is lost."""
    options = {
        "data_folder_in": str(tmp_path / "queue"),
        "data_folder_out": str(tmp_path / "queue"),
        "control_folder": str(tmp_path / "control"),
        "store_processed": False,
    }
    (tmp_path / "queue").mkdir()
    errors: list[BaseException] = []
    binding = threading.Event()

    def bind(n: int) -> None:
        try:
            with Connection(transport="core.broker_filesystem:Transport", transport_options=options) as connection:
                binding.wait(10)
                for k in range(EXCHANGES):  # each new table is a moment kombu's bind left it empty
                    exchange = Exchange(f"jobs{k}", type="direct")
                    Queue(f"q{n}-{k}", exchange, routing_key="jobs")(connection.default_channel).declare()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    binders = [threading.Thread(target=bind, args=(n,)) for n in range(4)]
    for thread in binders:
        thread.start()
    with Connection(transport="core.broker_filesystem:Transport", transport_options=options) as connection:
        channel = connection.default_channel
        binding.set()
        while any(thread.is_alive() for thread in binders):
            for k in range(EXCHANGES):
                channel.get_table(f"jobs{k}")  # raises on a table read empty or cut
        for thread in binders:
            thread.join(timeout=30)
        bound = {entry.queue for k in range(EXCHANGES) for entry in channel.get_table(f"jobs{k}")}

    assert errors == []
    assert bound == {f"q{n}-{k}" for n in range(4) for k in range(EXCHANGES)}


def _options(folder: Path) -> dict[str, object]:
    (folder / "queue").mkdir(parents=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }


def _declare_and_publish(options: dict[str, object], n: int) -> None:
    with Connection(transport="core.broker_filesystem:Transport", transport_options=options) as connection:
        connection.SimpleQueue("jobs").put({"n": n})


def _waiting(options: dict[str, object]) -> int:
    with Connection(transport="core.broker_filesystem:Transport", transport_options=options) as connection:
        return int(connection.default_channel._size("jobs"))


def test_threads_declaring_one_queue_at_once_lose_no_message(tmp_path: Path) -> None:
    """The transport's state is one per process: a thread that finds the binding there already
    still has it in the table before it publishes (kombu published to a table another thread had
    not written yet, and the message went to no queue)."""
    threads, rounds = 4, 30
    for r in range(rounds):  # a fresh broker each round: the race is on the first bind
        options = _options(tmp_path / str(r))
        at_once(functools.partial(_declare_and_publish, options, r), times=threads)
        assert _waiting(options) == threads, f"round {r}"


def test_a_binding_the_process_already_holds_is_written_to_a_new_broker_folder(tmp_path: Path) -> None:
    """The same race, made certain: the process's state holds the binding from one broker folder,
    and a publish through a fresh one still reaches the queue."""
    _declare_and_publish(_options(tmp_path / "first"), 1)
    options = _options(tmp_path / "second")
    _declare_and_publish(options, 2)
    assert _waiting(options) == 1
