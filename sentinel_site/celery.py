"""The Celery app. Tasks are autodiscovered from each app's `tasks.py`; the beat schedule and
every other option come from the `CELERY_*` settings.

Logging is Django's (`LOGGING`: one JSON object a line with the correlation id), in the worker and
in beat alike: Celery neither replaces the root logger's handlers with its own plain-text format
nor prints its banners (plain text on stdout); `--loglevel` can only make a process more verbose
than `LOG_LEVEL`. A task queued while a request (or another task) is served carries its correlation
id, and the worker's lines for that task carry it too; a task queued by beat takes its own task id.

Tracing (``ENABLE_TRACING``, observability.tracing): each pool process of a forking (prefork)
worker sets it up as it starts (``worker_process_init``, after the fork, as the instrumentation's
documentation says), a worker whose pool does not fork (the thread pool of embedded mode) once at
``worker_init``; each sends its last spans as it stops. A task queued in a traced request runs in
a span of the request's trace.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, signals
from celery.apps.beat import Beat
from celery.apps.worker import Worker, install_worker_term_handler
from kombu.utils.objects import cached_property

from core.correlation import current_correlation_id
from core.local_state import local_state_prepare

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")

logger = logging.getLogger("sentinel.celery")
# The message header that carries the correlation id to the worker (Celery's own `correlation_id`
# is the task id).
CORRELATION_HEADER = "sentinel_correlation_id"


class QuietBeat(Beat):  # type: ignore[misc]  # celery ships no type information
    """`celery beat` without its start-up banner (plain text on stdout, outside logging); the
    scheduler says it started in a JSON line ("beat: Starting...")."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "quiet": True})


class JsonWorker(Worker):  # type: ignore[misc]  # celery ships no type information
    """`celery worker` whose every line is a log record: Django's logging applied before its first
    output (check_privileges' SecurityWarning when run as root), no banner (plain text on stdout;
    "<name> ready." follows as a JSON line), and the warm shutdown on SIGTERM without the plain-text
    line Celery writes with os.write (`_worker_shutting_down` logs it)."""

    def on_before_init(self, quiet: bool = False, **kwargs: Any) -> None:
        django_logging_apply()
        super().on_before_init(quiet=True, **kwargs)

    def install_platform_tweaks(self, worker: Worker) -> None:
        super().install_platform_tweaks(worker)
        install_worker_term_handler(worker, verbose=False)


class SentinelCelery(Celery):  # type: ignore[misc]  # celery ships no type information
    """The Celery app, with Sentinel's worker and beat programs (JSON lines only)."""

    @cached_property
    def Worker(self) -> type[Worker]:
        return self.subclass_with_self(JsonWorker)  # type: ignore[no-any-return]

    @cached_property
    def Beat(self) -> type[Beat]:
        return self.subclass_with_self(QuietBeat)  # type: ignore[no-any-return]


app = SentinelCelery("sentinel")


def _prepare_local_state(**_: Any) -> None:
    local_state_prepare()


def django_logging_apply(*, loglevel: int | str | None = None) -> None:
    """Applies Django's `LOGGING` (JSON lines, Python warnings captured), the root logger at
    `LOG_LEVEL`, or at `loglevel` (Celery's `--loglevel`) when that is more verbose."""
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    level = logging.getLevelName(settings.LOG_LEVEL)
    if loglevel is not None:
        requested = loglevel if isinstance(loglevel, int) else logging.getLevelName(str(loglevel).upper())
        if isinstance(requested, int):
            level = min(level, requested)
    logging.getLogger().setLevel(level)


def _logging_setup(loglevel: int | str | None = None, **_: Any) -> None:
    # A receiver of `setup_logging` makes Celery leave logging alone (no hijacked root logger, no
    # worker_log_format, no task logger handlers of its own), in the worker and in beat.
    django_logging_apply(loglevel=loglevel)


def _tracing_setup(**_: Any) -> None:
    from observability.tracing import tracing_announce, tracing_setup

    tracing_setup(role="worker")
    tracing_announce()


def _tracing_shutdown(**_: Any) -> None:
    from observability.tracing import tracing_shutdown

    tracing_shutdown()


def _forks(worker: Any) -> bool:
    # At worker_init the pool is still named as configured (`worker_pool`, --pool): a name or a class.
    return "prefork" in str(getattr(worker, "pool_cls", "prefork")).lower()


def _tracing_setup_unforked(sender: Any = None, **_: Any) -> None:
    if not _forks(sender):
        _tracing_setup()


def _tracing_shutdown_unforked(sender: Any = None, **_: Any) -> None:
    if not _forks(sender):
        _tracing_shutdown()


def _worker_shutting_down(sig: str, how: str, **_: Any) -> None:
    logger.info("worker: %s shutdown (%s)", how, sig, extra={"signal": sig, "shutdown": how})


def _correlation_publish(headers: dict[str, Any], **_: Any) -> None:
    correlation_id = current_correlation_id.get()
    if correlation_id:
        headers[CORRELATION_HEADER] = correlation_id


def _correlation_enter(task: Any, **_: Any) -> None:
    correlation_id = getattr(task.request, CORRELATION_HEADER, None) or task.request.id
    task.request.sentinel_correlation_token = current_correlation_id.set(correlation_id)


def _correlation_leave(task: Any, **_: Any) -> None:
    token = getattr(task.request, "sentinel_correlation_token", None)
    if token is not None:
        current_correlation_id.reset(token)


# Sent just before the configuration (Django's settings) is first read: `celery -A sentinel_site
# worker` is an entry point, which writes var/secret_key if the settings want it.
app.on_configure.connect(_prepare_local_state, weak=False)
signals.setup_logging.connect(_logging_setup, weak=False)
signals.worker_shutting_down.connect(_worker_shutting_down, weak=False)
signals.worker_process_init.connect(_tracing_setup, weak=False)
signals.worker_process_shutdown.connect(_tracing_shutdown, weak=False)
signals.worker_init.connect(_tracing_setup_unforked, weak=False)
signals.worker_shutdown.connect(_tracing_shutdown_unforked, weak=False)
signals.before_task_publish.connect(_correlation_publish, weak=False)
signals.task_prerun.connect(_correlation_enter, weak=False)
signals.task_postrun.connect(_correlation_leave, weak=False)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
