"""The Redis stream consumer as it runs: a real `manage.py consume_events` process and Redis."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest
import redis

from accounts.models import User
from rules.models import Event, EventSource
from tests.support.processes import child_env, python_command, running_process
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stream() -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(require_redis())
    name = key_prefix("events")  # the stream; its consumer's cache and Celery keys go under it too
    yield client, name
    client.delete(name, f"{name}:dead")


def consumer(name: str, *extra: str) -> AbstractContextManager[subprocess.Popen[bytes]]:
    command = python_command("manage.py", "consume_events", "--block-ms", "200", *extra)
    env = child_env(REDIS_URL=require_redis(), CACHE_KEY_PREFIX=name, EVENTS_STREAM=name)
    return running_process(command, env=env, name="consumer")


def test_entries_are_stored_acknowledged_and_poison_is_parked(alice: User, stream: tuple[redis.Redis, str]) -> None:
    client, name = stream
    tenant = alice.membership.tenant
    client.xadd(name, {"tenant": tenant.slug, "event": json.dumps({"type": "order", "amount": 9})})
    client.xadd(name, {"tenant": str(tenant.uuid), "event": json.dumps([{"type": "a"}, {"type": "b"}])})
    client.xadd(name, {"tenant": tenant.slug, "event": "{not json"})
    client.xadd(name, {"tenant": "nobody", "event": "{}"})

    with consumer(name):
        wait_until(lambda: Event.objects.filter(tenant=tenant).count() == 3, timeout=30, what="three events")
        wait_until(lambda: client.xlen(f"{name}:dead") == 2, timeout=10, what="two dead letters")
        wait_until(
            lambda: client.xpending(name, "sentinel-rules")["pending"] == 0, timeout=10, what="all entries acked"
        )

    assert sorted(Event.objects.values_list("type", flat=True)) == ["a", "b", "order"]
    assert set(Event.objects.values_list("source", flat=True)) == {EventSource.STREAM}
    reasons = sorted(fields[b"error"].decode() for _, fields in client.xrange(f"{name}:dead"))
    assert reasons == ["`event` is not JSON", "no active tenant 'nobody'"]


def test_an_entry_a_dead_consumer_left_pending_is_claimed_and_stored_once(
    alice: User, stream: tuple[redis.Redis, str]
) -> None:
    client, name = stream
    tenant = alice.membership.tenant
    client.xgroup_create(name, "sentinel-rules", id="0", mkstream=True)
    client.xadd(name, {"tenant": tenant.slug, "event": json.dumps({"type": "orphan"})})
    # A consumer read the entry and died before acknowledging it.
    client.xreadgroup("sentinel-rules", "ghost", {name: ">"}, count=10)

    with consumer(name, "--claim-idle-ms", "100"):
        wait_until(
            lambda: client.xpending(name, "sentinel-rules")["pending"] == 0, timeout=30, what="the claim and the ack"
        )

    assert list(Event.objects.values_list("type", flat=True)) == ["orphan"]


def test_a_redelivered_entry_is_not_stored_twice(alice: User, stream: tuple[redis.Redis, str]) -> None:
    from rules.stream import StreamConsumer

    client, name = stream
    tenant = alice.membership.tenant
    entry = client.xadd(name, {"tenant": tenant.slug, "event": json.dumps([{"type": "x"}, {"type": "y"}])})
    fields = client.xrange(name)[0][1]
    reader = StreamConsumer(client, name)

    first = reader.store(entry.decode(), fields)
    again = reader.store(entry.decode(), fields)  # the ack was lost, the entry came back

    assert (first, again) == (2, 0)
    assert Event.objects.count() == 2
