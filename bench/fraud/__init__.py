"""`python -m bench.fraud`: the fraud flow's figures (issue 12), in three parts.

(a) **brain alone**: the brain process (`manage.py run_brain`, or with `--fake-brain` the scripted
    stand-in of tests/support/fake_brain.py) on a free port, driven over one grpc.aio channel at
    `--concurrency` calls in flight for `--brain-duration` s: scores/s, p50/p99, the brain's CPU
    per score (psutil, its process tree).
(b) **end to end**: one web process in production mode (PostgreSQL + Redis, `manage.py serve` as
    the Procfile starts it) with the brain running, a bench tenant and API key made through the
    services; an open-loop generator (`bench.fraud.loadgen`, a child process) POSTs unique
    transactions to `/transaction` at `--rate` (500/s) for `--duration` s after a warm-up: rps,
    p50, p99, non-2xx, fail-open answers, CPU per process (web, brain, PostgreSQL, Redis, the
    generator). Unless `--quick` or `--no-search`, the rate is then raised step by step to find the
    highest one with p99 under 35 ms.
(c) **fail-open**: the brain stopped, the breaker opened by the warm-up, the same load: p50/p99
    (goal under 50 ms) and the fail-open answers by reason.

Goals (issue 12): p99 < 35 ms at 500 tx/s end to end; fail-open p99 < 50 ms. The section goes to
docs/benchmarks.md between `<!-- bench:fraud:start -->` and its end marker, unless `--quick`.
A part that is missing (no `run_brain` command, no `POST /transaction`) stops the run with a
message that says which.
"""
