"""Conditions: a rule's ``when`` part on its own, for monitors (SPEC 5, issue 11).

    condition = compile_condition('status == 200 and response_time < 300 and body.status == "UP"')
    condition.failure({"status": 500, "response_time": 12.5, "body": {"status": "UP"}})
    # -> 'status (500) == 200'

The text is the expression a rule puts between ``when`` and ``then``, with the same value
semantics (``evaluator.py``: a missing field makes a comparison false, types are strict) and the
same bounds (10,000 characters, 32 levels of nesting, regexes and lists as in ``compiler.py``).
Windows (``count``/``sum``) and actions (``then notify(...)``) are refused with a DslError: a
check's verdict depends on that check alone and says nothing by itself.

A failure is reported the way Gatus reports a failed condition: the first top-level conjunct
that does not hold, as the user wrote it, with the actual value after each field it reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any, Final

from lark import Token, Tree
from lark.exceptions import LexError

from rules.dsl.compiler import _Compiler
from rules.dsl.evaluator import MISSING, Getter, make_getter
from rules.dsl.parser import (
    DslError,
    DslSyntaxError,
    _parser,
    conjuncts,
    field_of,
    parse,
    where,
)
from rules.dsl.rule import NO_VALUES, Fn

__all__ = ["CompiledCondition", "compile_condition"]

#: A rendered value longer than this is cut (a body can be a megabyte of text).
MAX_RENDERED_VALUE_CHARS: Final = 80
MISSING_TEXT: Final = "missing"


class _ConditionCompiler(_Compiler):
    """The rule compiler without windows: a condition judges one check, not a stream."""

    def _node_window_count(self, node: Tree[Token]) -> Any:
        raise _no_windows(node)

    def _node_window_sum(self, node: Tree[Token]) -> Any:
        raise _no_windows(node)


def _no_windows(node: Tree[Token]) -> DslError:
    name = str(node.children[0])
    return DslError(
        f"{name}(...) is a window over many events; a monitor's condition judges one check only",
        **where(node),
    )


class _Conjunct:
    __slots__ = ("fields", "pieces", "test")

    def __init__(self, test: Fn, pieces: tuple[str | tuple[str, Getter], ...]) -> None:
        self.test = test
        # Literal source text, or (text after which the value goes, getter) for a field reference.
        self.pieces = pieces

    def render(self, values: Mapping[str, Any]) -> str:
        out: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
            else:
                text, get = piece
                out.append(f"{text} ({render_value(get(values))})")
        return "".join(out)


class CompiledCondition:
    """A compiled condition. Immutable; share it between threads and tasks freely.

    ``source`` is the text as given; ``fields`` the top-level names it reads (``body.status``
    reads ``body``), so a caller can skip producing values nobody reads (a monitor reads the
    response body only when ``"body"`` is in it).
    """

    __slots__ = ("_conjuncts", "fields", "source")

    def __init__(self, source: str, fields: frozenset[str], parts: tuple[_Conjunct, ...]) -> None:
        self.source = source
        self.fields = fields
        self._conjuncts = parts

    def __repr__(self) -> str:
        return f"CompiledCondition({self.source!r})"

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether every top-level conjunct holds for these values."""
        return self.failure(values) is None

    def failure(self, values: Mapping[str, Any]) -> str | None:
        """None when every top-level conjunct holds; else the first one that does not, rendered
        with the actual value of each field it reads: ``'status (500) == 200'``,
        ``'body.status ("DOWN") == "UP"'``, ``'response_time (812.4) < 300'``; an absent value
        renders as ``(missing)``. Values are JSON-like (strings quoted), cut past 80 characters.
        Never raises for JSON-shaped values."""
        for part in self._conjuncts:
            if not part.test(values, NO_VALUES):
                return part.render(values)
        return None


def render_value(value: Any) -> str:
    """How a field's actual value appears in a failure: JSON text, ``missing`` when absent."""
    if value is MISSING:
        return MISSING_TEXT
    if type(value) is float:
        text = repr(value) if math.isfinite(value) else str(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        except (TypeError, ValueError, RecursionError):
            text = repr(value)
    if len(text) > MAX_RENDERED_VALUE_CHARS:
        text = text[: MAX_RENDERED_VALUE_CHARS - 1] + "…"
    return text


def compile_condition(text: str, *, names: Collection[str] | None = None) -> CompiledCondition:
    """Compiles a condition; raises DslSyntaxError or DslError (with ``line``/``column`` in the
    user's text, 1-based), never anything else.

    Grammar and value semantics are a rule's ``when`` part (``rules/dsl/grammar.lark``,
    ``evaluator.py``); windows and actions are refused; bounds are ``compile_rule``'s.

    Every top-level conjunct must be a test (a comparison, a membership or text test, ``not``,
    ``or`` of tests, ``true``/``false``): a bare ``status`` or ``response_time + 1`` is refused
    rather than read as truthiness. With ``names``, a field whose first name is not one of them
    is refused too (a typo such as ``respone_time`` would otherwise be a condition that never
    holds: the field is always missing).
    """
    if not isinstance(text, str):
        raise DslError("condition text must be a string")
    if not text.strip():
        line, column = _end(text)
        raise DslError("condition is empty", line=line, column=column)
    try:
        return _compile(text, names)
    except DslSyntaxError as exc:
        raise _clearer(text, exc) from None
    except DslError:
        raise
    except Exception as exc:
        raise DslError(f"condition could not be compiled ({type(exc).__name__})") from exc


def _end(text: str) -> tuple[int, int]:
    return text.count("\n") + 1, len(text) - (text.rfind("\n") + 1) + 1


def _clearer(text: str, exc: DslSyntaxError) -> DslSyntaxError:
    """Rewords the two mistakes a rule author makes in a condition: ``when`` and ``then``."""
    word = _word_at(text, exc.line, exc.column)
    if word == "then":
        return DslSyntaxError(
            "a monitor's condition has no actions: write only the test (drop `then ...`)",
            line=exc.line,
            column=exc.column,
        )
    if word == "when":
        return DslSyntaxError(
            "a monitor's condition is written without `when`: write only the test",
            line=exc.line,
            column=exc.column,
        )
    return exc


def _word_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return ""
    rest = lines[line - 1][column - 1 :]
    return rest[:4] if rest[:4] in ("then", "when") and not rest[4:5].isalnum() and rest[4:5] != "_" else ""


# Nodes that yield true or false by themselves; `or_expr`, `and_expr`, `not_` and `group` are
# tests when what they combine is.
_TESTS: Final = frozenset(
    {"compare", "in_", "not_in", "contains", "startswith", "endswith", "matches", "true", "false"}
)
_COMBINATIONS: Final = frozenset({"or_expr", "and_expr", "not_", "group"})


def _compile(text: str, names: Collection[str] | None) -> CompiledCondition:
    tree = parse(text, start="condition")
    expression = tree.children[0]
    assert isinstance(expression, Tree)
    compiler = _ConditionCompiler(text)
    parts: list[_Conjunct] = []
    fields: set[str] = set()
    for conjunct in conjuncts(expression):
        _check_is_test(text, conjunct)
        references = _field_nodes(conjunct)
        if names is not None:
            _check_names(references, names)
        test, _ = compiler.condition(conjunct)
        fields.update(field_of(node)[0] for node in references)
        parts.append(_Conjunct(test, _pieces(text, conjunct, references)))
    return CompiledCondition(text, frozenset(fields), tuple(parts))


def _check_is_test(text: str, node: Tree[Token]) -> None:
    """DslError at the first part of `node` that is a value rather than a test (iterative)."""
    pending = [node]
    while pending:
        current = pending.pop()
        if current.data in _COMBINATIONS:
            pending.extend(child for child in current.children if isinstance(child, Tree))
        elif current.data not in _TESTS:
            source = " ".join(text[current.meta.start_pos : current.meta.end_pos].split())[:60]
            raise DslError(
                f"`{source}` is a value, not a test: compare it (e.g. `status == 200`, `body.ok == true`)",
                **where(current),
            )


def _check_names(references: list[Tree[Token]], names: Collection[str]) -> None:
    for node in references:
        name = field_of(node)[0]
        if name not in names:
            raise DslError(
                f"unknown name `{name}`: a condition reads {', '.join(f'`{n}`' for n in names)}", **where(node)
            )


def _field_nodes(conjunct: Tree[Token]) -> list[Tree[Token]]:
    """The conjunct's field references in source order (iterative: depth is bounded already)."""
    found: list[Tree[Token]] = []
    pending = [conjunct]
    while pending:
        node = pending.pop()
        if node.data == "field":
            found.append(node)
            continue
        pending.extend(reversed([child for child in node.children if isinstance(child, Tree)]))
    return found


def _pieces(text: str, conjunct: Tree[Token], references: list[Tree[Token]]) -> tuple[str | tuple[str, Getter], ...]:
    """The conjunct's source split around its field references, whitespace runs made one space
    (outside string literals) so a condition written on several lines renders on one."""
    start, end = conjunct.meta.start_pos, conjunct.meta.end_pos
    ends = {node.meta.end_pos: make_getter(field_of(node)) for node in references}
    pieces: list[str | tuple[str, Getter]] = []
    buffer: list[str] = []
    position = start
    try:
        tokens = list(_parser().lex(text[start:end]))
    except LexError:  # pragma: no cover - the text was parsed already
        return (text[start:end],)
    for token in tokens:
        token_start = start + (token.start_pos or 0)
        token_end = start + (token.end_pos or 0)
        if token_start > position:
            buffer.append(" ")
        buffer.append(str(token))
        position = token_end
        if token_end in ends:
            pieces.append("".join(buffer))
            buffer = []
            pieces.append(("", ends.pop(token_end)))
    if buffer:
        pieces.append("".join(buffer))
    # Fold each field's preceding text into its tuple so rendering is one pass.
    merged: list[str | tuple[str, Getter]] = []
    for piece in pieces:
        if isinstance(piece, tuple) and merged and isinstance(merged[-1], str):
            merged[-1] = (merged[-1], piece[1])
        else:
            merged.append(piece)
    return tuple(merged)
