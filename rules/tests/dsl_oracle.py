"""A deliberately naive tree-walking interpreter of the rule DSL: benchmark baseline and test oracle.

``NaiveRule(text).matches(event)`` walks the Lark parse tree for every event, dispatching on
node names and decoding literals and field paths again each time. It re-implements the value
semantics written down in ``rules/dsl/evaluator.py`` on its own (it shares only parsing, literal decoding
and regex compilation with the compiler), so the differential tests compare two independent
implementations of one specification.

It lives with the tests because nothing in production runs it; ``bench/rules/`` imports it
as the baseline the compiled rules are measured against.

Windows are not supported: a rule with ``count(...)`` or ``sum(...)`` raises
``NotImplementedError`` at construction. Actions are not rendered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lark import Token, Tree

from rules.dsl.compiler import compile_rule, compiled_regex
from rules.dsl.evaluator import SafeRegex
from rules.dsl.parser import field_of, list_items, literal_value, parse, tree_of

_ABSENT = object()  # the interpreter's own "missing" marker
_MAX_DEPTH = 32  # same bound as evaluator.MAX_VALUE_DEPTH, as specified there


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(a: Any, b: Any, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if _number(a) and _number(b):
        return bool(a == b)
    if isinstance(a, bool) and isinstance(b, bool):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if a is None and b is None:
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y, depth + 1) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_equal(a[k], b[k], depth + 1) for k in a)
    return False


def _member(item: Any, container: Any) -> bool | None:
    if item is _ABSENT or container is _ABSENT:
        return None
    if isinstance(container, list | tuple):
        return any(_equal(item, x) for x in container)
    if isinstance(container, str) and isinstance(item, str):
        return item in container
    return None


def _arith(op: str, a: Any, b: Any) -> Any:
    if not (_number(a) and _number(b)):
        return _ABSENT
    try:
        result = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b}[op]()
    except (ZeroDivisionError, OverflowError):
        return _ABSENT
    if isinstance(result, float) and (math.isinf(result) or math.isnan(result)):
        return _ABSENT
    return result


class NaiveRule:
    """One rule, interpreted from its parse tree on every call."""

    def __init__(self, text: str) -> None:
        compiled = compile_rule(text)  # the same acceptance and errors as the compiler
        if compiled.windows:
            raise NotImplementedError("the naive interpreter does not evaluate windows")
        self.tree = parse(text)
        self._regexes: dict[str, SafeRegex] = {}

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether the rule's condition holds for the event."""
        return self._eval(tree_of(self.tree.children[0]), event) is True

    def _eval(self, node: Tree[Token], event: Mapping[str, Any]) -> Any:
        kind = str(node.data)
        kids = [child for child in node.children if isinstance(child, Tree)]
        if kind == "or_expr":
            return any(self._eval(k, event) is True for k in kids)
        if kind == "and_expr":
            return all(self._eval(k, event) is True for k in kids)
        if kind == "not_":
            return self._eval(kids[0], event) is not True
        if kind == "group":
            return self._eval(kids[0], event)
        if kind in ("number", "string", "true", "false", "null", "neg_number"):
            return literal_value(node)
        if kind == "list":
            return list(list_items(node))
        if kind == "field":
            return self._lookup(field_of(node), event)
        if kind == "neg":
            value = self._eval(kids[0], event)
            return -value if _number(value) else _ABSENT
        if kind in ("sum", "product"):
            value = self._eval(tree_of(node.children[0]), event)
            for i in range(1, len(node.children), 2):
                value = _arith(str(node.children[i]), value, self._eval(tree_of(node.children[i + 1]), event))
            return value
        return self._test(kind, node, kids, event)

    def _test(self, kind: str, node: Tree[Token], kids: list[Tree[Token]], event: Mapping[str, Any]) -> bool:
        a, b = self._eval(kids[0], event), self._eval(kids[1], event)
        if kind == "in_":
            return _member(a, b) is True
        if kind == "not_in":
            return _member(a, b) is False
        if kind == "contains":
            return _member(b, a) is True
        if a is _ABSENT or b is _ABSENT:
            return False
        if kind == "compare":
            op = str(node.children[1])
            if op == "==":
                return _equal(a, b)
            if op == "!=":
                return not _equal(a, b)
            if not ((_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))):
                return False
            return bool({">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op])
        if kind in ("startswith", "endswith"):
            if not (isinstance(a, str) and isinstance(b, str)):
                return False
            return a.startswith(b) if kind == "startswith" else a.endswith(b)
        if kind == "matches":
            if b not in self._regexes:
                self._regexes[b] = compiled_regex(b, None)
            return isinstance(a, str) and self._regexes[b].search(a)
        raise NotImplementedError(kind)

    @staticmethod
    def _lookup(path: tuple[str, ...], event: Mapping[str, Any]) -> Any:
        current: Any = event
        for key in path:
            if not isinstance(current, Mapping) or key not in current:
                return _ABSENT
            current = current[key]
        return current


def interpret(text: str, event: Mapping[str, Any]) -> bool:
    """Parses and evaluates in one go: the slowest possible way, for baselines."""
    return NaiveRule(text).matches(event)
