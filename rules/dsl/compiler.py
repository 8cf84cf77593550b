"""Compiles rule DSL text (SPEC 4) into Python closures, once per rule version.

``compile_rule(text)`` parses with Lark's LALR parser (``grammar.lark``: linear time), checks the
bounds below, and turns the tree into nested closures: user text is never passed to ``eval``,
``exec`` or ``compile``, and regexes are compiled here, once. Any input string either compiles
or raises ``DslError`` (``DslSyntaxError`` for syntax) with a message, a line and a column;
value semantics are documented in ``evaluator.py``.

Bounds: text ≤ 10,000 characters; ≤ 32 levels of nesting (parentheses, ``not``, unary minus,
lists, windows); regex patterns ≤ 256 characters; list literals ≤ 256 items; ≤ 10 actions;
≤ 8 windows; window durations from 1 s to 7 d (units ``s m h d``).

Window semantics are documented in ``rule.py``.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from lark import Token, Tree

from rules.dsl.evaluator import (
    MISSING,
    RegexRejected,
    TemplatePart,
    arithmetic,
    compile_pattern,
    is_number,
    make_getter,
    membership,
    negate,
    orderable,
    parse_template,
    scalar_key,
    strict_eq,
)
from rules.dsl.parser import (
    DslError,
    DslSyntaxError,
    canonical_source,
    conjuncts,
    decode_duration,
    decode_string,
    field_of,
    list_items,
    literal_value,
    parse,
    token_of,
    tree_of,
    types_required_by,
    where,
)
from rules.dsl.rule import Action, CompiledRule, Fn, WindowPlan, WindowSpec

# DslError and DslSyntaxError are re-exported: callers catch them from here.
__all__ = ["DslError", "DslSyntaxError", "compile_rule", "compiled_regex"]

MAX_PATTERN_CHARS: Final = 256
MAX_ACTIONS: Final = 10
MAX_WINDOWS: Final = 8
MAX_TARGET_CHARS: Final = 200
ACTION_KINDS: Final = ("slack", "webhook", "email", "discord")
Event = Mapping[str, Any]


# --- compilation --------------------------------------------------------------------------------

_NOT_CONST: Final = object()
_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_FLIP: Final = {"==": "==", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}


@dataclass(frozen=True, slots=True)
class _Expr:
    fn: Fn
    const: Any = _NOT_CONST
    boolean: bool = False  # the value is always a bool (comparisons and logic)
    windowed: bool = False  # contains a window term
    path: tuple[str, ...] | None = None  # a plain field reference


def _const(value: Any) -> _Expr:
    return _Expr(lambda event, windows: value, const=value)


class _Compiler:
    """Turns a checked parse tree into closures. Recursion is bounded by ``_check_depth``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.plans: list[WindowPlan] = []
        self.in_window = False

    # boolean context ----------------------------------------------------------------------------

    def condition(self, node: Tree[Token]) -> tuple[Fn, bool]:
        compiled = self.expr(node)
        if compiled.boolean:
            return compiled.fn, compiled.windowed
        fn = compiled.fn
        return (lambda event, windows: fn(event, windows) is True), compiled.windowed

    def expr(self, node: Tree[Token]) -> _Expr:
        method: Callable[[Tree[Token]], _Expr] | None = getattr(self, f"_node_{node.data}", None)
        if method is None:  # pragma: no cover - every rule of the grammar has a method
            raise DslError(f"unsupported construct {node.data!r}", **where(node))
        return method(node)

    def _logic(self, node: Tree[Token], *, any_of: bool) -> _Expr:
        parts = [self.condition(tree_of(child)) for child in node.children]
        tests = tuple(test for test, _ in parts)
        windowed = any(w for _, w in parts)
        if len(tests) == 2:
            first, second = tests
            if any_of:
                return _Expr(lambda e, w: first(e, w) or second(e, w), boolean=True, windowed=windowed)
            return _Expr(lambda e, w: first(e, w) and second(e, w), boolean=True, windowed=windowed)

        def any_true(event: Event, windows: Sequence[Any]) -> bool:
            return any(test(event, windows) for test in tests)

        def all_true(event: Event, windows: Sequence[Any]) -> bool:
            return all(test(event, windows) for test in tests)

        return _Expr(any_true if any_of else all_true, boolean=True, windowed=windowed)

    def _node_or_expr(self, node: Tree[Token]) -> _Expr:
        return self._logic(node, any_of=True)

    def _node_and_expr(self, node: Tree[Token]) -> _Expr:
        return self._logic(node, any_of=False)

    def _node_not_(self, node: Tree[Token]) -> _Expr:
        test, windowed = self.condition(tree_of(node.children[0]))
        return _Expr(lambda e, w: not test(e, w), boolean=True, windowed=windowed)

    # comparisons --------------------------------------------------------------------------------

    def _node_compare(self, node: Tree[Token]) -> _Expr:
        left, op_token, right = node.children
        a, b, op = self.expr(tree_of(left)), self.expr(tree_of(right)), str(op_token)
        windowed = a.windowed or b.windowed
        if a.const is _NOT_CONST and b.const is not _NOT_CONST:
            return self._against_const(a, op, b.const, windowed)
        if b.const is _NOT_CONST and a.const is not _NOT_CONST:
            return self._against_const(b, _FLIP[op], a.const, windowed)
        fa, fb = a.fn, b.fn
        if op == "==":
            return _Expr(lambda e, w: strict_eq(fa(e, w), fb(e, w)), boolean=True, windowed=windowed)
        if op == "!=":

            def differs(event: Event, windows: Sequence[Any]) -> bool:
                x, y = fa(event, windows), fb(event, windows)
                return x is not MISSING and y is not MISSING and not strict_eq(x, y)

            return _Expr(differs, boolean=True, windowed=windowed)
        order = _ORDER[op]

        def ordered(event: Event, windows: Sequence[Any]) -> bool:
            x, y = fa(event, windows), fb(event, windows)
            return orderable(x, y) and bool(order(x, y))

        return _Expr(ordered, boolean=True, windowed=windowed)

    def _against_const(self, side: _Expr, op: str, const: Any, windowed: bool) -> _Expr:
        # The hot path: `field OP literal` needs one lookup and one type check per event.
        test = _const_test(op, const)
        if side.path is not None and not windowed:
            get = make_getter(side.path)
            return _Expr(lambda e, w: test(get(e)), boolean=True)
        fn = side.fn
        return _Expr(lambda e, w: test(fn(e, w)), boolean=True, windowed=windowed)

    def _membership(self, node: Tree[Token], *, swap: bool, negated: bool) -> _Expr:
        left, right = (self.expr(tree_of(child)) for child in node.children)
        item, container = (right, left) if swap else (left, right)
        windowed = left.windowed or right.windowed
        if isinstance(container.const, tuple) and all(scalar_key(x) is not None for x in container.const):
            keys = frozenset(scalar_key(x) for x in container.const)
            fi = item.fn
            if negated:
                return _Expr(lambda e, w: _not_in_keys(fi(e, w), keys), boolean=True, windowed=windowed)
            return _Expr(lambda e, w: scalar_key(fi(e, w)) in keys, boolean=True, windowed=windowed)
        fi, fc = item.fn, container.fn
        wanted = not negated
        return _Expr(lambda e, w: membership(fi(e, w), fc(e, w)) is wanted, boolean=True, windowed=windowed)

    def _node_in_(self, node: Tree[Token]) -> _Expr:
        return self._membership(node, swap=False, negated=False)

    def _node_not_in(self, node: Tree[Token]) -> _Expr:
        return self._membership(node, swap=False, negated=True)

    def _node_contains(self, node: Tree[Token]) -> _Expr:
        return self._membership(node, swap=True, negated=False)

    def _affix(self, node: Tree[Token], *, prefix: bool) -> _Expr:
        left, right = (self.expr(tree_of(child)) for child in node.children)
        fa, fb = left.fn, right.fn

        def test(event: Event, windows: Sequence[Any]) -> bool:
            x, y = fa(event, windows), fb(event, windows)
            if not (isinstance(x, str) and isinstance(y, str)):
                return False
            return x.startswith(y) if prefix else x.endswith(y)

        return _Expr(test, boolean=True, windowed=left.windowed or right.windowed)

    def _node_startswith(self, node: Tree[Token]) -> _Expr:
        return self._affix(node, prefix=True)

    def _node_endswith(self, node: Tree[Token]) -> _Expr:
        return self._affix(node, prefix=False)

    def _node_matches(self, node: Tree[Token]) -> _Expr:
        left, right = self.expr(tree_of(node.children[0])), self.expr(tree_of(node.children[1]))
        pattern = right.const
        if not isinstance(pattern, str):
            raise DslError("matches needs a string literal pattern", **where(tree_of(node.children[1])))
        regex = compiled_regex(pattern, tree_of(node.children[1]))
        fa, search = left.fn, regex.search

        def test(event: Event, windows: Sequence[Any]) -> bool:
            subject = fa(event, windows)
            return isinstance(subject, str) and search(subject)

        return _Expr(test, boolean=True, windowed=left.windowed)

    # values -------------------------------------------------------------------------------------

    def _arith_chain(self, node: Tree[Token]) -> _Expr:
        children = node.children
        acc = self.expr(tree_of(children[0]))
        for index in range(1, len(children), 2):
            op, right = str(children[index]), self.expr(tree_of(children[index + 1]))
            acc = _arith(op, acc, right)
        return acc

    def _node_sum(self, node: Tree[Token]) -> _Expr:
        return self._arith_chain(node)

    def _node_product(self, node: Tree[Token]) -> _Expr:
        return self._arith_chain(node)

    def _node_neg(self, node: Tree[Token]) -> _Expr:
        inner = self.expr(tree_of(node.children[1]))
        if inner.const is not _NOT_CONST:
            return _const(negate(inner.const))
        fn = inner.fn
        return _Expr(lambda e, w: negate(fn(e, w)), windowed=inner.windowed)

    def _node_group(self, node: Tree[Token]) -> _Expr:
        return self.expr(tree_of(node.children[0]))

    def _node_number(self, node: Tree[Token]) -> _Expr:
        return _const(literal_value(node))

    _node_string = _node_true = _node_false = _node_null = _node_neg_number = _node_number

    def _node_list(self, node: Tree[Token]) -> _Expr:
        return _const(list_items(node))

    def _node_field(self, node: Tree[Token]) -> _Expr:
        path = field_of(node)
        get = make_getter(path)
        return _Expr(lambda e, w: get(e), path=path)

    # windows ------------------------------------------------------------------------------------

    def _window(self, node: Tree[Token], kind: str, value_node: Tree[Token] | None) -> _Expr:
        name = token_of(node.children[0])
        if str(name) not in ("count", "sum"):
            raise DslError(f"unknown function {str(name)!r}; windows are count(...) and sum(...)", **where(name))
        if str(name) != kind:
            usage = "count(<duration> [by <field>])" if name == "count" else "sum(<value>, <duration> [by <field>])"
            raise DslError(f"{name} is written {usage}", **where(name))
        if self.in_window:
            raise DslError("windows cannot be nested", **where(name))
        if len(self.plans) >= MAX_WINDOWS:
            raise DslError(f"a rule cannot have more than {MAX_WINDOWS} windows", **where(name))
        duration, by = node.children[-2:]
        seconds = decode_duration(token_of(duration))
        group = field_of(tree_of(tree_of(by).children[0])) if by is not None else None
        value_fn: Fn | None = None
        value_text: str | None = None
        if value_node is not None:
            self.in_window = True
            value_fn = self.expr(value_node).fn
            self.in_window = False
            value_text = self._source_of(value_node)
        index = len(self.plans)
        key = f"{index}.{kind}.{seconds}s"
        if group is not None:
            key += ".by." + ".".join(group)
        if value_text is not None:
            key += ".v" + hashlib.sha256(value_text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        spec = WindowSpec(index, kind, seconds, group, value_text, key)
        self.plans.append(WindowPlan(spec, make_getter(group) if group is not None else None, value_fn))
        return _Expr(lambda e, w: w[index], windowed=True)

    def _node_window_count(self, node: Tree[Token]) -> _Expr:
        return self._window(node, "count", None)

    def _node_window_sum(self, node: Tree[Token]) -> _Expr:
        return self._window(node, "sum", tree_of(node.children[1]))

    def _source_of(self, node: Tree[Token]) -> str:
        meta = node.meta
        if meta.empty:  # pragma: no cover - every tree here has tokens, hence positions
            return str(node)
        return canonical_source(self.text[meta.start_pos : meta.end_pos])

    # actions ------------------------------------------------------------------------------------

    def actions(self, node: Tree[Token]) -> tuple[tuple[Action, ...], tuple[tuple[TemplatePart, ...] | None, ...]]:
        children = [tree_of(child) for child in node.children]
        if len(children) > MAX_ACTIONS:
            raise DslError(f"a rule cannot have more than {MAX_ACTIONS} actions", **where(children[MAX_ACTIONS]))
        actions: list[Action] = []
        templates: list[tuple[TemplatePart, ...] | None] = []
        for child in children:
            action, template = _action(child)
            actions.append(action)
            templates.append(parse_template(template) if template is not None else None)
        return tuple(actions), tuple(templates)


def _action(node: Tree[Token]) -> tuple[Action, str | None]:
    name_child, target_child, template_child = node.children
    name = token_of(name_child)
    if str(name) != "notify":
        raise DslError(f'unknown action {str(name)!r}; expected notify("kind:target")', **where(name))
    target_token = token_of(target_child)
    spec = decode_string(target_token)
    kind, sep, target = spec.partition(":")
    if not sep or kind not in ACTION_KINDS:
        raise DslError(
            f'unknown notification kind {kind!r}; expected one of {", ".join(ACTION_KINDS)} (as "kind:target")',
            expected=list(ACTION_KINDS),
            **where(target_token),
        )
    if not target.strip() or len(target) > MAX_TARGET_CHARS:
        raise DslError(f"a {kind} target must have 1 to {MAX_TARGET_CHARS} characters", **where(target_token))
    template = decode_string(token_of(template_child)) if template_child is not None else None
    return Action(kind, target, template), template


def compiled_regex(pattern: str, node: Tree[Token] | Token | None) -> Any:
    """Compiles a ``matches`` pattern within the bounds, reporting errors at ``node``."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise DslError(f"regex pattern is longer than {MAX_PATTERN_CHARS} characters", **where(node))
    try:
        return compile_pattern(pattern)
    except RegexRejected as exc:
        raise DslError(str(exc), **where(node)) from None


def _const_test(op: str, const: Any) -> Callable[[Any], bool]:
    """A one-argument predicate for ``value OP const`` with the strict semantics."""
    if const is MISSING:  # e.g. a constant `1 / 0`: a missing side makes every comparison false
        return lambda value: False
    if op == "==":
        if isinstance(const, str):
            return lambda value: isinstance(value, str) and value == const
        if is_number(const):
            return lambda value: is_number(value) and bool(value == const)
        return lambda value: strict_eq(value, const)
    if op == "!=":
        return lambda value: value is not MISSING and not strict_eq(value, const)
    order = _ORDER[op]
    if is_number(const):
        return lambda value: is_number(value) and bool(order(value, const))
    if isinstance(const, str):
        return lambda value: isinstance(value, str) and bool(order(value, const))
    return lambda value: False  # ordering against a bool, null or list is never true


def _not_in_keys(value: Any, keys: frozenset[tuple[str, Any] | None]) -> bool:
    return value is not MISSING and scalar_key(value) not in keys


def _arith(op: str, left: _Expr, right: _Expr) -> _Expr:
    if left.const is not _NOT_CONST and right.const is not _NOT_CONST:
        return _const(arithmetic(op, left.const, right.const))
    fa, fb = left.fn, right.fn
    return _Expr(lambda e, w: arithmetic(op, fa(e, w), fb(e, w)), windowed=left.windowed or right.windowed)


def compile_rule(text: str, *, name: str = "") -> CompiledRule:
    """Compiles rule text; raises DslSyntaxError or DslError, never anything else.

    ``name`` only feeds the default notification message.
    """
    if not isinstance(text, str):
        raise DslError("rule text must be a string")
    try:
        return _compile(text, name)
    except DslError:
        raise
    except Exception as exc:
        raise DslError(f"rule could not be compiled ({type(exc).__name__})") from exc


def _compile(text: str, name: str) -> CompiledRule:
    tree = parse(text)
    condition, actions_node = (tree_of(child) for child in tree.children)
    compiler = _Compiler(text)
    filters: list[Fn] = []
    rest: list[Fn] = []
    event_types: frozenset[str] | None = None
    for conjunct in conjuncts(condition):
        test, windowed = compiler.condition(conjunct)
        (rest if windowed else filters).append(test)
        required = types_required_by(conjunct)
        if required is not None:
            event_types = required if event_types is None else event_types & required
    actions, templates = compiler.actions(actions_node)
    return CompiledRule(
        source=text,
        name=name,
        event_types=event_types,
        actions=actions,
        templates=templates,
        filters=tuple(filters),
        rest=tuple(rest),
        plans=tuple(compiler.plans),
    )
