#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
    # Before Django reads the settings: in embedded mode they read var/secret_key, written here the
    # first time (a fresh clone needs no `make install` for `manage.py migrate`).
    from core.local_state import local_state_prepare

    local_state_prepare()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
