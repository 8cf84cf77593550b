"""Sentinel's one settings module.

Nothing set in the environment means *embedded mode*: SQLite under ``var/``, a local-memory cache,
the in-memory channel layer and a Celery broker on the filesystem, so ``make run`` works on a bare
machine. ``DATABASE_URL`` switches the database to PostgreSQL (psycopg 3); ``REDIS_URL`` switches the
cache, the channel layer, the Celery broker and the gateway's shared state to Redis. Production
differs from a laptop only by its environment (see the README's settings table).
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from core.env import env_bool, env_choice, env_float, env_int, env_list, env_str
from core.local_state import embedded_mode, secret_key_file, secret_key_file_wanted, secret_key_read, var_dir

# Importing this module reads the environment and var/secret_key and writes nothing: the folders
# it names are made by core.apps.CoreConfig.ready(), the key file by the entry points
# (core.local_state).
BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = var_dir()

DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
# Embedded mode: no external service configured. Production mode names at least one.
EMBEDDED_MODE = embedded_mode()

DEBUG = env_bool("DJANGO_DEBUG", False)


def _secret_key() -> str:
    """The environment's key; in embedded mode (or DEBUG) the one kept in ``var/secret_key``."""
    key = env_str("SECRET_KEY")
    if key:
        if len(key) < 32 and not DEBUG:
            # It also signs the JWTs (HS256), which need at least 256 bits of key.
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long.")
        return key
    if not secret_key_file_wanted():
        raise ImproperlyConfigured(
            "SECRET_KEY must be set in the environment in production mode "
            "(DATABASE_URL or REDIS_URL is set and DJANGO_DEBUG is off)."
        )
    kept = secret_key_read(VAR_DIR)
    if kept is None:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set and {secret_key_file(VAR_DIR)} does not exist: `make install` writes it, "
            "and so does every entry point (manage.py, sentinel_site.asgi, the Celery app) when it starts."
        )
    return kept


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# How many reverse proxies in front of Sentinel append to X-Forwarded-For (0: trust none); read by
# core.http.client_ip for every app.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
if env_bool("SECURE_PROXY_SSL", False):
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    # daphne first: it makes `manage.py runserver` an ASGI server that also serves websockets.
    "daphne",
    # Before every other app: its ready() makes settings' folders and sets up multiprocess metrics
    # before the other apps' ready() (the admin's autodiscovery) creates the first metric.
    "core.apps.CoreConfig",
    "accounts.apps.SentinelAdminConfig",  # django.contrib.admin, its login under the login limiter
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_prometheus",
    "accounts",
    "gateway",
    "observability",
    "rules",
    "monitors",
    "fraud",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.middleware.CorrelationIdMiddleware",
    "core.middleware.AccessLogMiddleware",
    "core.middleware.ApiErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "sentinel_site.urls"
ASGI_APPLICATION = "sentinel_site.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ------------------------------------------------------------------------------
_SQLITE_OPTIONS = {
    # WAL lets the web, worker and beat processes read while one writes; IMMEDIATE takes the
    # write lock at BEGIN so two writers queue on `timeout` instead of failing mid-transaction.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}
if DATABASE_URL:
    _db = dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0, minimum=0),
        conn_health_checks=True,
    )
    if _db["ENGINE"] == "django.db.backends.sqlite3":
        _db["OPTIONS"] = {**_SQLITE_OPTIONS, **_db.get("OPTIONS", {})}
else:
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(VAR_DIR / "sentinel.sqlite3"),
        "OPTIONS": dict(_SQLITE_OPTIONS),
    }
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so servers that tests start in other processes see the test data.
    _db["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, channel layer, broker ----------------------------------------------------------
CACHE_KEY_PREFIX = env_str("CACHE_KEY_PREFIX", "sentinel") or "sentinel"
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "OPTIONS": {
                # Short timeouts: a dead Redis must cost a request milliseconds, not minutes.
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            # channels_redis' layer, whose receive ends when cancelled on Python 3.11 too
            # (core/channel_layer.py: a refused socket used to leave its consumer running).
            "BACKEND": "core.channel_layer.RedisChannelLayer",
            "CONFIG": {
                # A read timeout longer than channels_redis' 5 s blocking pop (BZPOPMIN): redis-py 8
                # defaults socket_timeout to 5 s, which races that pop and tears an idle consumer
                # down with a TimeoutError (django/channels_redis#422). A dead Redis still fails
                # within 10 s.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 10}],
                "prefix": f"{CACHE_KEY_PREFIX}:channels",
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "sentinel"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "filesystem://"
if not REDIS_URL:
    # kombu's filesystem transport: no server needed. Folders must be absolute, or each process
    # resolves them against its own working directory and control commands find no worker.
    # (core.apps.CoreConfig.ready() creates them.)
    _celery_dir = VAR_DIR / "celery"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_dir / "queue"),
        "data_folder_out": str(_celery_dir / "queue"),
        "control_folder": str(_celery_dir / "control"),
        "store_processed": False,
        "polling_interval": env_float("CELERY_POLL_INTERVAL", 0.5, minimum=0.05),
    }
    # kombu's filesystem transport with atomic puts: its own may hand a worker a half-written
    # message, which stops the worker (core.broker_filesystem).
    CELERY_BROKER_TRANSPORT = "core.broker_filesystem:Transport"
    # Threads, not forked processes: the rules' time windows live in the worker's memory in
    # embedded mode, and must be one memory for the counts to be right.
    CELERY_WORKER_POOL = "threads"
else:
    # Redis redelivers an unacknowledged task after this long: longer than any task's time limit.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "global_keyprefix": f"{CACHE_KEY_PREFIX}:celery:"}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# Tasks are acknowledged after they ran and are safe to run twice (CONVENTIONS 7).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_TIME_LIMIT = 300
CELERY_TIMEZONE = "UTC"
# Every periodic job of every app, in one place.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "observability-heartbeat": {"task": "observability.tasks.heartbeat", "schedule": 15.0},
    # Safety nets for work whose task was lost (a worker killed mid-task, a broker restart).
    "rules-deliveries-sweep": {
        "task": "rules.tasks.deliveries_sweep",
        "schedule": env_float("RULES_SWEEP_SECONDS", 30.0, minimum=0.5),
    },
    "rules-events-sweep": {"task": "rules.tasks.events_sweep", "schedule": 60.0},
    # Drops request-log partitions past retention and creates the coming days' ones. Hourly, not
    # daily: it is idempotent and cheap, and a beat that was down at midnight catches up within the hour.
    "observability-request-log-retention": {
        "task": "observability.tasks.request_log_retention",
        "schedule": 3600.0,
    },
    # The insight engine's analysis of the last window (docs/insight.md).
    # A message not taken within its period expires: a backlog never runs stale analyses.
    "observability-insight-analyse": {
        "task": "observability.tasks.insight_analyse",
        "schedule": env_float("INSIGHT_PERIOD_SECONDS", 60.0, minimum=0.5),
        "options": {"expires": env_float("INSIGHT_PERIOD_SECONDS", 60.0, minimum=0.5)},
    },
    # Monitors (SPEC 5): claims the checks due and hands them to the `checks` queue. A dispatch not
    # taken within its period expires: the next one claims the same monitors, so a backlog of beats
    # never runs stale dispatches.
    "monitors-dispatch": {
        "task": "monitors.tasks.checks_dispatch",
        "schedule": env_float("MONITORS_DISPATCH_SECONDS", 1.0, minimum=0.1),
        "options": {"expires": env_float("MONITORS_DISPATCH_SECONDS", 1.0, minimum=0.1)},
    },
    # Deletes check results and roll-ups past their retention, in bounded batches; hourly for the
    # same reason as the request log's.
    "monitors-retention": {"task": "monitors.tasks.checks_retention", "schedule": 3600.0},
}
# Monitors' alerts (issue 11, the alerts part): flips whose task was lost, reminders while down,
# TLS certificate expiry warnings. Each claims its rows, so two beats never send twice.
CELERY_BEAT_SCHEDULE |= {
    "monitors-flips-sweep": {"task": "monitors.tasks.flips_sweep", "schedule": 30.0},
    "monitors-reminders": {"task": "monitors.tasks.reminders_send", "schedule": 60.0, "options": {"expires": 60.0}},
    "monitors-cert-warnings": {
        "task": "monitors.tasks.cert_warnings_check",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
}
# Deliveries have a queue of their own, so a burst of evaluations cannot starve them. A worker
# started without -Q consumes every queue listed here; `-Q deliveries` makes a sending-only one.
# Monitor checks too: a batch of due checks must not wait behind evaluations or deliveries, nor they
# behind it (`-Q checks` makes a checking-only worker).
CELERY_TASK_QUEUES: dict[str, dict[str, object]] = {"celery": {}, "deliveries": {}, "checks": {}}
CELERY_TASK_ROUTES = {
    "rules.tasks.delivery_attempt": {"queue": "deliveries"},
    "monitors.tasks.checks_dispatch": {"queue": "checks"},
    "monitors.tasks.checks_run": {"queue": "checks"},
}

# --- Rules and notifications (SPEC 4) ------------------------------------------------------
SENTINEL_RULES: dict[str, Any] = {
    "DELIVERY_MAX_ATTEMPTS": env_int("DELIVERY_MAX_ATTEMPTS", 8, minimum=1),
    # Backoff before attempt n+1: DELIVERY_BACKOFF_SECONDS * 2^(n-1), capped, with jitter.
    "DELIVERY_BACKOFF_SECONDS": env_float("DELIVERY_BACKOFF_SECONDS", 5.0, minimum=0.0),
    "DELIVERY_BACKOFF_MAX_SECONDS": env_float("DELIVERY_BACKOFF_MAX_SECONDS", 3600.0, minimum=0.0),
    "DELIVERY_TIMEOUT_SECONDS": env_float("DELIVERY_TIMEOUT_SECONDS", 10.0, minimum=0.1),
    # The longest wait a receiver's Retry-After (or Discord's retry_after) can impose before the
    # next attempt; a longer request is cut to this. One hour: Sentinel's own longest backoff
    # (DELIVERY_BACKOFF_MAX_SECONDS), above the longest wait in Discord's published examples
    # (1,337 s), and no longer than the Redis broker's visibility timeout, past which a
    # countdown task would be handed out again.
    "DELIVERY_MAX_RETRY_AFTER_SECONDS": env_float("DELIVERY_MAX_RETRY_AFTER_SECONDS", 3600.0, minimum=0.0),
    # A send in progress is a worker's for this long; after it, another worker may take it over.
    "DELIVERY_LEASE_SECONDS": env_float("DELIVERY_LEASE_SECONDS", 60.0, minimum=0.5),
    "EVENTS_STREAM": env_str("EVENTS_STREAM", "sentinel:events") or "sentinel:events",
    "EVENT_MAX_BYTES": env_int("EVENT_MAX_BYTES", 64 * 1024, minimum=256),
    "EVENT_MAX_DEPTH": env_int("EVENT_MAX_DEPTH", 16, minimum=2),
}

# --- Monitors (SPEC 5) ---------------------------------------------------------------------
SENTINEL_MONITORS: dict[str, Any] = {
    # How often the dispatcher claims due checks (seconds); also its beat entry's period.
    "DISPATCH_SECONDS": env_float("MONITORS_DISPATCH_SECONDS", 1.0, minimum=0.1),
    # Checks due this far ahead are claimed now and started at their due time by the worker: a
    # dispatch period plus the queue's latency, so a check is on the worker before it is due.
    "DISPATCH_LOOKAHEAD_SECONDS": env_float("MONITORS_DISPATCH_LOOKAHEAD_SECONDS", 3.0, minimum=0.0),
    # At most this many monitors claimed by one dispatch; the rest stay due for the next one.
    "DISPATCH_MAX_CLAIMS": env_int("MONITORS_DISPATCH_MAX_CLAIMS", 5000, minimum=1),
    # Checks per task queued to the worker.
    "BATCH_SIZE": env_int("MONITORS_BATCH_SIZE", 500, minimum=1),
    # A claim lasts the check's due time + its timeout + this margin (seconds): time to write the
    # report. Past it the claim lapses and another dispatch may run the check (a worker killed).
    "CLAIM_MARGIN_SECONDS": env_float("MONITORS_CLAIM_MARGIN_SECONDS", 30.0, minimum=1.0),
    # Checks in flight at once in one worker process (its event loop, all batches together).
    "CHECK_CONCURRENCY": env_int("MONITORS_CHECK_CONCURRENCY", 1000, minimum=1),
    # Reports are written together: when this many wait, or when the oldest has waited this long.
    "WRITE_BATCH_ROWS": env_int("MONITORS_WRITE_BATCH_ROWS", 1000, minimum=1),
    "WRITE_FLUSH_SECONDS": env_float("MONITORS_WRITE_FLUSH_SECONDS", 0.25, minimum=0.01),
    # 30 days: the longest uptime window SPEC 5's API shows is 30 days, and the history a user
    # browses result by result is the recent one; older figures come from the roll-ups. At 10,000
    # monitors every 60 s that is ~432 million rows, the most a single PostgreSQL table here should
    # hold; a smaller fleet can afford more.
    "CHECK_RESULT_RETENTION_DAYS": env_int("CHECK_RESULT_RETENTION_DAYS", 30, minimum=1),
    # Hourly roll-ups for 90 days (the status page's 90-day bar at hourly detail); daily ones for
    # 400 days (a year's report plus a month of slack).
    "ROLLUP_HOURLY_RETENTION_DAYS": env_int("MONITORS_ROLLUP_HOURLY_RETENTION_DAYS", 90, minimum=1),
    "ROLLUP_DAILY_RETENTION_DAYS": env_int("MONITORS_ROLLUP_DAILY_RETENTION_DAYS", 400, minimum=1),
    # Rows deleted by one statement of the retention task: short transactions, short locks.
    "RETENTION_BATCH_ROWS": env_int("MONITORS_RETENTION_BATCH_ROWS", 10_000, minimum=1),
    # Seconds a public status page, its JSON twin and badges are cached (server side and in
    # Cache-Control): a page read by thousands during an outage costs a few queries per half
    # minute. 0 turns the cache off.
    "STATUS_CACHE_SECONDS": env_int("MONITORS_STATUS_CACHE_SECONDS", 30, minimum=0),
}

# --- Fraud (SPEC 6, docs/fraud.md) ----------------------------------------------------------
SENTINEL_FRAUD: dict[str, Any] = {
    # The brain's gRPC address: where `run_brain` listens and where the web processes call it.
    "BRAIN_ADDRESS": env_str("FRAUD_BRAIN_ADDRESS", "127.0.0.1:50051") or "127.0.0.1:50051",
    # The deadline of one Score call (ms). Past it the transaction is approved unscored (fail-open).
    # The brain answers in about a millisecond, but the deadline also covers the web process's own
    # queueing: at 40 ms a web process near saturation timed out three calls in a row and opened
    # the breaker on a healthy brain (bench/fraud.py), leaving 30 s of transactions unscored. 100 ms
    # is inside a card authorisation's budget; once the breaker is open, fail-open answers are
    # immediate whatever the deadline.
    "BRAIN_TIMEOUT_MS": env_int("FRAUD_BRAIN_TIMEOUT_MS", 100, minimum=1),
    # SPEC 6's breaker: open after this many consecutive failures (timeouts included), try the
    # brain again after RESET_SECONDS (pybreaker's fail_max and reset_timeout, at the spec's values).
    "BREAKER_FAILURES": env_int("FRAUD_BREAKER_FAILURES", 3, minimum=1),
    "BREAKER_RESET_SECONDS": env_float("FRAUD_BREAKER_RESET_SECONDS", 30.0, minimum=0.1),
    # A tenant's thresholds when it sets none (accounts.Tenant.fraud_*_threshold): score >= review
    # → review, score >= decline → decline.
    "REVIEW_THRESHOLD": env_float("FRAUD_REVIEW_THRESHOLD", 0.5, minimum=0.0),
    "DECLINE_THRESHOLD": env_float("FRAUD_DECLINE_THRESHOLD", 0.9, minimum=0.0),
    # The re-score task: how often it looks for fail-open rows, and how many it scores per run.
    "RESCORE_SECONDS": env_float("FRAUD_RESCORE_SECONDS", 10.0, minimum=0.5),
    "RESCORE_BATCH": env_int("FRAUD_RESCORE_BATCH", 500, minimum=1),
    # How often a worker makes the rules events (`type: transaction`) of new transactions from the
    # ledger's outbox (fraud.models.TransactionOutbox): an event reaches the rules engine within
    # about this long after its transaction was answered.
    "EMIT_SECONDS": env_float("FRAUD_EMIT_SECONDS", 1.0, minimum=0.1),
    # The trained model (run_brain trains one here when it is missing; `make train` retrains).
    "MODEL_DIR": env_str("FRAUD_MODEL_DIR", str(VAR_DIR / "fraud-model")) or str(VAR_DIR / "fraud-model"),
    # Fault injection in the brain, for drills (`manage.py chaos`): off unless set. A share of
    # calls made SLOW_MS slower (the seed's 10 % x 2 s when on), and a share answered UNAVAILABLE.
    "BRAIN_SLOW_RATE": env_float("FRAUD_BRAIN_SLOW_RATE", 0.0, minimum=0.0),
    "BRAIN_SLOW_MS": env_int("FRAUD_BRAIN_SLOW_MS", 2000, minimum=0),
    "BRAIN_FAILURE_RATE": env_float("FRAUD_BRAIN_FAILURE_RATE", 0.0, minimum=0.0),
    # Per-tenant admission of POST /transaction (fraud.engine.admission): a token bucket per tenant
    # in each web process, scaled by tier like the gateway's limits (vital x2, economy x0.5); past
    # it, 429 with Retry-After. 200/s per process is 17 million transactions a day, beyond a large
    # merchant's peak, yet 40 % of what one web process scores at its goal (500 tx/s,
    # docs/benchmarks.md), so one standard tenant cannot fill a process alone. The burst (2 s of
    # refill) absorbs a batch of queued payments or a reconnect's backlog.
    "BURST_CAPACITY": env_int("FRAUD_BURST_CAPACITY", 400, minimum=1),
    "REFILL_RATE": env_float("FRAUD_REFILL_RATE", 200.0, minimum=0.0),
}
# The rules events of new transactions (fraud.tasks.transactions_emit), and the late score of
# fail-open rows (fraud.tasks.transactions_rescore); a run left in the queue past the next one is
# dropped, the next does the same work.
CELERY_BEAT_SCHEDULE |= {
    "fraud-transactions-emit": {
        "task": "fraud.tasks.transactions_emit",
        "schedule": SENTINEL_FRAUD["EMIT_SECONDS"],
        "options": {"expires": SENTINEL_FRAUD["EMIT_SECONDS"]},
    },
    "fraud-transactions-rescore": {
        "task": "fraud.tasks.transactions_rescore",
        "schedule": SENTINEL_FRAUD["RESCORE_SECONDS"],
        "options": {"expires": SENTINEL_FRAUD["RESCORE_SECONDS"]},
    },
}
# `GET /health`'s informative components contributed by apps, by dotted path to a check returning
# {"status": "ok" | "down" | ..., ...} (observability imports none of them). Informative, not
# critical: a brain that is down leaves transactions approved unscored (fail-open), and a 503
# would pull every web process out of the load balancer at once.
SENTINEL_HEALTH_COMPONENTS: dict[str, str] = {"brain": "fraud.health.check_brain"}

# Breakers that `GET /circuit/status` lists beside the gateway's upstreams, and `POST
# /circuit/reset` resets: dotted paths of objects with `entries(*, is_staff)` and `reset(upstream)`
# (like SENTINEL_DASHBOARD_TILES, so the gateway imports none of them).
SENTINEL_CIRCUIT_SOURCES = [
    "fraud.breaker.circuit_source",
]

# E-mail notifications: SMTP when EMAIL_HOST is set, else printed by the console backend.
EMAIL_HOST = env_str("EMAIL_HOST", "") or ""
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "sentinel@localhost") or "sentinel@localhost"
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend"
)

# --- Auth ----------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Django's login view, with the admin's failed-login limiter, open to tenant users (the admin's
# own login takes staff only): where `/dashboard/` sends a visitor who is not signed in.
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/dashboard/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.TenantJWTAuthentication",
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "DEFAULT_PARSER_CLASSES": ["core.parsers.BoundedJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.api_errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"signup": env_str("SIGNUP_RATE", "20/hour")},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 15, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 1, minimum=1)),
    # A refresh token works once: the old one is blacklisted when a new pair is issued.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env_str("JWT_SIGNING_KEY") or SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_CLAIM": "user_id",
    "LEEWAY": 5,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Sentinel API",
    "DESCRIPTION": "API gateway, observability, rules, monitors and fraud scoring in one platform.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The fraud decision (decision and late_decision share it) next to the proxy's access decision.
    "ENUM_NAME_OVERRIDES": {"FraudDecisionEnum": "fraud.models.Decision"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.openapi.strip_trailing_slashes",
        # Every operation's 4xx with the SPEC 7 error body (after the paths are final).
        "core.openapi.document_errors",
    ],
}

# --- Sentinel's own tunables, one namespaced dict per app, read through core.conf ----------
SENTINEL_ACCOUNTS = {
    "LOGIN_FAILURES_PER_USERNAME": env_int("LOGIN_FAILURES_PER_USERNAME", 5, minimum=1),
    "LOGIN_FAILURES_PER_IP": env_int("LOGIN_FAILURES_PER_IP", 20, minimum=1),
    "LOGIN_FAILURE_WINDOW_SECONDS": env_int("LOGIN_FAILURE_WINDOW_SECONDS", 900, minimum=1),
    # API-key `last_used_at` is written at most this often per key, not on every request.
    "API_KEY_TOUCH_SECONDS": env_int("API_KEY_TOUCH_SECONDS", 60, minimum=0),
}

SENTINEL_GATEWAY = {
    "DOWNSTREAM_URL": env_str("DOWNSTREAM_URL", "http://localhost:8080"),
    "TENANT_HEADER": (env_str("TENANT_HEADER", "x-tenant-id") or "x-tenant-id").lower(),
    "BURST_CAPACITY": env_int("BURST_CAPACITY", 20, minimum=1),
    "REFILL_RATE": env_float("REFILL_RATE", 10.0, minimum=0.0),
    "WINDOW_MS": env_int("WINDOW_MS", 60000, minimum=1),
    "BASE_RATE_LIMIT": env_int("BASE_RATE_LIMIT", 100, minimum=1),
    "SLO_LATENCY_THRESHOLD": env_int("SLO_LATENCY_THRESHOLD", 200, minimum=1),
    "REQUEST_TIMEOUT_MS": env_int("REQUEST_TIMEOUT_MS", 30000, minimum=1),
    "BREAKER_FAILURE_THRESHOLD": env_float("BREAKER_FAILURE_THRESHOLD", 0.5, minimum=0.0, maximum=1.0),
    "BREAKER_CONSECUTIVE_FAILURES": env_int("BREAKER_CONSECUTIVE_FAILURES", 10, minimum=1),
    "BREAKER_COOLDOWN_MS": env_int("BREAKER_COOLDOWN_MS", 30000, minimum=1),
    "BREAKER_HALF_OPEN_MAX_REQUESTS": env_int("BREAKER_HALF_OPEN_MAX_REQUESTS", 5, minimum=1),
    "RATE_LIMIT_FAIL_MODE": env_choice("RATE_LIMIT_FAIL_MODE", "open", ("open", "closed")),
    # Load shedding: in-flight requests one web process takes before its pressure reads 100, and
    # the pressures at which standard and economy tenants are shed (vital never is).
    "CAPACITY": env_int("GATEWAY_CAPACITY", 512, minimum=1),
    "SHED_STANDARD_AT": env_float("SHED_STANDARD_AT", 90.0, minimum=0.0, maximum=100.0),
    "SHED_ECONOMY_AT": env_float("SHED_ECONOMY_AT", 70.0, minimum=0.0, maximum=100.0),
    "SHED_HYSTERESIS": env_float("SHED_HYSTERESIS", 10.0, minimum=0.0, maximum=100.0),
    # How pressure is measured (the formula and the source of each default: README "Load shedding"
    # and gateway/engine/pressure.py): smoothing of in-flight/capacity, and the window and floors
    # below which latency and errors say nothing, and how much they weigh on concurrency.
    "PRESSURE_SMOOTHING_MS": env_int("PRESSURE_SMOOTHING_MS", 1000, minimum=0, maximum=60_000),
    "PRESSURE_WINDOW_S": env_float("PRESSURE_WINDOW_S", 10.0, minimum=1.0, maximum=3600.0),
    "PRESSURE_MIN_SAMPLES": env_int("PRESSURE_MIN_SAMPLES", 50, minimum=1),
    "PRESSURE_MIN_RATE": env_float("PRESSURE_MIN_RATE", 10.0, minimum=0.0),
    "PRESSURE_STRAIN_WEIGHT": env_float("PRESSURE_STRAIN_WEIGHT", 1.0, minimum=0.0, maximum=10.0),
    # Drills and tests: act as if pressure were this (0-100) instead of measuring it.
    "FORCED_PRESSURE": (
        env_float("GATEWAY_FORCED_PRESSURE", 0.0, minimum=0.0, maximum=100.0)
        if env_str("GATEWAY_FORCED_PRESSURE")
        else None
    ),
}

# The request log (SPEC 3; docs/request-log.md explains the pipeline, the bounds and the choices).
SENTINEL_OBSERVABILITY: dict[str, Any] = {
    "REQUEST_LOG_ENABLED": env_bool("REQUEST_LOG_ENABLED", True),
    "REQUEST_LOG_RETENTION_DAYS": env_int("REQUEST_LOG_RETENTION_DAYS", 14, minimum=1),
    "REQUEST_LOG_PARTITIONS_AHEAD": env_int("REQUEST_LOG_PARTITIONS_AHEAD", 3, minimum=1, maximum=365),
    "REQUEST_LOG_BATCH_ROWS": env_int("REQUEST_LOG_BATCH_ROWS", 1000, minimum=1),
    "REQUEST_LOG_FLUSH_SECONDS": env_float("REQUEST_LOG_FLUSH_SECONDS", 1.0, minimum=0.01),
    # Memory held by rows waiting for the database (queued or being retried), counted both ways:
    # 100,000 rows is 100 s of a process serving 1,000 requests/s, ~120 MB of typical records
    # (~1.2 KB each: rows.RECORD_OVERHEAD_BYTES); 128 MiB caps requests with long paths.
    "REQUEST_LOG_MAX_ROWS": env_int("REQUEST_LOG_MAX_ROWS", 100_000, minimum=1),
    "REQUEST_LOG_MAX_BYTES": env_int("REQUEST_LOG_MAX_BYTES", 128 * 1024 * 1024, minimum=1024),
    "REQUEST_LOG_RETRY_SECONDS": env_float("REQUEST_LOG_RETRY_SECONDS", 0.5, minimum=0.01),
    "REQUEST_LOG_RETRY_MAX_SECONDS": env_float("REQUEST_LOG_RETRY_MAX_SECONDS", 10.0, minimum=0.01),
    "REQUEST_LOG_WRITE_TIMEOUT_SECONDS": env_float("REQUEST_LOG_WRITE_TIMEOUT_SECONDS", 30.0, minimum=0.1),
    # How long a stopping web process (SIGTERM, lifespan shutdown) keeps writing what it holds; the
    # rest is then counted as dropped. Short of the 10-15 s supervisors wait before SIGKILL.
    "REQUEST_LOG_SHUTDOWN_SECONDS": env_float("REQUEST_LOG_SHUTDOWN_SECONDS", 5.0, minimum=0.0),
}

# The insight engine (SPEC 3; formulas, defaults and their sources in docs/insight.md), read
# through observability.insight.config. Rates are requests per minute, shares 0-1, times seconds.
SENTINEL_INSIGHT: dict[str, Any] = {
    "PERIOD_SECONDS": env_float("INSIGHT_PERIOD_SECONDS", 60.0, minimum=0.5),
    "WINDOW_SECONDS": env_float("INSIGHT_WINDOW_SECONDS", 60.0, minimum=0.5),
    "BASELINE_SECONDS": env_float("INSIGHT_BASELINE_SECONDS", 3600.0, minimum=1.0),
    "BASELINE_MAX_SUBJECTS": env_int("INSIGHT_BASELINE_MAX_SUBJECTS", 5000, minimum=10),
    "RESOLVE_AFTER_PERIODS": env_int("INSIGHT_RESOLVE_AFTER_PERIODS", 5, minimum=1),
    "FLOOD_IP_FLOOR_PER_MIN": env_float("INSIGHT_FLOOD_IP_FLOOR_PER_MIN", 300.0, minimum=1.0),
    "FLOOD_TENANT_FLOOR_PER_MIN": env_float("INSIGHT_FLOOD_TENANT_FLOOR_PER_MIN", 3000.0, minimum=1.0),
    "FLOOD_FACTOR": env_float("INSIGHT_FLOOD_FACTOR", 5.0, minimum=1.0),
    "FLOOD_CRITICAL_FACTOR": env_float("INSIGHT_FLOOD_CRITICAL_FACTOR", 20.0, minimum=1.0),
    "BRUTE_FORCE_WINDOW_SECONDS": env_float("INSIGHT_BRUTE_FORCE_WINDOW_SECONDS", 300.0, minimum=0.5),
    "BRUTE_FORCE_IP_FAILURES": env_int("INSIGHT_BRUTE_FORCE_IP_FAILURES", 10, minimum=1),
    "BRUTE_FORCE_USER_FAILURES": env_int("INSIGHT_BRUTE_FORCE_USER_FAILURES", 10, minimum=1),
    "BRUTE_FORCE_CRITICAL_FACTOR": env_float("INSIGHT_BRUTE_FORCE_CRITICAL_FACTOR", 5.0, minimum=1.0),
    "ERROR_MIN_REQUESTS": env_int("INSIGHT_ERROR_MIN_REQUESTS", 50, minimum=1),
    "ERROR_FLOOR_SHARE": env_float("INSIGHT_ERROR_FLOOR_SHARE", 0.05, minimum=0.0, maximum=1.0),
    "ERROR_FACTOR": env_float("INSIGHT_ERROR_FACTOR", 3.0, minimum=1.0),
    "ERROR_CRITICAL_FACTOR": env_float("INSIGHT_ERROR_CRITICAL_FACTOR", 10.0, minimum=1.0),
    "LATENCY_MIN_REQUESTS": env_int("INSIGHT_LATENCY_MIN_REQUESTS", 50, minimum=1),
    "LATENCY_FLOOR_MS": env_float("INSIGHT_LATENCY_FLOOR_MS", 100.0, minimum=0.0),
    "LATENCY_FACTOR": env_float("INSIGHT_LATENCY_FACTOR", 2.0, minimum=1.0),
    "LATENCY_CRITICAL_FACTOR": env_float("INSIGHT_LATENCY_CRITICAL_FACTOR", 4.0, minimum=1.0),
    "FLAP_WINDOW_SECONDS": env_float("INSIGHT_FLAP_WINDOW_SECONDS", 600.0, minimum=0.5),
    "FLAP_OPENS": env_int("INSIGHT_FLAP_OPENS", 3, minimum=1),
    "FLAP_CRITICAL_OPENS": env_int("INSIGHT_FLAP_CRITICAL_OPENS", 6, minimum=1),
    "LOGIN_FAILURE_RETENTION_SECONDS": env_float("INSIGHT_LOGIN_FAILURE_RETENTION_SECONDS", 86400.0, minimum=60.0),
    # The tenant whose rules receive fleet-wide incidents (a client IP, an upstream), by slug;
    # unset: the tenant of the first staff user who belongs to one (docs/insight.md).
    "EVENTS_TENANT": env_str("INSIGHT_EVENTS_TENANT", "") or "",
    # Optional rephrasing by an OpenAI-compatible endpoint (the operator's, never a tenant's).
    "LLM_URL": env_str("INSIGHT_LLM_URL", "") or "",
    "LLM_MODEL": env_str("INSIGHT_LLM_MODEL", "gpt-4o-mini") or "gpt-4o-mini",
    "LLM_API_KEY": env_str("INSIGHT_LLM_API_KEY", "") or "",
    "LLM_TIMEOUT_SECONDS": env_float("INSIGHT_LLM_TIMEOUT_SECONDS", 3.0, minimum=0.1, maximum=60.0),
    "LLM_CACHE_SECONDS": env_int("INSIGHT_LLM_CACHE_SECONDS", 600, minimum=0),
}

# Largest request body accepted by the REST API (the proxy has per-route limits of its own).
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 2 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000


# --- Egress policy (SPEC 7, core.egress) -----------------------------------------------------
def _env_networks(name: str) -> list[str]:
    """Comma-separated CIDRs (``10.0.0.0/8, fd00::/8``), each checked now so a typo fails at start-up."""
    networks = env_list(name, [])
    for network in networks:
        try:
            ipaddress.ip_network(network)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}: {network!r} is not a network in CIDR notation ({exc})") from None
    return networks


# Networks tenant-owned targets (routes, channels, monitors) may reach besides public unicast.
EGRESS_ALLOWED_NETWORKS = _env_networks("EGRESS_ALLOWED_NETWORKS")
# Loopback for tenant-owned targets: on in embedded mode (the demo's upstream and sinks run on this
# machine), off in production mode, where 127.0.0.1 is the gateway's own host.
EGRESS_ALLOW_LOOPBACK = env_bool("EGRESS_ALLOW_LOOPBACK", EMBEDDED_MODE)

# --- Live dashboard (observability.dashboard, docs/dashboard.md) ----------------------------
# Its panels, in display order: each a `core.tiles.Tile` by dotted path. Monitors and fraud add
# their tile here when they land; the dashboard imports none of them.
SENTINEL_DASHBOARD_TILES = [
    "observability.dashboard.tiles.breakers",
    "observability.dashboard.tiles.insight",
    "observability.dashboard.tiles.rule_matches",
    "observability.dashboard.tiles.deliveries",
    "monitors.tiles.monitors",
    "fraud.tiles.fraud",
]

# --- Static files, i18n --------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"  # created by core.apps.CoreConfig.ready(): WhiteNoise warns of a missing one
# Front-end packages come from npm (package.json, installed by `make install`): Django's finders
# and collectstatic read the library's dist folder in node_modules, nothing is copied into the repo.
STATICFILES_DIRS = [BASE_DIR / "static", ("vendor/uplot", BASE_DIR / "node_modules" / "uplot" / "dist")]
# Served by WhiteNoise from the collected files; from the finders when nothing was collected yet.
WHITENOISE_USE_FINDERS = DEBUG or not (STATIC_ROOT / "admin").exists()
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging: one JSON object a line, carrying the correlation id -------------------------
# In every process that sets Django up (web, stream, commands; the worker and beat through
# sentinel_site/celery.py), with Python warnings routed here too (core.jsonlog.logging_configure).
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")).upper()
LOGGING_CONFIG = "core.jsonlog.logging_configure"
# Tasks run every second or so whose Celery info lines (received, succeeded, sent by beat) are
# dropped unless LOG_LEVEL is debug; their warnings and errors always show.
ROUTINE_TASKS = [
    "monitors.tasks.checks_dispatch",
    "monitors.tasks.checks_run",
    "fraud.tasks.transactions_emit",
    "fraud.tasks.transactions_rescore",
]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "correlation": {"()": "core.jsonlog.CorrelationIdFilter"},
        "routine_tasks": {
            "()": "core.jsonlog.RoutineTaskFilter",
            "tasks": ROUTINE_TASKS,
            "keep_below_warning": LOG_LEVEL == "DEBUG",
        },
    },
    "formatters": {"json": {"()": "core.jsonlog.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["correlation", "routine_tasks"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # One line per request Django answers: Sentinel's own (sentinel.access, with status and
        # duration). uvicorn's and the dev servers' access lines would repeat it, and so would
        # django.request's warning for every 4xx ("Not Found: /x"); its errors (a 5xx, with the
        # traceback of an exception nothing else logged) stay.
        "uvicorn.access": {"level": "WARNING"},
        "django.server": {"level": "WARNING"},
        "daphne.access": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
    },
}

# --- Tracing (SPEC 3): OpenTelemetry spans sent over OTLP/HTTP (observability.tracing) ------
ENABLE_TRACING = env_bool("ENABLE_TRACING", False)
# The collector's OTLP/HTTP base URL (Jaeger, an OpenTelemetry Collector: port 4318); spans are
# POSTed to <OTLP_ENDPOINT>/v1/traces, as OTEL_EXPORTER_OTLP_ENDPOINT is read by the SDK.
OTLP_ENDPOINT = env_str("OTLP_ENDPOINT")
if ENABLE_TRACING and not (OTLP_ENDPOINT or "").startswith(("http://", "https://")):
    raise ImproperlyConfigured(
        f"ENABLE_TRACING is true but OTLP_ENDPOINT={OTLP_ENDPOINT!r} is not an http(s) URL "
        "(e.g. http://127.0.0.1:4318, the collector's OTLP/HTTP port)"
    )

# --- Metrics: Prometheus multiprocess mode (uvicorn workers + Celery share one folder) -----
PROMETHEUS_EXPORT_MIGRATIONS = False
# core.apps.CoreConfig.ready() points prometheus_client at this folder (an operator's
# PROMETHEUS_MULTIPROC_DIR wins) and exports it to the processes started from this one. The first
# process of a run empties it (core.prometheus.run_join): counts start from zero with each run.
PROMETHEUS_MULTIPROC_DIR = Path(env_str("PROMETHEUS_MULTIPROC_DIR") or VAR_DIR / "prometheus")
