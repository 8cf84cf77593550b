"""``compile_condition``: a rule's ``when`` part alone, as monitors use it, with Gatus-style
failures (the first failing conjunct, with each field's actual value)."""

from __future__ import annotations

from typing import Any

import pytest

from rules.dsl import CompiledCondition, DslError, DslSyntaxError, compile_condition, compile_rule

HEALTH = 'status == 200 and response_time < 300 and body.status == "UP"'


def test_none_when_every_conjunct_holds() -> None:
    condition = compile_condition(HEALTH)

    assert condition.failure({"status": 200, "response_time": 12.5, "body": {"status": "UP"}}) is None
    assert condition.holds({"status": 200, "response_time": 12.5, "body": {"status": "UP"}})


@pytest.mark.parametrize(
    ("values", "failure"),
    [
        ({"status": 500, "response_time": 12.5, "body": {"status": "UP"}}, "status (500) == 200"),
        ({"status": 200, "response_time": 812.4, "body": {"status": "UP"}}, "response_time (812.4) < 300"),
        ({"status": 200, "response_time": 1, "body": {"status": "DOWN"}}, 'body.status ("DOWN") == "UP"'),
        ({"status": 200, "response_time": 1, "body": "<html>"}, 'body.status (missing) == "UP"'),
        ({}, "status (missing) == 200"),
    ],
)
def test_the_first_failing_conjunct_is_rendered_with_actual_values(values: dict[str, Any], failure: str) -> None:
    assert compile_condition(HEALTH).failure(values) == failure


def test_fields_are_the_top_level_names_read() -> None:
    assert compile_condition(HEALTH).fields == frozenset({"status", "response_time", "body"})
    assert compile_condition("cert_expiry_days > 14").fields == frozenset({"cert_expiry_days"})
    assert "body" not in compile_condition('headers.server == "nginx"').fields


def test_a_conjunct_reading_several_fields_shows_each_value() -> None:
    condition = compile_condition("response_time / 1000 < cert_expiry_days or status in [200, 204]")

    failure = condition.failure({"response_time": 2500, "cert_expiry_days": 1, "status": 503})

    assert failure == "response_time (2500) / 1000 < cert_expiry_days (1) or status (503) in [200, 204]"


def test_layout_is_kept_on_one_line_and_string_literals_untouched() -> None:
    condition = compile_condition('status == 200\n  and (headers.server   ==   "my  server"\n)')

    assert condition.failure({"status": 200, "headers": {"server": "x"}}) == 'headers.server ("x") == "my  server"'


def test_long_values_are_cut() -> None:
    failure = compile_condition('body contains "ok"').failure({"body": "x" * 5000})

    assert failure is not None and len(failure) < 120
    assert failure.startswith('body ("xxx') and failure.endswith('…) contains "ok"')


@pytest.mark.parametrize(
    ("value", "shown"),
    [(True, "true"), (None, "null"), ([1, "a"], '[1,"a"]'), ({"a": 1}, '{"a":1}'), (3, "3"), (0.5, "0.5")],
)
def test_values_render_as_json(value: Any, shown: str) -> None:
    assert compile_condition("x == 42").failure({"x": value}) == f"x ({shown}) == 42"


@pytest.mark.parametrize(
    "text",
    [
        HEALTH,
        "status >= 200 and status < 300",
        'not (body.status == "DOWN") and headers.server startswith "ng"',
        "cert_expiry_days > 14 or status == 301",
        'body.items contains "a" and body.count != 0',
        'body matches "^UP"',
    ],
)
@pytest.mark.parametrize(
    "values",
    [
        {"status": 200, "response_time": 1, "body": {"status": "UP", "items": ["a"], "count": 1}, "headers": {}},
        {"status": 301, "body": "UPTIME", "headers": {"server": "nginx"}, "cert_expiry_days": 3},
        {"status": 503, "response_time": 999.9, "body": {"status": "DOWN", "count": 0}, "cert_expiry_days": 90},
        {},
    ],
)
def test_a_condition_holds_exactly_when_the_same_rule_would_match(text: str, values: dict[str, Any]) -> None:
    # Same grammar, same value semantics: the condition is a rule without actions.
    rule = compile_rule(f'when {text} then notify("slack:#x")')

    assert (compile_condition(text).failure(values) is None) == (rule.evaluate(values) is not None)


@pytest.mark.parametrize(
    ("text", "words", "line", "column"),
    [
        ("count(5m) > 3", "count(...) is a window", 1, 1),
        ("status == 200 and sum(response_time, 1h) > 9", "sum(...) is a window", 1, 19),
        ('status == 200 then notify("slack:#x")', "has no actions", 1, 15),
        ("when status == 200", "without `when`", 1, 1),
        ("", "condition is empty", 1, 1),
        ("   \n", "condition is empty", 2, 1),
    ],
)
def test_windows_actions_and_rule_syntax_are_refused_in_words(text: str, words: str, line: int, column: int) -> None:
    with pytest.raises(DslError) as raised:
        compile_condition(text)

    assert words in raised.value.message
    assert (raised.value.line, raised.value.column) == (line, column)


def test_a_syntax_error_has_its_position_in_the_users_text() -> None:
    with pytest.raises(DslSyntaxError) as raised:
        compile_condition('status == 200 and\n  body.status = "UP"')

    assert (raised.value.line, raised.value.column) == (2, 15)
    assert raised.value.message.startswith("unexpected character '='; expected ")
    assert '"=="' in raised.value.expected and "end of input" in raised.value.expected


def test_bounds_are_the_rules() -> None:
    with pytest.raises(DslError, match="condition is longer than 10000 characters"):
        compile_condition("status == 200 and " * 600 + "true")
    with pytest.raises(DslError, match="nested more than 32 levels"):
        compile_condition("(" * 40 + "status == 200" + ")" * 40)
    with pytest.raises(DslError, match="regex pattern is longer"):
        compile_condition(f'body matches "{"a" * 300}"')


def test_not_a_string_is_an_error_not_a_crash() -> None:
    with pytest.raises(DslError):
        compile_condition(42)  # type: ignore[arg-type]


def test_a_compiled_condition_is_reusable_and_says_what_it_is() -> None:
    condition = compile_condition("status == 200")

    assert isinstance(condition, CompiledCondition)
    assert condition.source == "status == 200"
    assert [condition.failure({"status": code}) for code in (200, 404, 200)] == [None, "status (404) == 200", None]


def test_rules_still_compile_as_before() -> None:
    rule = compile_rule('when type == "order" and amount > 500 then notify("slack:#big")')

    assert rule.evaluate({"type": "order", "amount": 900}) is not None
    with pytest.raises(DslSyntaxError):
        compile_rule("status == 200")  # a bare condition is not a rule
