# One image for every Sentinel process: web (the default command), worker, beat, stream, the fraud
# brain and the mock upstream. docker-compose.yml picks the process with `command:`, using the Procfile's lines.

# The front-end packages (package.json, package-lock.json) from npm, as `make install` does; only
# their dist folders reach the image, where collectstatic picks them up.
FROM node:20-slim AS frontend
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim

# HOST/UPSTREAM_HOST: in a container the servers must listen on every interface, not on the
# Procfile's default 127.0.0.1, so the Procfile's lines work unchanged here.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    UPSTREAM_HOST=0.0.0.0 \
    UPSTREAM_PORT=8080

# A fixed uid/gid so files on mounted volumes have a predictable owner.
RUN groupadd --system --gid 10001 sentinel \
 && useradd --system --uid 10001 --gid sentinel --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin sentinel

WORKDIR /app

# Dependencies before the code, so editing code does not reinstall them. Every pinned package
# (psycopg[binary], hiredis, grpcio, uvloop, ...) ships manylinux wheels: no compiler needed.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .
COPY --from=frontend /build/node_modules/uplot/dist node_modules/uplot/dist

# The fraud brain's gRPC stubs are generated, not committed: `make protos`' command, so the image
# built from a fresh clone has them too (grpcio-tools is pinned in requirements.txt).
RUN python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. fraud/protos/fraud.proto

# Static files are collected into var/static at build time and served by WhiteNoise. Settings need
# a SECRET_KEY to load; this throwaway one (no secret: it signs nothing) is set for this RUN step
# only, never as ARG or ENV, so no container ever starts with it. The code stays owned by root,
# read-only to the app; only var/ (Celery beat's schedule and pid file, embedded-mode files)
# belongs to the runtime user, and the collected static files stay root's. /metrics holds the
# Prometheus multiprocess files (a volume shared by every container in docker-compose.yml).
RUN SECRET_KEY="collectstatic-only-not-a-real-key-0123456789abcdef" \
        python manage.py collectstatic --noinput --verbosity 0 \
 && chown -R sentinel:sentinel var \
 && chown -R root:root var/static \
 && mkdir /metrics && chown sentinel:sentinel /metrics

USER sentinel

EXPOSE 8000

# /health is 503 when a critical component (database, Redis, broker) is down. The port follows
# $PORT like the server does. Other services (worker, beat, upstream) override this in compose.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health\", timeout=4)"]

# The Procfile's web line. exec: the server becomes the shell's process and receives SIGTERM itself.
CMD ["sh", "-c", "exec python manage.py serve --host \"${HOST:-0.0.0.0}\" --port \"${PORT:-8000}\""]
