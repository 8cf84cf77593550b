"""Gateway overhead: Sentinel's proxy against a direct call and against nginx (SPEC 8).

Run from the repository root, on an otherwise idle machine (3 to 5 minutes), after
``make bench-tools`` (wrk, nginx and py-spy)::

    .venv/bin/python -m bench.gateway [--duration 10] [--connections 64] [--retries 2] [--quick]

What it does, in order (the module doing each step in brackets; ``common.*`` are the modules of
``bench/common/``, shared with ``python -m bench.rules``):

1. Finds wrk, nginx and py-spy (``tools``). Each missing one is named with ``make bench-tools``,
   and the run goes on without it: the Python generator (``loadgen``) stands in for wrk, and there
   are no nginx rows or no profile.
2. Recreates the scratch database ``sentinel_bench`` on the local PostgreSQL, migrates it, and runs
   ``manage.py bench_setup``, which creates through Sentinel's services a ``vital`` tenant whose
   limits are so high that every limiter checks but none refuses, a user of it and the route
   ``/proxy/`` (auth ``jwt``) to the mock upstream, and prints the user's JWT. Redis keys live under
   ``CACHE_KEY_PREFIX=sentinel-bench`` (``servers``, ``common.scratch``).
3. Starts on free ports: the mock upstream, nginx in front of it (1 worker, keep-alive pool), and
   ``manage.py serve`` in production mode (PostgreSQL + Redis) with 1, then 2 web processes
   (``servers``, ``common.processes``).
4. For each target (direct, nginx, Sentinel x1, Sentinel x2): warm-up rounds of 3 s until the rate
   is steady, then ``wrk -t2 -c64 -d10s --latency``, with the CPU of every process tree that takes
   part, of wrk and of the whole box (``common.cpu``: psutil; wrk's from wait4); then one
   ``-t1 -c1 -d5s`` run for the latency of one hop without queueing. Sentinel x1 is also driven at
   half its measured rate by an open-loop generator (wrk cannot pace), like the direct call and
   nginx, for the latency it adds below saturation; and profiled under load with ``py-spy record``
   (``measure``, ``load``, ``profile``).
5. Prints the report and writes it between ``<!-- bench:gateway:start -->`` and
   ``<!-- bench:gateway:end -->`` in ``docs/benchmarks.md`` (other sections stay as they are):
   ``report.md.tmpl`` and ``sentences.md.tmpl`` hold its prose, ``report`` and ``reading`` its
   figures; ``common.cli`` writes it. Then prints the README's performance summary (the direct,
   nginx and Sentinel rows, Sentinel with and without the request log, each one's CPU per request
   as a multiple of the direct row's, and issue 13's goals: ``summary.md.tmpl``) and writes it
   between ``<!-- bench:gateway-summary:start -->`` and ``...:end -->`` in ``README.md`` (only
   with the default ``--docs``, or where ``--readme`` says). ``--quick`` is a smoke test: short
   runs, nothing written.

Every process it starts is stopped at the end (SIGTERM, then SIGKILL), and the scratch database
and Redis keys are dropped. It exits non-zero with a message when something fails, and when
Sentinel answers anything but 2xx (the figures would not measure the proxy then).

CPU columns are in cores (CPU seconds / wall seconds): ``srv`` is the server under test,
``upstream`` the mock behind it, ``redis`` the Redis server, ``gen`` the load generator, ``other``
the processes this benchmark did not start, ``box`` all busy CPU. Everything shares the machine's
cores: when ``box`` nears the core count, the generator and the upstream are taking CPU from the
server. On a shared machine, a run during which ``other`` exceeds 0.1 core is measured again once
the machine is quiet (``--retries``, 2).
"""
