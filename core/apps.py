"""The ground floor as an installed app: no models, only the start-up every Django process needs."""

from __future__ import annotations

from pathlib import Path

from django.apps import AppConfig
from django.conf import settings

from core.local_state import var_dir_ensure
from core.prometheus import configure_multiprocess, metrics_autodiscover


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Sentinel core"

    def ready(self) -> None:
        """Creates the folders settings name and sets up multiprocess metrics, in every process
        that sets Django up (web, worker, beat, stream, management commands, the test run), before
        any database connection is opened and before the other apps' ready() hooks run: joins the
        metrics folder's run (emptying it when this process starts a new one), then declares every
        app's families with their series known at start (``core.prometheus``)."""
        var_dir_ensure(Path(settings.VAR_DIR))
        for folder in settings_folders():
            folder.mkdir(parents=True, exist_ok=True)
        configure_multiprocess(Path(settings.PROMETHEUS_MULTIPROC_DIR))
        metrics_autodiscover()


def settings_folders() -> list[Path]:
    """``VAR_DIR`` (the embedded SQLite database's folder), ``STATIC_ROOT`` (WhiteNoise warns of a
    missing one) and, with the filesystem broker, its queue and control folders."""
    folders = [Path(settings.VAR_DIR), Path(settings.STATIC_ROOT)]
    if settings.CELERY_BROKER_URL == "filesystem://":
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        folders += [Path(str(options[name])) for name in ("data_folder_in", "data_folder_out", "control_folder")]
    return folders
