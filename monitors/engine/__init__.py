"""The check engine (issue 11 item 2): plain async Python fed by loaded ``CheckSpec``s, no Django.

The scheduler (``monitors.tasks``) loads due monitors into specs and hands a batch to a
``CheckRunner`` (``runner.py``), which returns ``CheckReport``s the services then store. The
design, and why:

* **One session per runner** (per worker process and loop): one aiohttp ``ClientSession``, one
  connector, one bounded pool, so thousands of checks cost no per-check client setup.
* **No keep-alive between checks** (``force_close``): every check opens a new connection, so it
  measures and can fail on what a user's first request meets: the DNS lookup, the TCP connect
  and the TLS handshake (hence a certificate's expiry is read on every https check). A reused
  connection would hide a dead listener or a replaced certificate until it closed.
* **One DNS cache, short-lived** (10 s, aiohttp's default and the shortest interval): monitors
  sharing a host share a lookup instead of each calling ``getaddrinfo`` in the loop's thread pool
  (at 10,000 monitors of one host, ~170 lookups a second), and an answer is never older than 10 s,
  so a name that stops resolving, or is re-pointed, is seen within 10 s. The lookup itself is
  measured only when it is not cached; connect and TLS are measured every time.
* **Egress at connect time**: every connection, redirect hops included, goes through
  ``core.egress_aiohttp.GuardedConnector``; tcp checks judge every resolved address before
  connecting. A name re-pointed after the monitor was saved cannot reach a refused address.
* **Bounded**: a whole-check deadline (``timeout_seconds``), the body read only when a keyword
  or a condition needs it and at most ``body_limit_bytes``, a bounded number of checks in flight.

``spec.py`` holds the data shapes and the target and status-list parsing the API shares.
"""
