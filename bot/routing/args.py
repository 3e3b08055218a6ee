"""Route arguments: validate what a message gave, and bind it into a workflow's argv.

Arguments come from a rule pattern's named groups (``^restart (the )?(?P<service>\\w+)``)
or from the slots the LLM classifier fills. Before anything runs they are checked
against the route's declared parameters (:class:`~bot.routing.types.Param`, from
``params:`` in routes.yaml, and the workflow's own declared inputs when it has any):
unknown names are dropped, values must match the declared choices or pattern (and
always :data:`~bot.routing.types.SAFE_VALUE`'s rules: no leading ``-``, no whitespace
or control characters), and a missing required one is asked for.

Binding (:func:`bind_arguments`) replaces ``{name}`` placeholders inside single
**argv elements** of shell steps (and in ``echo`` text and step labels). A value is
never joined into a command string and can never become more than one argv element,
so chat text cannot inject a command or an option.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bot.routing.types import SAFE_VALUE, Param

_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")  # not ${…}: engine references (issue 17)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\s]")


@dataclasses.dataclass(frozen=True, slots=True)
class CheckedArgs:
    """Result of :func:`check_arguments`.

    Attributes:
        values: valid arguments (declared names only, defaults filled in).
        missing: required parameters with no (valid) value, in declaration order.
        problems: one line per rejected value (``service='x y': not one of api, web``).
    """

    values: Mapping[str, str]
    missing: tuple[str, ...]
    problems: tuple[str, ...]


def check_arguments(args: Mapping[str, str], params: Sequence[Param]) -> CheckedArgs:
    """Validate ``args`` against ``params`` (see the module docstring). Never raises."""
    values: dict[str, str] = {}
    missing: list[str] = []
    problems: list[str] = []
    lowered = {k.lower(): v for k, v in args.items()}
    for p in params:
        raw = lowered.get(p.name.lower())
        value = raw.strip() if isinstance(raw, str) and raw.strip() else None
        if value is None:
            value = p.default
        if value is None:
            if p.required:
                missing.append(p.name)
            continue
        problem = value_problem(p, value)
        if problem:
            problems.append(f"{p.name}={value!r}: {problem}")
            if p.required:
                missing.append(p.name)
            continue
        values[p.name] = value.lower() if p.choices else value
    return CheckedArgs(values, tuple(missing), tuple(problems))


def value_problem(param: Param, value: str) -> str | None:
    """Why ``value`` is not acceptable for ``param`` (``None`` when it is)."""
    if len(value) > 200 or _UNSAFE.search(value):
        return "must be one word without whitespace or control characters"
    if value.startswith("-"):
        return "must not start with '-'"
    if param.choices:
        if value.lower() not in param.choices:
            return "not one of " + ", ".join(param.choices)
        return None
    if not re.fullmatch(param.pattern or SAFE_VALUE, value):
        return f"does not match {param.pattern or 'a plain word (letters, digits, _ . : @ / + -)'}"
    return None


def placeholders(graph: Any) -> set[str]:
    """Names of the ``{name}`` placeholders in ``graph``'s argv elements, echo texts and labels."""
    found: set[str] = set()
    for n in graph.nodes:
        for text in _texts(n):
            found.update(_PLACEHOLDER.findall(text))
    return found


def _texts(node: Any) -> list[str]:
    out = [node.label]
    if node.kind == "shell":
        out += [a for a in node.args.get("argv", ()) if isinstance(a, str)]
    elif node.kind == "builtin" and node.args.get("op") == "echo":
        out.append(str(node.args.get("text", "")))
    return out


def bind_arguments(graph: Any, values: Mapping[str, str]) -> Any:
    """A copy of ``graph`` (an :class:`engine.graph.Graph`) with ``{name}`` placeholders
    replaced by ``values``.

    Only shell ``argv`` elements (each placeholder stays inside its one element),
    ``echo`` text and labels are touched; ``http`` URLs and LLM prompts are not.
    Raises ``KeyError`` naming a placeholder that has no value.
    """
    if not values and not placeholders(graph):
        return graph

    def sub(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(1) not in values:
                raise KeyError(m.group(1))
            return values[m.group(1)]

        return _PLACEHOLDER.sub(one, text)

    nodes = []
    for n in graph.nodes:
        args = dict(n.args)
        if n.kind == "shell" and "argv" in args:
            args["argv"] = [sub(a) if isinstance(a, str) else a for a in args["argv"]]
        elif n.kind == "builtin" and args.get("op") == "echo" and "text" in args:
            args["text"] = sub(str(args["text"]))
        nodes.append(dataclasses.replace(n, args=args, label=sub(n.label)))
    shown = " ".join(f"{k}={v}" for k, v in values.items())
    return dataclasses.replace(graph, nodes=tuple(nodes), source=f"{graph.source} ({shown})" if shown else graph.source)


def params_from_inputs(inputs: Any) -> tuple[Param, ...]:
    """Parameters from a workflow's declared inputs, duck-typed so it works with a plain
    mapping (``{name: {required, default, choices, pattern}}`` or ``{name: default}``)
    or objects with those attributes. ``None``/empty → ``()``."""
    if not inputs:
        return ()
    out = []
    items = inputs.items() if isinstance(inputs, Mapping) else ((getattr(i, "name", str(i)), i) for i in inputs)
    for name, spec in items:
        get = spec.get if isinstance(spec, Mapping) else (lambda k, d=None, s=spec: getattr(s, k, d))
        if spec is None or isinstance(spec, (str, int, float)):
            default = None if spec is None else str(spec)
            out.append(Param(str(name), required=default is None, default=default))
            continue
        default = get("default", None)
        choices = get("choices", None) or get("enum", None) or get("allowed", None) or ()
        out.append(
            Param(
                str(name),
                required=bool(get("required", default is None)) and default is None,
                choices=tuple(str(c).lower() for c in choices),
                pattern=get("pattern", None),
                default=None if default is None else str(default),
            )
        )
    return tuple(out)


__all__ = ["CheckedArgs", "bind_arguments", "check_arguments", "params_from_inputs", "placeholders", "value_problem"]
