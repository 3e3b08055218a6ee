"""References to step outputs and workflow inputs, interpolation, and conditions.

References (seed 001, "Graph Orchestration"):

* ``${node}``          the raw text output of step ``node`` (stripped);
* ``${node.field}``    a field of the step's JSON output (``${node.a.b}``, ``${node.items.0}``);
* ``${inputs.name}``   a workflow input (``/run deploy service=api``);
* ``${a|b}``           the first of ``a``, ``b`` that has a value (``${refine|generate}``:
                       the refined answer once there is one, else the first draft).

A step's output is JSON when it parses as JSON (an http step's body after its
summary line counts). Node ids may contain dots (inlined workflows: ``deploy.check``);
the longest prefix of the path that names a node wins.

Conditions are evaluated by `simpleeval <https://github.com/danthedeckie/simpleeval>`_,
never ``eval``: each reference becomes a variable bound to its value (so a value can
never change the expression), the expression is parsed once and cached, and only
comparisons, boolean and arithmetic operators, literals and a few pure functions
(``int float str len abs min max round lower upper``) are available. ``true``,
``false`` and ``null`` are accepted as in JSON. A condition must produce a boolean.
A missing field, a type error (``"8" < 8``) or a non-boolean result raises
:class:`ConditionError` naming the node, the expression and the values.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from simpleeval import SimpleEval

from engine.errors import EngineError

REF = re.compile(r"\$\{\s*([A-Za-z0-9_][\w\-]*(?:\.[\w\-]+)*(?:\s*\|\s*[A-Za-z0-9_][\w\-]*(?:\.[\w\-]+)*)*)\s*\}")
"""``${path}`` or ``${path|path…}``; ``${VAR:-default}`` (environment expansion in config values) does not match."""


class ReferenceMissing(EngineError, LookupError):
    """A ``${…}`` reference has no value (unknown node, no output yet, missing field)."""


class ConditionError(EngineError):
    """A condition could not be evaluated to true or false.

    Attributes:
        node: the node whose edge or ``when`` it is.
        expression: the condition as written.
        values: each reference of the expression and the value it had (or ``<missing>``).
        reason: what went wrong.
    """

    def __init__(self, node: str, expression: str, values: Mapping[str, Any], reason: str) -> None:
        self.node = node
        self.expression = expression
        self.values = dict(values)
        self.reason = reason
        shown = ", ".join(f"{k} = {_show(v)}" for k, v in self.values.items()) or "no references"
        super().__init__(f"condition of '{node}' failed: {expression} — {reason} ({shown})")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


def _show(v: Any) -> str:
    if v is MISSING:
        return "<missing>"
    text = json.dumps(v) if not isinstance(v, str) else json.dumps(v)
    return text if len(text) <= 80 else text[:77] + "…"


def references(text: str) -> list[str]:
    """Every reference path in ``text`` (alternatives split): ``${a.x|b}`` → ``["a.x", "b"]``."""
    out: list[str] = []
    for m in REF.finditer(text):
        out.extend(p.strip() for p in m.group(1).split("|"))
    return out


def parse_output(text: str) -> Any:
    """The JSON value of a step's output, or ``MISSING`` when it is not JSON.

    Tries the whole text, then (http steps) the text after the first line, then the
    outermost ``{…}`` of the text (an LLM that wrapped its JSON in prose or a fence).
    """
    t = text.strip()
    if not t:
        return MISSING
    for cand in (t, t.partition("\n")[2].strip()):
        if cand[:1] in "{[" or cand[:1].isdigit() or cand in ("true", "false", "null") or cand[:1] == '"':
            try:
                return json.loads(cand)
            except ValueError:
                pass
    i, j = t.find("{"), t.rfind("}")
    if 0 <= i < j:
        try:
            return json.loads(t[i : j + 1])
        except ValueError:
            pass
    return MISSING


class Scope:
    """What references resolve against during one run.

    Args:
        node_ids: every node id of the graph (to split ``a.b.c`` into node and field).
        output: node id → its latest raw output, or ``None`` when it has none
            (not run yet, skipped, failed without output).
        inputs: the run's workflow input values.
    """

    def __init__(self, node_ids: Iterable[str], output: Callable[[str], str | None], inputs: Mapping[str, Any]) -> None:
        self.node_ids = frozenset(node_ids)
        self.output = output
        self.inputs = inputs
        self._json: dict[tuple[str, str], Any] = {}

    def split(self, path: str) -> tuple[str, list[str]]:
        """``"a.b.c"`` → (node id, field path); raises :class:`ReferenceMissing` for an unknown node."""
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            head = ".".join(parts[:cut])
            if head in self.node_ids or (cut == 1 and head == "inputs"):
                return head, parts[cut:]
        raise ReferenceMissing(f"${{{path}}}: no step or input called '{parts[0]}'")

    def value(self, path: str) -> Any:
        """The value of one reference path (alternatives ``a|b`` allowed).

        Raises:
            ReferenceMissing: unknown node or input, a step with no output, a missing field.
        """
        if "|" in path:
            errors = []
            for alt in path.split("|"):
                try:
                    return self.value(alt.strip())
                except ReferenceMissing as e:
                    errors.append(str(e))
            raise ReferenceMissing("; ".join(errors))
        head, fields = self.split(path)
        if head == "inputs":
            if not fields:
                return dict(self.inputs)
            if fields[0] not in self.inputs:
                raise ReferenceMissing(f"${{{path}}}: the workflow has no input '{fields[0]}'")
            val: Any = self.inputs[fields[0]]
            return _descend(val, fields[1:], path)
        raw = self.output(head)
        if raw is None:
            raise ReferenceMissing(f"${{{path}}}: step '{head}' has no output (it has not run, or was skipped)")
        if not fields:
            return raw.strip()
        key = (head, raw)
        val = self._json.get(key, None) if key in self._json else None
        if key not in self._json:
            val = self._json[key] = parse_output(raw)
        if val is MISSING:
            raise ReferenceMissing(f"${{{path}}}: the output of '{head}' is not JSON ({_show(raw.strip())})")
        return _descend(val, fields, path)


def _descend(val: Any, fields: list[str], path: str) -> Any:
    for f in fields:
        if isinstance(val, dict) and f in val:
            val = val[f]
        elif isinstance(val, list) and f.isdigit() and int(f) < len(val):
            val = val[int(f)]
        else:
            have = ", ".join(map(str, val)) if isinstance(val, dict) else type(val).__name__
            raise ReferenceMissing(f"${{{path}}}: no field '{f}' (it has: {have or 'nothing'})")
    return val


def render(value: Any) -> str:
    """How a value is written into text: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def interpolate(template: str, scope: Scope) -> str:
    """Replace every ``${…}`` reference in ``template``; raises :class:`ReferenceMissing`."""
    if "${" not in template:
        return template
    return REF.sub(lambda m: render(scope.value(m.group(1))), template)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "len": len,
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
}
_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


class Condition:
    """A compiled condition: its references and its parsed expression.

    Raises:
        ValueError: (from the constructor) the expression does not parse, or names
            something other than a ``${…}`` reference, a literal or an allowed function.
    """

    __slots__ = ("expression", "refs", "_tree", "_names", "_ev")

    def __init__(self, expression: str) -> None:
        self.expression = expression.strip()
        refs: list[str] = []

        def sub(m: re.Match[str]) -> str:
            refs.append(m.group(1).replace(" ", ""))
            return f" _ref{len(refs) - 1} "

        body = REF.sub(sub, self.expression)
        self.refs = tuple(refs)
        try:
            self._ev = SimpleEval(functions=_FUNCTIONS)
            self._tree = self._ev.parse(body)
        except SyntaxError as e:
            raise ValueError(f"condition {self.expression!r} does not parse: {e.msg}") from None
        self._names = {n.id for n in ast.walk(self._tree) if isinstance(n, ast.Name)} - set(_NAMES) - {f"_ref{i}" for i in range(len(refs))} - set(_FUNCTIONS)
        if self._names:
            bad = sorted(self._names)[0]
            raise ValueError(f"condition {self.expression!r}: unknown name '{bad}' (write step outputs as ${{step.field}})")

    def evaluate(self, scope: Scope, node: str) -> bool:
        """True or false; raises :class:`ConditionError` (missing value, type error, non-boolean)."""
        values: dict[str, Any] = {}
        names = dict(_NAMES)
        for i, ref in enumerate(self.refs):
            try:
                v = scope.value(ref)
            except ReferenceMissing as e:
                values[ref] = MISSING
                for later in self.refs[i + 1 :]:
                    values.setdefault(later, _peek(scope, later))
                raise ConditionError(node, self.expression, values, str(e)) from None
            values[ref] = v
            names[f"_ref{i}"] = v
        try:
            self._ev.names = names
            result = self._ev.eval(self.expression, previously_parsed=self._tree)
        except Exception as e:  # simpleeval's own errors, TypeError, ZeroDivisionError…
            raise ConditionError(node, self.expression, values, f"{type(e).__name__}: {e}") from None
        if not isinstance(result, bool):
            raise ConditionError(node, self.expression, values, f"gives {_show(result)}, not true or false")
        return result


def _peek(scope: Scope, ref: str) -> Any:
    try:
        return scope.value(ref)
    except ReferenceMissing:
        return MISSING


_CACHE: dict[str, Condition] = {}


def condition(expression: str) -> Condition:
    """The compiled :class:`Condition` for ``expression`` (cached); raises ``ValueError``."""
    got = _CACHE.get(expression)
    if got is None:
        got = Condition(expression)
        if len(_CACHE) > 4096:
            _CACHE.clear()
        _CACHE[expression] = got
    return got


def explain(expression: str, scope: Scope) -> str:
    """``${classify.type} == "factual" (classify.type = "opinion")``: a condition with its values, for skip reasons."""
    try:
        cond = condition(expression)
    except ValueError:
        return expression
    shown = ", ".join(f"{r} = {_show(_peek(scope, r))}" for r in cond.refs)
    return f"{expression} ({shown})" if shown else expression


__all__ = [
    "Condition",
    "ConditionError",
    "MISSING",
    "REF",
    "ReferenceMissing",
    "Scope",
    "condition",
    "explain",
    "interpolate",
    "parse_output",
    "references",
    "render",
]
