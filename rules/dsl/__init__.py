"""The rule DSL (SPEC 4): plain Python, no Django.

    rule = compile_rule('when type == "order" and amount > 500 then notify("slack:#big-orders")')
    match = rule.evaluate({"type": "order", "amount": 900})
    condition = compile_condition('status == 200 and body.status == "UP"')   # monitors
    condition.failure({"status": 500})  # -> 'status (500) == 200'

Modules: ``grammar.lark`` and ``parser.py`` (syntax, errors, bounds), ``compiler.py`` (tree →
closures), ``evaluator.py`` (value semantics, regexes, templates), ``rule.py`` (the compiled
rule, window semantics, ``RuleIndex``), ``windows.py`` (window stores) and ``condition.py`` (a
bare condition, for monitors). The naive reference
interpreter the compiler is checked against is a test oracle: ``rules/tests/dsl_oracle.py``.
"""

from __future__ import annotations

from rules.dsl.compiler import compile_rule
from rules.dsl.condition import CompiledCondition, compile_condition
from rules.dsl.evaluator import MISSING, REGEX_ENGINE
from rules.dsl.parser import DslError, DslSyntaxError
from rules.dsl.rule import Action, CompiledRule, EvalContext, Match, RenderedAction, RuleIndex, WindowSpec
from rules.dsl.windows import MemoryWindowStore, RedisWindowStore, WindowStore

__all__ = [
    "MISSING",
    "REGEX_ENGINE",
    "Action",
    "CompiledCondition",
    "CompiledRule",
    "DslError",
    "DslSyntaxError",
    "EvalContext",
    "Match",
    "MemoryWindowStore",
    "RedisWindowStore",
    "RenderedAction",
    "RuleIndex",
    "WindowSpec",
    "WindowStore",
    "compile_condition",
    "compile_rule",
]
