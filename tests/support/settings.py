"""The test run's settings (pytest's DJANGO_SETTINGS_MODULE): the site's, with metrics and Redis
keys kept apart.

pytest-django imports this module before any test code runs, so this is the test run's entry point,
as ``manage.py`` is a command's: it writes ``var/secret_key`` first when the settings will want it
(``core.local_state``). The processes tests start (``tests.support.processes.child_env``) run
``sentinel_site.settings``, with this run's key, metrics folder and key prefix in their environment.
"""

import os

from core.local_state import local_state_prepare, var_dir
from tests.support.redis_keys import site_prefix

# `make test` runs the suite in pytest-xdist workers: each is a test run of its own, with a var
# folder of its own (the embedded database, Celery's filesystem broker, the metrics folder), so
# the processes one worker starts never read another's queue or files. Redis keys are apart
# already (one RUN_ROOT per pytest process).
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    os.environ["SENTINEL_VAR_DIR"] = str(var_dir() / "xdist" / _worker)

local_state_prepare()
# The test process and every process it starts write their Redis keys (cache, channel layer,
# Celery's queues) under this run's root, never under `make run`'s "sentinel" prefix, whose
# default Celery queue would run the tests' tasks. settings.py derives every key prefix from it.
os.environ["CACHE_KEY_PREFIX"] = site_prefix()

from core.env import env_str  # noqa: E402
from sentinel_site.settings import *  # noqa: E402, F403
from sentinel_site.settings import VAR_DIR  # noqa: E402

if env_str("PROMETHEUS_MULTIPROC_DIR") is None:
    # A test run counts into a folder of its own (the processes it starts inherit it), so the
    # traffic of `make test` never shows in the metrics of `make run`; like any run, it starts
    # empty unless another test run of this checkout is alive (core.prometheus.run_join).
    PROMETHEUS_MULTIPROC_DIR = VAR_DIR / "prometheus-test"
