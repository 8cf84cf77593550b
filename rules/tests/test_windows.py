"""Window stores (memory and real Redis) and window rules: exact, idempotent, pruned, atomic.

Time is passed explicitly (`now`), so nothing sleeps. Redis tests use a unique key prefix each
and delete what they wrote; without a Redis they skip (or fail with CI=true).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from rules.dsl import EvalContext, MemoryWindowStore, RedisWindowStore, WindowStore, compile_rule
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis

WINDOW = 60.0


@pytest.fixture
def redis_store() -> Iterator[RedisWindowStore]:
    import redis

    client = redis.Redis.from_url(require_redis())
    prefix = f"{key_prefix('windows')}:"
    try:
        yield RedisWindowStore(client, prefix=prefix)
    finally:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> WindowStore:
    if request.param == "memory":
        return MemoryWindowStore()
    redis_backed: RedisWindowStore = request.getfixturevalue("redis_store")
    return redis_backed


def test_count_is_exact_and_idempotent_per_event_id(store: WindowStore) -> None:
    # given three distinct events
    assert [store.count("k", WINDOW, 100.0 + i, f"e{i}") for i in range(3)] == [1, 2, 3]
    # when the second is recorded again, even later (a retried evaluation)
    again = store.count("k", WINDOW, 130.0, "e1")
    # then it is not counted twice
    assert again == 3
    assert store.count("k", WINDOW, 131.0, "e3") == 4


def test_sum_is_exact_and_idempotent_per_event_id(store: WindowStore) -> None:
    assert store.sum("k", WINDOW, 100.0, "e1", 1500.0) == 1500.0
    assert store.sum("k", WINDOW, 101.0, "e2", 2500.5) == 4000.5
    # a retry with a different value keeps the first record
    assert store.sum("k", WINDOW, 102.0, "e2", 99999.0) == 4000.5
    assert store.sum("k", WINDOW, 103.0, "e3", -0.5) == 4000.0
    assert store.sum("k", WINDOW, 104.0, "e4", 0.1) == pytest.approx(4000.1, abs=1e-9)


def test_entries_leave_the_window_after_its_length(store: WindowStore) -> None:
    # given events at t=100 and t=130 in a 60 s window
    store.count("k", WINDOW, 100.0, "e1")
    store.count("k", WINDOW, 130.0, "e2")
    # then at t=159.9 both are in; at t=160 the first has left (in the window: time > now - 60)
    assert store.count("k", WINDOW, 159.9, "e3") == 3
    assert store.count("k", WINDOW, 160.0, "e4") == 3
    assert store.count("k", WINDOW, 500.0, "e5") == 1


def test_sum_prunes_values_with_their_entries(store: WindowStore) -> None:
    store.sum("k", WINDOW, 100.0, "e1", 1000.0)
    store.sum("k", WINDOW, 130.0, "e2", 10.0)
    assert store.sum("k", WINDOW, 161.0, "e3", 1.0) == 11.0
    assert store.sum("k", WINDOW, 1000.0, "e4", 5.0) == 5.0


def test_keys_are_independent(store: WindowStore) -> None:
    store.count("a", WINDOW, 100.0, "e1")
    assert store.count("b", WINDOW, 100.0, "e1") == 1
    assert store.count("a", WINDOW, 100.0, "e2") == 2


def test_redis_keys_are_namespaced_hash_tagged_and_expire(redis_store: RedisWindowStore) -> None:
    import redis

    client = redis.Redis.from_url(require_redis())
    try:
        # when a count and a sum are recorded
        redis_store.count("t1:r1:0.count.60s:_", WINDOW, 100.0, "e1")
        redis_store.sum("t1:r1:1.sum.60s.vx:10.0.0.1", WINDOW, 100.0, "e1", 7.0)
        count_key = redis_store.redis_key("t1:r1:0.count.60s:_")
        sum_key = redis_store.redis_key("t1:r1:1.sum.60s.vx:10.0.0.1")
        # then the keys carry the prefix and a hash tag, and expire within the window's length
        assert count_key == f"{redis_store.prefix}{{t1:r1:0.count.60s:_}}"
        for key in (count_key, sum_key, sum_key + ":v"):
            assert 0 < client.pttl(key) <= 60_000
        assert client.zscore(count_key, "e1") == 100.0
        assert client.hget(sum_key + ":v", "e1") == b"7.0"
    finally:
        client.close()


def test_redis_store_works_with_decoded_responses(redis_store: RedisWindowStore) -> None:
    import redis

    client = redis.Redis.from_url(require_redis(), decode_responses=True)
    try:
        store = RedisWindowStore(client, prefix=redis_store.prefix)
        assert store.count("k", WINDOW, 1.0, "e1") == 1
        assert store.sum("s", WINDOW, 1.0, "e1", 2.5) == 2.5
    finally:
        client.close()


def test_memory_store_sweeps_idle_keys() -> None:
    # given many keys written at t=0
    store = MemoryWindowStore()
    for i in range(100):
        store.count(f"old{i}", WINDOW, 0.0, "e")
    # when enough later calls happen on another key
    for i in range(MemoryWindowStore.SWEEP_EVERY):
        store.count("live", WINDOW, 1000.0, f"e{i}")
    # then the idle keys are gone
    assert len(store) == 1


# --- rules with windows -------------------------------------------------------------------------


def _evaluate(rule_text: str, store: WindowStore) -> Callable[..., Any]:
    """`run(event, event_id, now, **context overrides)` for one compiled rule on one store."""
    rule = compile_rule(rule_text)

    def run(event: dict[str, Any], event_id: str, now: float, **overrides: Any) -> Any:
        context = EvalContext(store=store, tenant="t1", rule="r1", event_id=event_id, now=now)
        return rule.evaluate(event, replace(context, **overrides))

    return run


FIVE_PER_IP = 'when type == "login_failed" and count(1m by event.ip) >= 5 then notify("slack:#sec")'


def test_count_by_ip_fires_at_the_fifth_event_from_one_ip(store: WindowStore) -> None:
    run = _evaluate(FIVE_PER_IP, store)
    # when one ip fails five times within a minute
    results = [run({"type": "login_failed", "ip": "10.0.0.1"}, f"e{i}", 100.0 + i) for i in range(5)]
    # then the rule fires exactly at the fifth, with the ip as its group
    assert results[:4] == [None] * 4
    match = results[4]
    assert match is not None
    assert match.window_values == (5,)
    assert match.groups == (("ip", "10.0.0.1"),)
    assert match.group_key == "ip=10.0.0.1"


def test_count_by_ip_does_not_fire_for_five_ips_with_one_event_each(store: WindowStore) -> None:
    run = _evaluate(FIVE_PER_IP, store)
    results = [run({"type": "login_failed", "ip": f"10.0.0.{i}"}, f"e{i}", 100.0 + i) for i in range(5)]
    assert results == [None] * 5


def test_events_failing_the_filter_or_missing_the_group_are_not_recorded(store: WindowStore) -> None:
    run = _evaluate(FIVE_PER_IP, store)
    # given four failures from one ip, plus other events that must not count
    for i in range(4):
        assert run({"type": "login_failed", "ip": "10.0.0.1"}, f"e{i}", 100.0 + i) is None
    assert run({"type": "login_ok", "ip": "10.0.0.1"}, "ok", 104.0) is None  # fails the filter
    assert run({"type": "login_failed"}, "no-ip", 104.0) is None  # no group value
    assert run({"type": "login_failed", "ip": None}, "null-ip", 104.0) is None
    # when the same fourth event is evaluated again (a retry)
    assert run({"type": "login_failed", "ip": "10.0.0.1"}, "e3", 104.5) is None
    # then only the fifth distinct failure fires
    assert run({"type": "login_failed", "ip": "10.0.0.1"}, "e5", 105.0) is not None


def test_count_window_slides(store: WindowStore) -> None:
    run = _evaluate(FIVE_PER_IP, store)
    for i in range(4):
        run({"type": "login_failed", "ip": "10.0.0.1"}, f"e{i}", 100.0 + i * 20)  # t=100..160
    # at t=161 the event of t=100 has left the minute: four in the window, no match
    assert run({"type": "login_failed", "ip": "10.0.0.1"}, "e4", 161.0) is None
    assert run({"type": "login_failed", "ip": "10.0.0.1"}, "e5", 162.0) is not None


def test_windows_are_per_tenant_and_rule(store: WindowStore) -> None:
    run = _evaluate('when count(1m) >= 2 then notify("slack:#x")', store)
    assert run({}, "e1", 100.0) is None
    assert run({}, "e2", 100.0, tenant="t2") is None
    assert run({}, "e3", 100.0, rule="r2") is None
    assert run({}, "e4", 100.0) is not None


def test_sum_by_user_fires_past_the_threshold(store: WindowStore) -> None:
    run = _evaluate('when sum(amount, 1h by event.user_id) > 10000 then notify("slack:#x")', store)
    assert run({"user_id": 7, "amount": 6000}, "e1", 100.0) is None
    assert run({"user_id": 8, "amount": 6000}, "e2", 101.0) is None
    assert run({"user_id": 7, "amount": "lots"}, "e3", 102.0) is None  # not a number: not recorded
    assert run({"user_id": 7, "amount": True}, "e4", 102.0) is None
    match = run({"user_id": 7, "amount": 4000.5}, "e5", 103.0)
    assert match is not None
    assert match.window_values == (10000.5,)
    assert match.group_key == "user_id=7"
    # an hour later the old amounts are gone
    assert run({"user_id": 7, "amount": 1}, "e6", 3_800.0) is None


def test_window_terms_combine_with_other_conditions(store: WindowStore) -> None:
    text = 'when type == "order" and (count(1m) >= 3 or vip == true) then notify("slack:#x", "{id}")'
    run = _evaluate(text, store)
    assert run({"type": "order", "id": 1}, "e1", 1.0) is None
    vip = run({"type": "order", "id": 2, "vip": True}, "e2", 2.0)
    assert vip is not None and vip.actions[0].message == "2"
    assert run({"type": "order", "id": 3}, "e3", 3.0) is not None


# --- concurrency --------------------------------------------------------------------------------


def _in_threads(threads: int, work: Callable[[int], list[Any]]) -> list[Any]:
    results: list[list[Any]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def run(worker: int) -> None:
        barrier.wait()  # start together, to maximise interleaving
        results[worker] = work(worker)

    pool = [threading.Thread(target=run, args=(worker,)) for worker in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    return [value for chunk in results for value in chunk]


def test_concurrent_counts_are_exact_and_each_value_is_seen_once(store: WindowStore) -> None:
    # given 8 threads each recording 25 distinct events into one window
    def work(worker: int) -> list[int]:
        return [store.count("hot", WINDOW, 100.0, f"w{worker}-e{i}") for i in range(25)]

    seen = _in_threads(8, work)
    # then the final count is exact, and every value 1..200 was returned exactly once,
    # so exactly one recording saw the threshold crossing at 5
    assert sorted(seen) == list(range(1, 201))
    assert seen.count(5) == 1
    assert store.count("hot", WINDOW, 100.0, "w0-e0") == 200


def test_concurrent_sums_are_exact(store: WindowStore) -> None:
    def work(worker: int) -> list[float]:
        return [store.sum("hot", WINDOW, 100.0, f"w{worker}-e{i}", 1.0) for i in range(25)]

    seen = _in_threads(8, work)
    assert sorted(seen) == [float(n) for n in range(1, 201)]


def test_concurrent_rule_evaluations_fire_exactly_once_at_the_threshold(store: WindowStore) -> None:
    # given a rule that fires when one ip reaches exactly five failures
    rule = compile_rule('when count(1m by ip) == 5 then notify("slack:#sec")')

    def work(worker: int) -> list[Any]:
        matches = []
        for i in range(5):
            ctx = EvalContext(store=store, tenant="t", rule="r", event_id=f"w{worker}-e{i}", now=100.0)
            matches.append(rule.evaluate({"ip": "10.0.0.1"}, ctx))
        return matches

    # when 8 workers evaluate 40 failures from that ip at once
    results = _in_threads(8, work)
    # then exactly one evaluation matched
    assert sum(match is not None for match in results) == 1
