"""What is measured on: generated rules over 100 event types (`make_rules`), random events over the
same types (`make_event`), and the JSON bodies posted to ``POST /events`` (`ingest_batches`).

Everything is drawn from a seeded `random.Random`, so two runs measure the same rules and events.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from typing import Any

from bench.rules.config import AGNOSTIC_SHARE, BATCH, EVENT_TYPES

CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF"]
COUNTRIES = ["FR", "DE", "US", "GB", "ES", "IT", "JP", "BR"]
PLANS = ["free", "free", "free", "pro", "pro", "enterprise"]
PATHS = ["/api/orders", "/api/users", "/api/payments", "/login", "/logout", "/health", "/admin/users", "/app.js"]
STATUSES = [200] * 12 + [201, 201, 204, 301, 400, 401, 403, 404, 404, 429, 500, 502, 503]
DOMAINS = ["example.com", "example.org", "mail.test", "corp.example.net"]
NAMES = ["ann", "bob", "chloe", "dmitri", "eve", "farid", "gus", "hana"]
TAGS = ["vip", "new", "b2b", "trial", "beta", "churn-risk", "partner"]

# One conjunct of a generated rule, given a random source; each holds for a minority of events.
CONDITIONS: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"event.amount > {r.choice([250, 500, 1000, 2500])}",
    lambda r: f"event.amount * event.quantity >= {r.choice([1000, 2500, 5000])}",
    lambda r: f"event.price * event.quantity - event.amount > {r.choice([500, 1000, 2000])}",
    lambda r: f"event.currency in {json.dumps(r.sample(CURRENCIES, 2))}",
    lambda r: f"event.user.country not in {json.dumps(r.sample(COUNTRIES, 5))}",
    lambda r: f'event.user.plan == "{r.choice(["pro", "enterprise"])}"',
    lambda r: f'event.tags contains "{r.choice(TAGS)}"',
    lambda r: f'event.email matches "^[a-z]+[0-9]+@{r.choice(DOMAINS).replace(".", chr(92) * 2 + ".")}$"',
    lambda r: f"event.status >= {r.choice([400, 500])}",
    lambda r: f'event.path startswith "{r.choice(["/api/pay", "/admin/", "/login"])}"',
    lambda r: f"event.latency_ms > {r.choice([250, 500, 1000])}",
    lambda r: "(event.status == 401 or event.status == 403)",
)
ACTION = 'notify("webhook:x", "{type}: {amount} {currency} from {user.country} ({user.plan})")'


def make_rules(count: int, rng: random.Random) -> list[str]:
    """`count` window-free rules: typed ones spread evenly over the event types, and one in
    AGNOSTIC_SHARE (at least one, evenly placed) without a type conjunct and with three conditions
    instead, so that it stays selective."""
    agnostic = max(1, count // AGNOSTIC_SHARE)
    untyped = {int((i + 0.5) * count / agnostic) for i in range(agnostic)}
    typed = (f'event.type == "{t}"' for t in itertools.cycle(EVENT_TYPES))
    rules = []
    for k in range(count):
        if k in untyped:
            conditions = [c(rng) for c in rng.sample(CONDITIONS, 3)]
        else:
            conditions = [next(typed)] + [c(rng) for c in rng.sample(CONDITIONS, rng.choice([1, 2, 2, 3]))]
        rules.append(f"when {' and '.join(conditions)} then {ACTION}")
    return rules


def make_event(rng: random.Random) -> dict[str, Any]:
    """A random event of one of the EVENT_TYPES: 12 fields, a nested `user`, a `tags` list."""
    number = str(rng.randint(1, 99)) if rng.random() < 0.4 else ""
    return {
        "type": rng.choice(EVENT_TYPES),
        "amount": round(rng.lognormvariate(5.0, 1.2), 2),  # median about 150, a long tail
        "currency": rng.choice(CURRENCIES),
        "quantity": rng.randint(1, 10),
        "price": round(rng.uniform(1, 300), 2),
        "status": rng.choice(STATUSES),
        "path": rng.choice(PATHS),
        "latency_ms": round(rng.expovariate(1 / 150), 1),
        "ip": f"10.{rng.randint(0, 3)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "email": f"{rng.choice(NAMES)}{number}@{rng.choice(DOMAINS)}",
        "user": {"id": rng.randint(1, 50_000), "country": rng.choice(COUNTRIES), "plan": rng.choice(PLANS)},
        "tags": rng.sample(TAGS, rng.randint(0, 3)),
    }


def ingest_batches(count: int) -> list[bytes]:
    """`count` JSON bodies of BATCH random events each (the same ones every run)."""
    rng = random.Random(11)
    return [json.dumps([make_event(rng) for _ in range(BATCH)]).encode() for _ in range(count)]
