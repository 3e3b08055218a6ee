"""What a step's text can name: built-ins, configured actions, named workflows, LLM prompts.

Resolution order for the text of one step (after stripping a leading ``run``):

1. a built-in: ``echo <text>``, ``sleep <seconds>``, ``fail [message]``,
   ``approve [question]`` (pauses the run until an allowed person approves or rejects);
2. a configured action (``[actions.NAME]`` in ``config/baton.toml``: shell or http);
3. a named workflow (``config/workflows/*.yaml``) – inlined into the graph;
4. a single word that is none of these (``disk-chek``) is an unknown name, reported
   with the closest known names (rapidfuzz) rather than sent to an LLM;
5. anything else is an LLM prompt step; ``... with <provider>`` picks a configured
   provider entry.

Shell actions are argv lists from configuration, never a string built from chat;
``argv[0]`` must be on the allow-list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz, process

from engine.definitions import WorkflowDefinition, compile_definition
from engine.errors import DefinitionError, UnknownWorkflowError
from engine.graph import Graph
from engine.parse import parse_duration

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


@dataclass(frozen=True)
class Resolved:
    """A step's text resolved to an action: ``kind`` and JSON-able ``args``."""

    kind: str
    args: dict[str, Any]
    label: str
    idempotent: bool


def _canon(s: str) -> str:
    """Case- and separator-insensitive form: ``Disk_Check`` and ``disk-check`` compare equal."""
    return re.sub(r"[\s_.:-]+", "-", s.strip().lower())


def close_names(name: str, known: Iterable[str], limit: int = 3, cutoff: float = 60.0) -> list[str]:
    """The ``known`` names closest to ``name``, best first, at most ``limit``.

    Scoring is rapidfuzz ``WRatio`` (0–100) on a case-folded form where runs of
    ``space _ . : -`` count as one separator, so ``disk_chek`` suggests
    ``disk-check``; names scoring below ``cutoff`` are dropped. Ties keep the order
    of ``known``; duplicates are returned once. An empty ``name`` or ``limit <= 0``
    gives ``[]``. Used for unknown workflows, commands, steps and routes.
    """
    if limit <= 0 or not name.strip():
        return []
    names = list(dict.fromkeys(known))
    if not names:
        return []
    hits = process.extract(_canon(name), [_canon(n) for n in names], scorer=fuzz.WRatio, limit=limit, score_cutoff=cutoff)
    # process.extract on a list returns (choice, score, index); stable on ties.
    hits = sorted(hits, key=lambda h: (-h[1], h[2]))
    return [names[h[2]] for h in hits]


@dataclass
class Catalog:
    """Everything a workflow step may refer to.

    Attributes:
        workflows: named YAML definitions.
        actions: named configured actions (shell argv lists, http checks).
        shell_allow: ``argv[0]`` values a shell action may run (basename or path).
        providers: LLM provider entry names usable with ``with <name>``.
        output_limit: bytes of action output kept per step.
    """

    workflows: Mapping[str, WorkflowDefinition] = field(default_factory=dict)
    actions: Mapping[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    shell_allow: Sequence[str] = ()
    providers: Sequence[str] = ()
    _graphs: dict[str, Graph] = field(default_factory=dict, repr=False)

    def names(self) -> list[str]:
        """Every name a step can use (workflows and actions), sorted."""
        return sorted({*self.workflows, *self.actions})

    def graph_for(self, name: str, *, stack: tuple[str, ...] = ()) -> Graph:
        """The compiled graph of a named workflow (cached).

        Raises:
            UnknownWorkflowError: no such workflow (with close names).
            DefinitionError: the workflow (indirectly) uses itself.
        """
        if name not in self.workflows:
            raise UnknownWorkflowError(name, close_names(name, self.names()))
        if name in stack[:-1]:
            raise DefinitionError(f"workflow '{name}' uses itself: {' → '.join(stack)}")
        if name not in self._graphs:
            self._graphs[name] = compile_definition(self.workflows[name], self, stack=stack or (name,))
        return self._graphs[name]

    def resolve(self, text: str, *, position: int | None = None, stack: tuple[str, ...] = ()) -> Resolved:
        """Resolve one step's text (see the module docstring for the order).

        Raises:
            UnknownWorkflowError: a single unknown name, with close names.
            DefinitionError: a built-in with a bad argument (``sleep soon``).
        """
        words = text.split()
        if not words:
            raise DefinitionError("empty step")
        head, rest = words[0], " ".join(words[1:])
        if head == "echo":
            return Resolved("builtin", {"op": "echo", "text": rest}, text, True)
        if head == "sleep":
            try:
                secs = parse_duration(rest or "")
            except ValueError:
                raise DefinitionError(f"sleep takes seconds, e.g. 'sleep 2' or 'sleep 500ms', not {rest!r}") from None
            return Resolved("builtin", {"op": "sleep", "seconds": secs}, text, True)
        if head == "fail":
            return Resolved("builtin", {"op": "fail", "message": rest or "failed on purpose"}, text, True)
        if head == "approve":
            return Resolved("approve", {"prompt": rest or "Approve to continue?"}, text, True)
        name = " ".join(words[1:]) if head == "run" and len(words) >= 2 else text.strip()
        if name in self.actions:
            kind, args = self.actions[name]
            return Resolved(kind, dict(args), name, bool(args.get("idempotent", kind == "http")))
        if name in self.workflows:
            return Resolved("workflow", {"name": name}, name, True)
        if (head == "run" and len(words) == 2) or (len(words) == 1 and _NAME.match(name)):
            raise UnknownWorkflowError(name, close_names(name, self.names()), position)
        provider = None
        if len(words) >= 3 and words[-2] == "with" and words[-1] in self.providers:
            provider = words[-1]
            text = " ".join(words[:-2])
        return Resolved("llm", {"prompt": text, "provider": provider}, text, False)

    def action_args(self, kind: str, value: Any, where: str) -> dict[str, Any]:
        """Validate the arguments of an explicit YAML action (``shell``/``http``/``disk``).

        Raises:
            DefinitionError: with ``where`` in the message.
        """
        if kind == "shell":
            if isinstance(value, dict):
                argv, timeout = value.get("argv"), value.get("timeout", 30)
            else:
                argv, timeout = value, 30
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise DefinitionError(f"{where}: shell takes a list of strings (argv), not a shell string")
            self.check_shell(argv, where)
            return {"argv": argv, "timeout_s": parse_duration(timeout)}
        if kind == "http":
            if isinstance(value, str):
                value = {"url": value}
            if not isinstance(value, dict) or "url" not in value:
                raise DefinitionError(f"{where}: http needs a url")
            return {
                "url": str(value["url"]),
                "method": str(value.get("method", "GET")).upper(),
                "expect_status": int(value.get("expect_status", 200)),
                "timeout_s": parse_duration(value.get("timeout", 10)),
                "contains": value.get("contains"),
            }
        if kind == "disk":
            value = value or {}
            paths = value.get("paths", ["/"])
            return {"paths": list(paths), "threshold_percent": float(value.get("threshold_percent", 90))}
        raise DefinitionError(f"{where}: unknown action kind {kind!r}")

    def check_shell(self, argv: Sequence[str], where: str = "shell action") -> None:
        """Raise :class:`DefinitionError` unless ``argv[0]`` is on the allow-list."""
        prog = argv[0]
        base = prog.rsplit("/", 1)[-1]
        if prog not in self.shell_allow and base not in self.shell_allow:
            raise DefinitionError(
                f"{where}: command '{prog}' is not on the shell allow-list ({', '.join(self.shell_allow) or 'empty'}); "
                "add it to [shell] allow in config/baton.toml"
            )
