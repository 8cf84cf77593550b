"""Parsing for the rule DSL: the LALR parser, syntax-error reporting, bounds and literals.

Shared by the compiler and the naive interpreter (``rules/tests/dsl_oracle.py``), so both
accept exactly the same texts and read literals the same way. ``parse`` never recurses over the
tree (the depth check is iterative), so hostile input cannot raise RecursionError here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, TypedDict

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from rules.dsl.evaluator import field_path

GRAMMAR_PATH: Final = Path(__file__).with_name("grammar.lark")

MAX_TEXT_CHARS: Final = 10_000
MAX_NESTING: Final = 32
#: Backstop on raw tree depth (each nesting level adds at most ~8 tree levels).
MAX_TREE_DEPTH: Final = 400
MAX_LIST_ITEMS: Final = 256
MIN_WINDOW_SECONDS: Final = 1
MAX_WINDOW_SECONDS: Final = 7 * 86_400
MAX_NUMBER_CHARS: Final = 40
DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


class DslError(Exception):
    """A rule that cannot be compiled; ``line``/``column`` are 1-based."""

    def __init__(self, message: str, *, line: int = 1, column: int = 1, expected: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.expected: list[str] = list(expected)

    def __str__(self) -> str:
        return f"{self.message} (line {self.line}, column {self.column})"

    def as_dict(self) -> dict[str, Any]:
        """The error's fields for an API response's ``details``."""
        return {"message": self.message, "line": self.line, "column": self.column, "expected": self.expected}


class DslSyntaxError(DslError):
    """Text that does not follow the grammar; ``expected`` lists what could have come next."""


# --- parsing ------------------------------------------------------------------------------------


@functools.cache
def _parser() -> Lark:
    # Built once per process (about 50 ms) and reused: Lark parsers are safe to share.
    return Lark(
        GRAMMAR_PATH.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="basic",
        # "start" is a rule (`when ... then ...`), "condition" a bare expression (monitors).
        start=["start", "condition"],
        propagate_positions=True,
        maybe_placeholders=True,
    )


_READABLE: Final = {
    "NAME": "field name",
    "NUMBER": "number",
    "STRING": "string",
    "DURATION": "duration (e.g. 5m)",
    "$END": "end of input",
}


def _readable(terminal: str) -> str:
    if terminal in _READABLE:
        return _READABLE[terminal]
    try:
        pattern = _parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal.lower()
    return f'"{pattern.value}"' if isinstance(pattern, PatternStr) else terminal.lower()


_TOKEN_NOUNS: Final = {"NAME": "name", "NUMBER": "number", "STRING": "string", "DURATION": "duration"}


def _parser_accepts(exc: UnexpectedInput) -> set[str] | None:
    # The basic lexer reports every terminal as allowed; the parser's state knows better.
    interactive = getattr(exc, "interactive_parser", None)
    if interactive is None:
        return None
    try:
        return set(interactive.accepts())
    except Exception:  # noqa: BLE001 - a worse "expected" list is fine, an escape is not
        return None


def _expected(names: Iterable[str] | None) -> list[str]:
    return sorted({_readable(name) for name in names or () if not name.startswith("__")})


def _end_position(text: str) -> tuple[int, int]:
    line = text.count("\n") + 1
    return line, len(text) - (text.rfind("\n") + 1) + 1


def _position_of(text: str, offset: int) -> tuple[int, int]:
    return _end_position(text[:offset])


def _syntax_error(text: str, exc: UnexpectedInput) -> DslSyntaxError:
    line, column = getattr(exc, "line", -1), getattr(exc, "column", -1)
    if isinstance(exc, UnexpectedToken):
        expected = _expected(getattr(exc, "accepts", None) or exc.expected)
        token = exc.token
        if token.type == "$END":
            line, column = _end_position(text)
            message = "unexpected end of input"
        elif token.type in _TOKEN_NOUNS:
            message = f"unexpected {_TOKEN_NOUNS[token.type]} {token.value!r}"
        else:
            message = f'unexpected "{token.value}"'
    elif isinstance(exc, UnexpectedCharacters):
        expected = _expected(_parser_accepts(exc) or exc.allowed)
        message = f"unexpected character {exc.char!r}"
    else:
        expected = _expected(getattr(exc, "expected", None))
        line, column = _end_position(text)
        message = "unexpected end of input" if isinstance(exc, UnexpectedEOF) else "syntax error"
    if not isinstance(line, int) or not isinstance(column, int) or line < 1 or column < 1:
        line, column = _end_position(text)
    if expected:
        message += "; expected " + ", ".join(expected)
    return DslSyntaxError(message, line=line, column=column, expected=expected)


_NESTING_NODES: Final = frozenset({"group", "not_", "neg", "list", "window_count", "window_sum"})


def parse(text: str, *, start: str = "start") -> Tree[Token]:
    """The checked parse tree of a rule (``start="start"``) or of a bare condition
    (``start="condition"``); raises DslSyntaxError or DslError."""
    if len(text) > MAX_TEXT_CHARS:
        line, column = _position_of(text, MAX_TEXT_CHARS)
        what = "condition" if start == "condition" else "rule"
        raise DslError(f"{what} is longer than {MAX_TEXT_CHARS} characters", line=line, column=column)
    try:
        tree = _parser().parse(text, start=start)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    _check_depth(tree)
    return tree


def _check_depth(tree: Tree[Token]) -> None:
    # Iterative on purpose: this runs before anything recursive touches the tree.
    pending: list[tuple[Tree[Token], int, int]] = [(tree, 0, 1)]
    while pending:
        node, nesting, depth = pending.pop()
        if node.data in _NESTING_NODES:
            nesting += 1
        if nesting > MAX_NESTING or depth > MAX_TREE_DEPTH:
            raise DslError(f"rule is nested more than {MAX_NESTING} levels deep", **where(node))
        pending.extend((child, nesting, depth + 1) for child in node.children if isinstance(child, Tree))


def canonical_source(text: str) -> str:
    """A fragment's tokens joined by single spaces: ``amount*2`` and ``amount * 2`` are one text."""
    return " ".join(str(token) for token in _parser().lex(text))


class Position(TypedDict):
    line: int
    column: int


def where(node: Tree[Token] | Token | None) -> Position:
    """Where a node starts (1-based), for DslError(..., **where(node))."""
    if isinstance(node, Token):
        return {"line": node.line or 1, "column": node.column or 1}
    if isinstance(node, Tree) and not node.meta.empty:
        return {"line": node.meta.line, "column": node.meta.column}
    return {"line": 1, "column": 1}


# --- literals (shared with the interpreter) -----------------------------------------------------

_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def decode_string(token: Token) -> str:
    """A string literal's value. Known escapes (``\\n \\t \\r \\0 \\\\ \\" \\' \\uXXXX``) are decoded;
    any other backslash is kept, so ``"\\d+"`` reaches a regex as ``\\d+``."""

    def unescape(found: re.Match[str]) -> str:
        code = found.group(1)
        if len(code) == 5:
            char = chr(int(code[1:], 16))
            if 0xD800 <= ord(char) <= 0xDFFF:
                raise DslError("\\u escapes of surrogates are not allowed", **where(token))
            return char
        return _SIMPLE_ESCAPES.get(code, "\\" + code)

    return _ESCAPE.sub(unescape, str(token)[1:-1])


def decode_number(token: Token, *, negative: bool = False) -> int | float:
    """A number literal's value (ints stay ints); rejects absurdly long or infinite numbers."""
    text = str(token)
    if len(text) > MAX_NUMBER_CHARS:
        raise DslError(f"number literal is longer than {MAX_NUMBER_CHARS} characters", **where(token))
    value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
    if value == float("inf"):
        raise DslError("number literal is too large", **where(token))
    return -value if negative else value


def decode_duration(token: Token) -> int:
    """Seconds of a ``5m``-style duration, within the window bounds."""
    text = str(token)
    digits, unit = text[:-1], text[-1]
    seconds = int(digits) * DURATION_UNITS[unit] if len(digits) <= 9 else MAX_WINDOW_SECONDS + 1
    if seconds < MIN_WINDOW_SECONDS:
        raise DslError("a window must last at least 1s", **where(token))
    if seconds > MAX_WINDOW_SECONDS:
        raise DslError("a window cannot be longer than 7d", **where(token))
    return seconds


def literal_value(node: Tree[Token]) -> Any:
    """The value of a literal node (number, string, true, false, null, neg_number)."""
    kind = node.data
    if kind == "number":
        return decode_number(token_of(node.children[0]))
    if kind == "neg_number":
        return decode_number(token_of(node.children[1]), negative=True)
    if kind == "string":
        return decode_string(token_of(node.children[0]))
    return {"true": True, "false": False, "null": None}[str(kind)]


def list_items(node: Tree[Token]) -> tuple[Any, ...]:
    """The values of a list literal node, bounded in size."""
    items = [child for child in node.children if child is not None]
    if len(items) > MAX_LIST_ITEMS:
        raise DslError(f"a list literal cannot have more than {MAX_LIST_ITEMS} items", **where(node))
    return tuple(literal_value(tree_of(child)) for child in items)


def field_of(node: Tree[Token]) -> tuple[str, ...]:
    return field_path([str(child) for child in node.children])


def token_of(child: Tree[Token] | Token | None) -> Token:
    assert isinstance(child, Token)
    return child


def tree_of(child: Tree[Token] | Token | None) -> Tree[Token]:
    assert isinstance(child, Tree)
    return child


def unwrap_groups(node: Tree[Token]) -> Tree[Token]:
    while node.data == "group":
        node = tree_of(node.children[0])
    return node


def conjuncts(condition: Tree[Token]) -> list[Tree[Token]]:
    """Top-level conjuncts in order, looking through parentheses: ``a and (b and c)`` → a, b, c."""
    found: list[Tree[Token]] = []
    pending = [condition]
    while pending:
        node = unwrap_groups(pending.pop())
        if node.data == "and_expr":
            pending.extend(reversed([tree_of(child) for child in node.children]))
        else:
            found.append(node)
    return found


def types_required_by(node: Tree[Token]) -> frozenset[str] | None:
    """The event types a conjunct allows, when it is ``type == "x"`` or ``type in [...]``."""
    if node.data not in ("compare", "in_"):
        return None
    if node.data == "compare":
        left, op, right = node.children
        if str(op) != "==":
            return None
        sides = [unwrap_groups(tree_of(left)), unwrap_groups(tree_of(right))]
        if sides[0].data != "field":
            sides.reverse()
        field, other = sides
        if field.data == "field" and field_of(field) == ("type",) and other.data == "string":
            return frozenset({literal_value(other)})
        return None
    field, other = (unwrap_groups(tree_of(child)) for child in node.children)
    if field.data == "field" and field_of(field) == ("type",) and other.data == "list":
        return frozenset(item for item in list_items(other) if isinstance(item, str))
    return None
