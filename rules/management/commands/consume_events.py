"""`python manage.py consume_events`: the Procfile's `stream` process (see rules/stream.py)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from core.conf import sentinel_settings
from rules.stream import StreamConsumer

# A long-running process: its lines go through LOGGING (JSON, one object a line) like every other's.
logger = logging.getLogger("sentinel.rules.stream")


class Command(BaseCommand):
    help = "Store events appended to the Redis stream EVENTS_STREAM and queue their evaluation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--claim-idle-ms", type=int, default=60_000, help="Take over entries idle this long.")
        parser.add_argument("--block-ms", type=int, default=2000)

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.set())
        if not settings.REDIS_URL:
            # Embedded mode has no Redis and so no stream; idle rather than exit, since honcho
            # (make run) stops every process when one exits.
            logger.info("No REDIS_URL: no event stream to consume; idling.")
            stopping.wait()
            return
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, socket_connect_timeout=5)
        consumer = StreamConsumer(
            client,
            sentinel_settings.rules.EVENTS_STREAM,
            claim_idle_ms=options["claim_idle_ms"],
            block_ms=options["block_ms"],
        )
        logger.info(
            "Consuming %s as %s (group sentinel-rules).",
            consumer.stream,
            consumer.consumer,
            extra={"stream": consumer.stream, "consumer": consumer.consumer},
        )
        while not stopping.is_set():
            try:
                consumer.ensure_group()
                while not stopping.is_set():
                    consumer.step()
                    close_old_connections()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                logger.warning("Redis unavailable (%s); retrying in 1 s.", exc)
                stopping.wait(1.0)
            except Exception as exc:  # the database went away, say: log it, keep going, retry soon
                logger.warning("Stream step failed (%r); retrying in 2 s.", exc, exc_info=True)
                close_old_connections()
                stopping.wait(2.0)
