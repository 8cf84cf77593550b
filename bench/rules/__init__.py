"""Rules engine throughput: the compiled DSL against the naive interpreter, windows, and ingest (SPEC 4).

Run from the repository root, on an otherwise idle machine (about 3 minutes)::

    .venv/bin/python -m bench.rules [--seconds 2] [--ingest-seconds 10] [--connections 4] [--quick]

What it does, in order (the module doing each step in brackets; ``common.*`` are the modules of
``bench/common/``, shared with ``python -m bench.gateway``):

0. Waits until no other benchmark runs (no ``wrk`` process and no ``python -m bench.gateway``,
   polled every 5 s for up to ``--wait-minutes``, 20): both would compete for the same cores. It
   checks again before each part (``common.quiet``).
1. Evaluation, in this process (``rules.dsl``, no Django): rules generated over 100 event types
   (mostly ``event.type == "type_k" and ...`` with comparisons, ``in``, ``contains``, ``matches``,
   ``startswith`` and arithmetic; about 1 % without a type conjunct) and random events over the same
   types (``workload``). For 10, 100 and 1,000 rules: the compiled engine through its ``RuleIndex``
   (``index.evaluate``: candidates, evaluation, rendered messages), the compiled engine testing every
   rule, and ``NaiveRule`` walking the Lark tree per event. The compiled rules and the interpreter
   are first checked to agree. Each figure: a warm-up, then the median of 3 repeats of at least
   ``--seconds`` each (``time.perf_counter``) (``evaluation``, ``timing``).
2. One windowed rule, ``count(1m by event.ip) >= 5``, with ``MemoryWindowStore`` and with
   ``RedisWindowStore`` (keys under a unique prefix, deleted afterwards), next to the same rule
   without its window. The events' clock is simulated (200 events/s over 100 ips), and a whole
   window's worth of events is recorded first, so each key holds its steady-state 120 entries
   (``evaluation``).
3. Ingest: ``manage.py serve`` (1 process, production mode: PostgreSQL ``sentinel_bench_rules``,
   created when missing and migrated, and Redis under a unique ``CACHE_KEY_PREFIX``); a new user,
   tenant and ``events:write`` API key; then batches of 100 events posted to ``POST /events`` from
   ``--connections`` keep-alive connections, a warm-up and ``--ingest-seconds`` measured. Stored
   events are counted in ``rules_event`` for the tenant. No Celery worker runs: the evaluation tasks
   stay queued in Redis and are deleted with every other key under the prefix at the end
   (``ingest``, ``common.scratch``, ``common.processes``).
4. Prints the report and writes it between ``<!-- bench:rules:start -->`` and
   ``<!-- bench:rules:end -->`` in ``docs/benchmarks.md`` (appended when absent; other sections
   stay as they are): ``report.md.tmpl`` and ``sentences.md.tmpl`` hold its prose, ``report`` its
   figures; ``common.cli`` writes it. ``--quick`` is a smoke test: short runs, nothing written. The
   figures are not written when the served code changed during the run (``common.gitstate``).

Every process it starts is stopped (SIGTERM, then SIGKILL to its process group). The database is
kept (the bench tenant's events stay in it); nothing else is dropped.

CPU columns are from psutil (``common.cpu``), in µs of CPU per event or in cores (CPU seconds /
wall seconds): ``web`` is the server's process tree, ``pg`` every PostgreSQL process (backends that
exited are counted through the postmaster's reaped-children time), ``redis`` the Redis server,
``bench`` this process (the load generator in part 3), ``other`` everything else busy on the box. A
measurement during which ``other`` exceeds 0.25 core is taken again once the machine is quiet
(twice at most).
"""
