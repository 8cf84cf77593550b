"""What core's AppConfig does when a process sets Django up (core.apps.CoreConfig.ready())."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from core.apps import settings_folders


def _values(metric: MetricWrapperBase) -> Iterator[Any]:
    """The value objects behind a metric and its labelled children (prometheus_client keeps them
    in private attributes: ``_value``, a histogram's ``_buckets``, ``_metrics`` for children)."""
    for attribute in vars(metric).values():
        for item in attribute if isinstance(attribute, list) else [attribute]:
            if hasattr(type(item), "_multiprocess"):
                yield item
    for child in getattr(metric, "_metrics", {}).values():
        yield from _values(child)


def test_every_metric_created_at_start_up_counts_into_the_shared_folder() -> None:
    # given this process set up as every Sentinel process is (the metric modules imported on the way)
    metrics = [collector for collector in REGISTRY._collector_to_names if isinstance(collector, MetricWrapperBase)]
    names = {metric._name for metric in metrics}
    assert {"sentinel_pressure_global", "sentinel_http_requests", "events_ingested"} <= names

    # then not one value lives in this process's memory alone: all are multiprocess (file-backed)
    in_memory = [metric._name for metric in metrics for value in _values(metric) if not value._multiprocess]
    assert in_memory == []
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(settings.PROMETHEUS_MULTIPROC_DIR)


def test_the_folders_settings_name_exist() -> None:
    for folder in settings_folders():
        assert Path(folder).is_dir(), folder
