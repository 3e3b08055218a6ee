"""Workflow parameters: checking the values a run is started with against ``inputs``.

``/run deploy service=api version=1.4`` passes ``{"service": "api", "version": "1.4"}``
as text; :func:`bind_inputs` converts each to its declared type, fills defaults, and
refuses unknown names, missing required values, bad types and values outside
``allowed`` — all of them at once, before anything runs, with the parameter list.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import EngineError
from engine.graph import InputSpec

_PAIR = re.compile(r"^([A-Za-z_][\w-]*)=(.*)$", re.S)


class InputError(EngineError, ValueError):
    """The values given for a workflow's inputs are invalid.

    Attributes:
        problems: one sentence per problem.
        specs: the declared parameters (for the list shown with the error).
    """

    def __init__(self, workflow: str, problems: Sequence[str], specs: Sequence[InputSpec]) -> None:
        self.problems = tuple(problems)
        self.specs = tuple(specs)
        params = ", ".join(s.describe() for s in specs) or "none"
        super().__init__(f"{'; '.join(problems)}. Parameters of {workflow}: {params}")


def split_arguments(text: str) -> tuple[str, dict[str, str]] | None:
    """``deploy service=api version=1.4`` → ``("deploy", {...})``; ``None`` when the words
    after the first are not all ``name=value`` (quotes allowed: ``msg="two words"``)."""
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    if len(words) < 2:
        return None
    pairs: dict[str, str] = {}
    for w in words[1:]:
        m = _PAIR.match(w)
        if not m:
            return None
        pairs[m.group(1)] = m.group(2)
    return words[0], pairs


def _convert(spec: InputSpec, raw: Any) -> Any:
    if spec.type == "string":
        return raw if isinstance(raw, str) else str(raw)
    if spec.type == "integer":
        if isinstance(raw, bool):
            raise ValueError
        if isinstance(raw, int):
            return raw
        return int(str(raw).strip())
    if spec.type == "number":
        if isinstance(raw, bool):
            raise ValueError
        if isinstance(raw, (int, float)):
            return raw
        v = float(str(raw).strip())
        return int(v) if v.is_integer() and "." not in str(raw) else v
    if isinstance(raw, bool):
        return raw
    t = str(raw).strip().lower()
    if t in ("true", "yes", "1", "on"):
        return True
    if t in ("false", "no", "0", "off"):
        return False
    raise ValueError


def bind_inputs(workflow: str, specs: Sequence[InputSpec], given: Mapping[str, Any]) -> dict[str, Any]:
    """The typed input values of a run: ``given`` checked against ``specs``, defaults filled.

    Raises:
        InputError: unknown names, missing required values, values of the wrong type
            or outside ``allowed`` (every problem listed).
    """
    by_name = {s.name: s for s in specs}
    problems: list[str] = []
    for k in given:
        if k not in by_name:
            problems.append(f"unknown parameter '{k}'")
    out: dict[str, Any] = {}
    for s in specs:
        if s.name in given:
            try:
                v = _convert(s, given[s.name])
            except (TypeError, ValueError):
                problems.append(f"'{s.name}' must be {'an' if s.type == 'integer' else 'a'} {s.type}, not {given[s.name]!r}")
                continue
        elif s.default is not None:
            v = s.default
        elif s.required:
            problems.append(f"missing required parameter '{s.name}'")
            continue
        else:
            continue
        if s.allowed and v not in s.allowed and str(v).lower() not in {str(a).lower() for a in s.allowed}:
            problems.append(f"'{s.name}' must be one of {', '.join(map(str, s.allowed))}, not {v!r}")
            continue
        if s.pattern and not re.fullmatch(s.pattern, str(v)):
            problems.append(f"'{s.name}' must match {s.pattern}, not {v!r}")
            continue
        out[s.name] = v
    if problems:
        raise InputError(workflow, problems, specs)
    return out


__all__ = ["InputError", "bind_inputs", "split_arguments"]
