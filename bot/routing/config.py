"""Load routes from YAML (``config/routes.yaml``).

Schema (unknown keys are errors, so typos surface at start-up)::

    version: 1                      # optional; only 1 is known
    defaults:                       # optional
      threshold: 0.15               # default embedding threshold (ask at or above it) for every route
      run_threshold: 0.5            # embedding score at or above which a read-only route runs without asking
    routes:
      - name: deploy                # required, unique, [A-Za-z0-9][A-Za-z0-9_.:-]*
        target: "deploy-service"    # required unless negative: workflow text or command
        examples:                   # utterances for the embedding layer
          - ship the api to staging
        patterns:                   # regexes, searched case-insensitively;
          - '^deploy (?P<service>[\\w-]+) to (?P<env>\\w+)$'   # named groups -> args
        keywords: [deploy, release] # whole-word, case-insensitive
        allowed_users: [U123]       # only these users or roles may trigger the route (checked by the bot)
        allowed_roles: [ops]
        threshold: 0.3              # overrides defaults.threshold (the "ask" threshold)
        effect: changes             # read-only | changes: a change always asks from plain language
        verbs: [deploy, ship]       # request verbs for keywords ("ship the api"); default: common ops verbs
        params:                     # declared arguments (named groups / LLM slots fill them)
          service: {required: true, choices: [api, web]}
          env: {required: false, default: staging, pattern: '[a-z]+'}
      - name: chitchat
        negative: true              # never fires; its examples pull scores away
        examples: [hello there, tell me a joke]

Every problem raises :class:`RouteConfigError` naming where it is
(``routes[2].patterns[0]: …``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from bot.routing.types import EFFECTS, Param, Route

_ROUTE_KEYS = {
    "name", "target", "examples", "patterns", "keywords", "allowed_users", "allowed_roles", "threshold", "negative",
    "effect", "verbs", "params",
}
_TOP_KEYS = {"version", "defaults", "routes"}
_DEFAULT_KEYS = {"threshold", "run_threshold"}
_PARAM_KEYS = {"required", "choices", "pattern", "default"}


class RouteConfigError(ValueError):
    """The routes file is unreadable or does not match the schema."""


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise RouteConfigError(f"{where}: expected a list of strings, got {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or not v.strip():
            raise RouteConfigError(f"{where}[{i}]: expected a non-empty string, got {v!r}")
        out.append(v.strip())
    return tuple(out)


def _threshold(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RouteConfigError(f"{where}: expected a number, got {value!r}")
    if not -1.0 <= float(value) <= 1.0:
        raise RouteConfigError(f"{where}: must be within [-1, 1], got {value}")
    return float(value)


def _params(value: Any, where: str, patterns: Sequence[re.Pattern[str]]) -> tuple[Param, ...]:
    """``params:`` — a mapping ``name -> {required, choices, pattern, default}`` (or
    ``name -> required|optional``); every named group of the route's patterns that is
    not declared becomes an optional parameter of any safe value."""
    out: dict[str, Param] = {}
    if value is not None:
        if not isinstance(value, Mapping):
            raise RouteConfigError(f"{where}: expected a mapping of parameter name -> settings, got {type(value).__name__}")
        for name, spec in value.items():
            w = f"{where}.{name}"
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise RouteConfigError(f"{w}: parameter names are identifiers (letters, digits, _)")
            if spec in ("required", "optional", None):
                out[name] = Param(name, required=spec != "optional")
                continue
            if not isinstance(spec, Mapping) or set(spec) - _PARAM_KEYS:
                raise RouteConfigError(f"{w}: expected required|optional or a mapping with keys {sorted(_PARAM_KEYS)}, got {spec!r}")
            required = spec.get("required", True)
            if not isinstance(required, bool):
                raise RouteConfigError(f"{w}.required: expected true/false")
            pattern = spec.get("pattern")
            if pattern is not None:
                try:
                    re.compile(str(pattern))
                except re.error as e:
                    raise RouteConfigError(f"{w}.pattern: invalid regex {pattern!r}: {e}") from None
            default = spec.get("default")
            out[name] = Param(
                name,
                required=required and default is None,
                choices=tuple(c.lower() for c in _strings(spec.get("choices"), f"{w}.choices")),
                pattern=None if pattern is None else str(pattern),
                default=None if default is None else str(default),
            )
    for p in patterns:
        for group in p.groupindex:
            out.setdefault(group, Param(group, required=False))
    return tuple(out.values())


def parse_routes(data: Any, source: str = "<routes>") -> tuple[Route, ...]:
    """Validate already-parsed YAML/JSON ``data`` and build the routes, in file order.

    Raises :class:`RouteConfigError` (message prefixed with ``source``).
    """

    def err(msg: str) -> RouteConfigError:
        return RouteConfigError(f"{source}: {msg}")

    if isinstance(data, list):
        data = {"routes": data}
    if not isinstance(data, Mapping):
        raise err(f"top level must be a mapping with 'routes', got {type(data).__name__}")
    extra = set(data) - _TOP_KEYS
    if extra:
        raise err(f"unknown top-level key(s) {sorted(extra)}; known: {sorted(_TOP_KEYS)}")
    if data.get("version", 1) != 1:
        raise err(f"unsupported version {data.get('version')!r} (only 1)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping) or set(defaults) - _DEFAULT_KEYS:
        raise err(f"defaults: only {sorted(_DEFAULT_KEYS)} allowed, got {defaults!r}")
    try:
        default_threshold = _threshold(defaults.get("threshold"), "defaults.threshold")
        _threshold(defaults.get("run_threshold"), "defaults.run_threshold")
    except RouteConfigError as e:
        raise err(str(e)) from None
    items = data.get("routes")
    if not isinstance(items, list):
        raise err("'routes' must be a list")
    routes: list[Route] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"routes[{i}]"
        try:
            if not isinstance(item, Mapping):
                raise RouteConfigError(f"{where}: expected a mapping, got {type(item).__name__}")
            extra = set(item) - _ROUTE_KEYS
            if extra:
                raise RouteConfigError(f"{where}: unknown key(s) {sorted(extra)}; known: {sorted(_ROUTE_KEYS)}")
            name = item.get("name")
            if not isinstance(name, str):
                raise RouteConfigError(f"{where}.name: required string")
            where = f"routes[{i}] ({name})"
            key = name.lower()
            if key in seen:
                raise RouteConfigError(f"{where}: duplicate name (also routes[{seen[key]}]; names are case-insensitive)")
            seen[key] = i
            negative = item.get("negative", False)
            if not isinstance(negative, bool):
                raise RouteConfigError(f"{where}.negative: expected true/false")
            target = item.get("target", "")
            if not isinstance(target, str):
                raise RouteConfigError(f"{where}.target: expected a string")
            patterns = []
            for j, src in enumerate(_strings(item.get("patterns"), f"{where}.patterns")):
                try:
                    patterns.append(re.compile(src, re.IGNORECASE))
                except re.error as e:
                    raise RouteConfigError(f"{where}.patterns[{j}]: invalid regex {src!r}: {e}") from None
            threshold = _threshold(item.get("threshold"), f"{where}.threshold")
            effect = item.get("effect")
            if effect is not None and effect not in EFFECTS:
                raise RouteConfigError(f"{where}.effect: expected one of {list(EFFECTS)}, got {effect!r}")
            route = Route(
                name=name,
                target=target.strip(),
                examples=_strings(item.get("examples"), f"{where}.examples"),
                patterns=tuple(patterns),
                keywords=tuple(k.lower() for k in _strings(item.get("keywords"), f"{where}.keywords")),
                allowed_users=_strings(item.get("allowed_users"), f"{where}.allowed_users"),
                allowed_roles=_strings(item.get("allowed_roles"), f"{where}.allowed_roles"),
                threshold=threshold if threshold is not None else default_threshold,
                negative=negative,
                effect=effect,
                verbs=tuple(v.lower() for v in _strings(item.get("verbs"), f"{where}.verbs")),
                params=_params(item.get("params"), f"{where}.params", patterns),
            )
            if negative and (route.patterns or route.keywords or route.params or route.effect):
                raise RouteConfigError(f"{where}: a negative route may only have examples")
            if negative and not route.examples:
                raise RouteConfigError(f"{where}: a negative route needs examples")
        except RouteConfigError as e:
            raise err(str(e)) from None
        except ValueError as e:  # Route.__post_init__
            raise err(f"{where}: {e}") from None
        routes.append(route)
    return tuple(routes)


def load_routes(source: str | os.PathLike[str]) -> tuple[Route, ...]:
    """Load routes from a YAML file path, or from YAML text when ``source`` is a
    string containing a newline.

    Raises :class:`RouteConfigError` for an unreadable file, invalid YAML or a
    schema violation.
    """
    if isinstance(source, str) and "\n" in source:
        text, label = source, "<string>"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise RouteConfigError(f"{path}: cannot read: {e}") from None
        label = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RouteConfigError(f"{label}: invalid YAML: {e}") from None
    return parse_routes(data, label)


def dump_routes(routes: Sequence[Route]) -> dict[str, Any]:
    """The YAML-ready mapping for ``routes`` (inverse of :func:`parse_routes`)."""
    out = []
    for r in routes:
        d: dict[str, Any] = {"name": r.name}
        if r.target:
            d["target"] = r.target
        for key in ("examples", "keywords", "allowed_users", "allowed_roles"):
            if getattr(r, key):
                d[key] = list(getattr(r, key))
        if r.patterns:
            d["patterns"] = [p.pattern for p in r.patterns]
        if r.threshold is not None:
            d["threshold"] = r.threshold
        if r.negative:
            d["negative"] = True
        if r.effect:
            d["effect"] = r.effect
        if r.verbs:
            d["verbs"] = list(r.verbs)
        declared = {p.name: p for p in r.params if not (not p.required and not p.choices and p.pattern is None and p.default is None)}
        if declared:
            d["params"] = {
                n: {k: v for k, v in (("required", p.required), ("choices", list(p.choices)), ("pattern", p.pattern), ("default", p.default)) if v not in (None, [])}
                for n, p in declared.items()
            }
        out.append(d)
    return {"version": 1, "routes": out}


def run_threshold_of(source: str | os.PathLike[str]) -> float | None:
    """``defaults.run_threshold`` of a routes file (``None`` when absent or unreadable)."""
    try:
        data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        value = (data.get("defaults") or {}).get("run_threshold")
        return None if value is None else float(value)
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return None
