"""Errors of the workflow engine.

Tree::

    EngineError
    ├── WorkflowSyntaxError      malformed workflow text (line, column, caret)
    ├── DefinitionError          a YAML workflow definition is invalid (file, node)
    ├── UnknownWorkflowError     (also LookupError) a step names no known workflow
    └── StepError                an action failed; ``retryable`` says if a retry may help
"""

from __future__ import annotations

from collections.abc import Sequence


INTERRUPTED = "interrupted by a restart while running"
"""Start of the error of a step found ``running`` after a restart and not re-run (not idempotent).

The engine states the fact; the bot adds how to run it again (:func:`bot.texts.step_error`)."""


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class WorkflowSyntaxError(EngineError, ValueError):
    """Workflow text that does not parse.

    Attributes:
        text: the whole workflow text.
        position: 0-based character offset of the offending token.
        line, column: 1-based line and column of that offset.
        reason: what was wrong, in words ("expected a step after THEN").
    """

    def __init__(self, reason: str, text: str, position: int) -> None:
        position = max(0, min(position, len(text)))
        self.reason = reason
        self.text = text
        self.position = position
        self.line = text.count("\n", 0, position) + 1
        line_start = text.rfind("\n", 0, position) + 1
        self.column = position - line_start + 1
        super().__init__(self.render())

    def caret(self) -> str:
        """The offending line with a caret under the offending token."""
        line_start = self.text.rfind("\n", 0, self.position) + 1
        line_end = self.text.find("\n", self.position)
        if line_end < 0:
            line_end = len(self.text)
        return f"{self.text[line_start:line_end]}\n{' ' * (self.column - 1)}^"

    def render(self) -> str:
        return f"line {self.line}, column {self.column}: {self.reason}\n{self.caret()}"


class DefinitionError(EngineError, ValueError):
    """A YAML workflow definition is invalid; the message names the file and node."""


class UnknownWorkflowError(EngineError, LookupError):
    """A step names a workflow (or action) that does not exist.

    Attributes:
        name: the unknown name.
        suggestions: the closest known names (rapidfuzz), best first.
    """

    def __init__(self, name: str, suggestions: Sequence[str] = (), position: int | None = None) -> None:
        self.name = name
        self.suggestions = tuple(s for s in suggestions if s != name)  # never "did you mean" the name itself
        self.position = position
        msg = f"unknown workflow '{name}'"
        if self.suggestions:
            msg += "; did you mean " + ", ".join(f"'{s}'" for s in self.suggestions) + "?"
        super().__init__(msg)

    def sentence(self) -> str:
        """The message as a sentence: first letter capitalised, names exactly as typed and as known
        (``str.capitalize`` lower-cased the rest, turning 'Deploy' into 'deploy')."""
        text = str(self)
        return text[:1].upper() + text[1:]


class StepError(EngineError):
    """An action failed.

    Attributes:
        retryable: whether another attempt may succeed (timeouts, connection errors,
            5xx) — a retry policy only retries these.
        output: whatever the action produced before failing (kept in the run record).
    """

    def __init__(self, message: str, *, retryable: bool = True, output: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.output = output
