"""The Celery app. Tasks are autodiscovered from each app's `tasks.py`; the beat schedule and
every other option come from the `CELERY_*` settings."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")

app = Celery("sentinel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
