"""Run-time semantics of compiled rules: values, comparisons, arithmetic, regexes, templates.

Everything here is plain Python fed by events (JSON-shaped mappings); nothing imports Django.

Value semantics (the naive interpreter in ``rules/tests/dsl_oracle.py`` re-implements them
independently as a test oracle, so a change here must be mirrored there):

* A field that is absent, or whose path crosses a non-mapping, is ``MISSING``. Any comparison
  with a ``MISSING`` side is false, including ``!=``, ``not in`` and ``== null`` (JSON ``null``
  present in the event is ``None``, which is not missing).
* Types are strict: ``bool`` is not a number (``true == 1`` is false); ints and floats compare
  numerically (``1 == 1.0``); lists and objects compare deeply with the same rules.
* ``==`` between values of different types is false; ``!=`` is its exact negation whenever both
  sides are present (``"a" != 3`` is true).
* ``> >= < <=`` hold only between two numbers or two strings (code point order); otherwise false.
* Arithmetic ``+ - * /`` is defined on numbers only; anything else, division by zero, overflow or
  a non-finite result yields ``MISSING``. ``/`` is true division.
* ``x in y``: membership when ``y`` is a list (strict equality), substring when both are strings.
  ``x not in y`` is true only when that test applies and fails: ``5 not in "abc"`` is false,
  because a number cannot be a substring. ``a contains b`` is ``b in a``.
* ``startswith`` / ``endswith`` need two strings. ``matches`` searches (not anchored: use
  ``^``/``$``) a string with a pattern given as a string literal.
* In a boolean position (``and``, ``or``, ``not``, the whole condition) a value is true only if it
  is the boolean ``true``. Logic is two-valued: ``not (amount > 5)`` is true when ``amount`` is
  missing, since the comparison is false; write ``amount <= 5`` to require the field.

Regexes run on RE2 (the ``google-re2`` package, a requirement): matching takes linear time in
the subject whatever the pattern, so a user's pattern cannot hang a worker; backreferences and
lookarounds, which RE2 does not support, are compile errors.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import re2

#: The engine user patterns run on, as benchmark reports name it.
REGEX_ENGINE: Final = "re2"
#: Deep equality stops (as "not equal") below this depth so hostile events cannot recurse far.
MAX_VALUE_DEPTH: Final = 32
#: Group values longer than this are replaced by a digest in window keys.
MAX_GROUP_CHARS: Final = 128


class _Missing:
    """The value of an absent field or an undefined arithmetic result."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

Event = Mapping[str, Any]
Getter = Callable[[Event], Any]


# --- values -------------------------------------------------------------------------------------


def is_number(value: object) -> bool:
    """int or float, but not bool (a JSON ``true`` is not the number 1)."""
    kind = type(value)
    if kind is int or kind is float:
        return True
    return kind is not bool and isinstance(value, int | float)


def strict_eq(a: Any, b: Any, depth: int = 0) -> bool:
    """Equality without Python's ``True == 1`` coercion; lists and mappings compare deeply."""
    if a is MISSING or b is MISSING or depth > MAX_VALUE_DEPTH:
        return False
    if is_number(a):
        return is_number(b) and bool(a == b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, str):
        return isinstance(b, str) and a == b
    if a is None:
        return b is None
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(strict_eq(x, y, depth + 1) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, Mapping):
        return (
            isinstance(b, Mapping)
            and len(a) == len(b)
            and all(key in b and strict_eq(value, b[key], depth + 1) for key, value in a.items())
        )
    return False


def orderable(a: Any, b: Any) -> bool:
    """Whether ``< <= > >=`` are defined between the two values."""
    if is_number(a):
        return is_number(b)
    return isinstance(a, str) and isinstance(b, str)


def scalar_key(value: Any) -> tuple[str, Any] | None:
    """A hashable key under which strictly-equal scalars collide (``1`` and ``1.0``, not ``true``)."""
    if is_number(value):
        return ("n", value)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z", None)
    return None


def membership(item: Any, container: Any) -> bool | None:
    """``item in container``: True/False when the test applies, None when it does not."""
    if item is MISSING or container is MISSING:
        return None
    if isinstance(container, list | tuple):
        return any(strict_eq(item, element) for element in container)
    if isinstance(container, str):
        return item in container if isinstance(item, str) else None
    return None


def arithmetic(op: str, a: Any, b: Any) -> Any:
    """``a op b`` on numbers; MISSING for non-numbers, division by zero, overflow or inf/nan."""
    if not (is_number(a) and is_number(b)):
        return MISSING
    try:
        if op == "+":
            result = a + b
        elif op == "-":
            result = a - b
        elif op == "*":
            result = a * b
        else:
            result = a / b
    except (ZeroDivisionError, OverflowError):
        return MISSING
    if type(result) is float and not math.isfinite(result):
        return MISSING
    return result


def negate(value: Any) -> Any:
    """Unary minus: numbers only."""
    return -value if is_number(value) else MISSING


def make_getter(path: tuple[str, ...]) -> Getter:
    """A fast nested lookup for a field path; MISSING when a step is absent or not a mapping."""
    if len(path) == 1:
        (key,) = path

        def get_one(event: Event) -> Any:
            return event.get(key, MISSING)

        return get_one

    def get_path(event: Event) -> Any:
        current: Any = event
        for key in path:
            if type(current) is not dict and not isinstance(current, Mapping):
                return MISSING
            current = current.get(key, MISSING)
            if current is MISSING:
                return MISSING
        return current

    return get_path


def group_label(value: Any) -> str | None:
    """How a `by` value appears in window keys and group keys; None when it cannot group.

    Strings stand for themselves, numbers and booleans are JSON-encoded (so ``"5"`` and ``5``
    share a group, which is accepted for readable keys); null, lists, objects and missing
    values do not group. Long values (and ones UTF-8 cannot encode) are replaced by a digest.
    """
    if isinstance(value, str):
        label = value
    elif is_number(value) or isinstance(value, bool):
        if type(value) is float and not math.isfinite(value):
            return None
        label = json.dumps(value)
    else:
        return None
    try:
        label.encode("utf-8")  # lone surrogates (valid in JSON) cannot go into a Redis key as text
    except UnicodeEncodeError:
        return _digest(label)
    return _digest(label) if len(label) > MAX_GROUP_CHARS else label


def _digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode("utf-8", "surrogatepass")).hexdigest()


# --- regexes ------------------------------------------------------------------------------------


class RegexRejected(ValueError):
    """A pattern that RE2 does not compile (a syntax error, a backreference, a lookaround)."""


@dataclass(frozen=True, slots=True)
class SafeRegex:
    """A user pattern compiled on RE2, whose ``search`` takes time linear in the subject."""

    pattern: str
    compiled: Any

    def search(self, subject: str) -> bool:
        return self.compiled.search(subject) is not None


def compile_pattern(pattern: str) -> SafeRegex:
    """Compiles a user pattern on RE2; raises RegexRejected with RE2's reason."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print every rejected user pattern to stderr
    try:
        return SafeRegex(pattern, re2.compile(pattern, options))
    except Exception as exc:
        raise RegexRejected(f"invalid regular expression: {_error_text(exc)}") from exc


def _error_text(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else str(exc)
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


# --- templates ----------------------------------------------------------------------------------

_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}")

TemplatePart = str | tuple[str, ...]


def field_path(names: Sequence[str]) -> tuple[str, ...]:
    """``event.a.b`` and ``a.b`` both name ``("a", "b")``; a lone ``event`` is the field "event"."""
    if len(names) > 1 and names[0] == "event":
        return tuple(names[1:])
    return tuple(names)


def parse_template(template: str) -> tuple[TemplatePart, ...]:
    """Splits a message template into literal text and field paths (``{{``/``}}`` are braces).

    Only ``{field}`` and ``{event.field.sub}`` are substitutions: no format specs, no
    attribute or index access, so a template cannot reach anything but the event's data.
    """
    parts: list[TemplatePart] = []
    literal: list[str] = []
    position = 0
    for token in _TEMPLATE_TOKEN.finditer(template):
        literal.append(template[position : token.start()])
        position = token.end()
        text = token.group(0)
        if text in ("{{", "}}"):
            literal.append(text[0])
            continue
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(field_path(token.group(1).split(".")))
    literal.append(template[position:])
    if "".join(literal):
        parts.append("".join(literal))
    return tuple(parts)


def render_template(parts: Sequence[TemplatePart], event: Event) -> str:
    """Substitutes the event's values (``str()``); a missing field renders as ``""``."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = make_getter(part)(event)
        if value is MISSING:
            continue
        try:
            out.append(str(value))
        except (RecursionError, ValueError):  # absurdly nested or huge values render as nothing
            continue
    return "".join(out)
