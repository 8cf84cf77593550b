"""Compiled rules at run time: ``CompiledRule``, its context and results, and ``RuleIndex``.

Windows (``count(5m [by f])``, ``sum(expr, 1h [by f])``):

* The rule's *filter* is its window-free top-level conjuncts (``a and (b and c)`` has the
  conjuncts a, b, c). An event that fails the filter is not recorded anywhere.
* An event that passes the filter is recorded into every window of the rule *first*, then the
  conjuncts containing windows are evaluated, so a window's aggregate includes the event itself:
  ``count(1m by ip) >= 5`` fires on the fifth event from one ip within a minute.
* A window aggregates the events of the same tenant and rule (and the same ``by`` value) whose
  recorded time is within the last ``duration`` seconds of ``ctx.now``. Recording is keyed by
  ``ctx.event_id``: re-evaluating the same event does not count it twice.
* A missing (or null, list, object) ``by`` value: the event is not recorded in that window and
  the window's value is missing, so its comparison is false. For ``sum`` the value expression
  must yield a number (not a bool); otherwise the event is not recorded and the value is missing.
* Windows cannot be nested (``sum(count(1m), 1h)`` is an error).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Generic, TypeVar

from rules.dsl.evaluator import MISSING, TemplatePart, group_label, is_number, render_template
from rules.dsl.windows import MemoryWindowStore, WindowStore

Event = Mapping[str, Any]
#: A compiled expression: (event, window values in rule order) -> value.
Fn = Callable[[Event, Sequence[Any]], Any]
NO_VALUES: Final[tuple[Any, ...]] = ()


# --- contexts and results -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvalContext:
    """What evaluating one event needs besides the event.

    ``store`` holds the windows (required only by rules with windows); ``tenant`` and ``rule``
    namespace the window keys; ``event_id`` makes recording idempotent (a retried evaluation of
    the same event is not counted twice); ``now`` is the event's time in seconds (float).
    """

    store: WindowStore | None = None
    tenant: str = ""
    rule: str = ""
    event_id: str = ""
    now: float = 0.0

    def for_rule(self, rule: str) -> EvalContext:
        return replace(self, rule=rule)


@dataclass(frozen=True, slots=True)
class RenderedAction:
    """An action of a matched rule with its message rendered for the event."""

    kind: str
    target: str
    message: str


@dataclass(frozen=True, slots=True)
class Match:
    """A rule matched an event.

    ``groups`` holds ``(field path, value label)`` for each distinct ``by`` field whose value
    was present, for per-group cooldowns; ``window_values`` the aggregate of each window in
    rule order (MISSING when a window could not be computed).
    """

    actions: tuple[RenderedAction, ...]
    groups: tuple[tuple[str, str], ...] = ()
    window_values: tuple[Any, ...] = ()

    @property
    def group_key(self) -> str:
        """``"ip=1.2.3.4&user_id=7"``, or ``""`` for a rule without ``by``."""
        return "&".join(f"{path}={label}" for path, label in self.groups)


# --- public specs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """``notify("kind:target"[, template])``: ``target`` names a channel of that kind (``#big-orders``,
    ``orders``, ``a@b.c``), resolved by the caller; ``template`` None means the default message."""

    kind: str
    target: str
    template: str | None = None


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One window of a rule. ``key`` is stable for the same rule text and names its state."""

    index: int
    kind: str  # "count" | "sum"
    seconds: int
    group: tuple[str, ...] | None
    value: str | None  # the sum's value expression, whitespace-normalised
    key: str

    @property
    def group_field(self) -> str | None:
        return ".".join(self.group) if self.group is not None else None


@dataclass(frozen=True, slots=True)
class WindowPlan:
    spec: WindowSpec
    group: Callable[[Event], Any] | None
    value: Fn | None


class CompiledRule:
    """A rule ready to evaluate events. Immutable; share it between threads freely.

    ``event_types`` is the set of event ``type`` values the rule can match (from a top-level
    conjunct ``type == "x"`` or ``type in ["x", "y"]``), or None when it may match any type.
    """

    __slots__ = ("_filters", "_plans", "_rest", "_templates", "actions", "event_types", "name", "source", "windows")

    def __init__(
        self,
        *,
        source: str,
        name: str,
        event_types: frozenset[str] | None,
        actions: tuple[Action, ...],
        templates: tuple[tuple[TemplatePart, ...] | None, ...],
        filters: tuple[Fn, ...],
        rest: tuple[Fn, ...],
        plans: tuple[WindowPlan, ...],
    ) -> None:
        self.source = source
        self.name = name
        self.event_types = event_types
        self.actions = actions
        self.windows: tuple[WindowSpec, ...] = tuple(plan.spec for plan in plans)
        self._templates = templates
        self._filters = filters
        self._rest = rest
        self._plans = plans

    def __repr__(self) -> str:
        return f"CompiledRule({self.source!r})"

    def evaluate(self, event: Event, ctx: EvalContext | None = None) -> Match | None:
        """The match for this event, or None. Records the event into the rule's windows when it
        passes the filter (see the module docstring); rules with windows need ``ctx.store``."""
        for test in self._filters:
            if not test(event, NO_VALUES):
                return None
        if not self._plans:
            return Match(self._render(event))
        if ctx is None or ctx.store is None or not ctx.event_id:
            raise ValueError("a rule with windows needs an EvalContext with a store and an event_id")
        values, groups = self._record(event, ctx)
        for test in self._rest:
            if not test(event, values):
                return None
        return Match(self._render(event), groups, values)

    def dry_run(self, event: Event) -> Match | None:
        """Evaluates against fresh, empty windows (for previews): windows see only this event."""
        return self.evaluate(event, EvalContext(store=MemoryWindowStore(), event_id="dry-run"))

    def _record(self, event: Event, ctx: EvalContext) -> tuple[tuple[Any, ...], tuple[tuple[str, str], ...]]:
        store = ctx.store
        assert store is not None  # checked by evaluate()
        values: list[Any] = []
        groups: dict[str, str] = {}
        for plan in self._plans:
            spec = plan.spec
            label = "_"
            if plan.group is not None:
                found = group_label(plan.group(event))
                if found is None:
                    values.append(MISSING)
                    continue
                label = found
                groups.setdefault(".".join(spec.group or ()), label)
            key = f"{ctx.tenant}:{ctx.rule}:{spec.key}:{label}"
            if plan.value is None:
                values.append(store.count(key, spec.seconds, ctx.now, ctx.event_id))
                continue
            amount = _amount(plan.value(event, NO_VALUES))
            if amount is None:
                values.append(MISSING)
                continue
            values.append(store.sum(key, spec.seconds, ctx.now, ctx.event_id, amount))
        return tuple(values), tuple(groups.items())

    def _render(self, event: Event) -> tuple[RenderedAction, ...]:
        return tuple(
            RenderedAction(
                action.kind,
                action.target,
                render_template(parts, event) if parts is not None else self._default_message(event),
            )
            for action, parts in zip(self.actions, self._templates, strict=True)
        )

    def _default_message(self, event: Event) -> str:
        event_type = event.get("type")
        what = f'a "{event_type}" event' if isinstance(event_type, str) else "an event"
        return f'Rule "{self.name}" matched {what}' if self.name else f"A rule matched {what}"


def _amount(value: Any) -> float | None:
    """A sum window's amount: a finite number (not a bool), else None (not recorded)."""
    if not is_number(value):
        return None
    try:
        amount = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return amount if math.isfinite(amount) else None


K = TypeVar("K")


class RuleIndex(Generic[K]):
    """Compiled rules grouped by the event types they can match, for O(1) candidate lookup.

    ``candidates(event)`` is one dict lookup on the event's ``type``: the rules restricted to
    that type merged with the type-agnostic rules, in the order they were given.
    """

    __slots__ = ("_any", "_by_type", "_size")

    def __init__(self, rules: Iterable[tuple[K, CompiledRule]]) -> None:
        entries = list(rules)
        self._size = len(entries)
        self._any: tuple[tuple[K, CompiledRule], ...] = tuple(e for e in entries if e[1].event_types is None)
        # Each type gets its own rules merged with the agnostic ones, in the order given.
        positions: dict[str, list[int]] = {}
        agnostic: list[int] = []
        for position, (_, rule) in enumerate(entries):
            if rule.event_types is None:
                agnostic.append(position)
            for event_type in rule.event_types or ():
                positions.setdefault(event_type, []).append(position)
        self._by_type: dict[str, tuple[tuple[K, CompiledRule], ...]] = {
            event_type: tuple(entries[p] for p in sorted(typed + agnostic)) for event_type, typed in positions.items()
        }

    def __len__(self) -> int:
        return self._size

    def candidates(self, event: Event) -> tuple[tuple[K, CompiledRule], ...]:
        """The (rule id, rule) pairs that may match this event."""
        event_type = event.get("type")
        if type(event_type) is not str:
            return self._any
        return self._by_type.get(event_type, self._any)

    def evaluate(self, event: Event, ctx: EvalContext | None = None) -> list[tuple[K, Match]]:
        """Evaluates every candidate; each rule's windows are keyed by ``str(rule id)``."""
        ctx = ctx or EvalContext()
        matches: list[tuple[K, Match]] = []
        for rule_id, rule in self.candidates(event):
            match = rule.evaluate(event, ctx.for_rule(str(rule_id)) if rule.windows else ctx)
            if match is not None:
                matches.append((rule_id, match))
        return matches
