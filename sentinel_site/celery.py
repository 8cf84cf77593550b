"""The Celery app. Tasks are autodiscovered from each app's `tasks.py`; the beat schedule and
every other option come from the `CELERY_*` settings."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from core.local_state import local_state_prepare

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")

app = Celery("sentinel")


def _prepare_local_state(**_: Any) -> None:
    local_state_prepare()


# Sent just before the configuration (Django's settings) is first read: `celery -A sentinel_site
# worker` is an entry point, which writes var/secret_key if the settings want it.
app.on_configure.connect(_prepare_local_state, weak=False)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
