"""The error raised when a chat message cannot be turned into a schedule.

:class:`ScheduleParseError` carries data, not just prose: ``position`` (0-based
character offset into the *whole* chat message of the first part that was not
understood), ``fragment`` (that part's text, ``""`` at the end of the message),
``message`` (why) and ``examples`` (two phrases that do work, to show the user).
``str()`` renders a caret line pointing at the fragment, ready to post in a thread.
"""

from __future__ import annotations

__all__ = ["ScheduleParseError", "DEFAULT_EXAMPLES"]

DEFAULT_EXAMPLES: tuple[str, str] = (
    "every weekday at 9am run standup-report",
    "every 15 minutes run disk-check",
)


class ScheduleParseError(ValueError):
    """A chat message was refused because part of it was not understood.

    Attributes:
        message: why it was refused (one sentence, no position).
        position: 0-based character offset in the original message of the part not
            understood (``len(text)`` when something is missing at the end).
        fragment: the text at ``position`` that was not understood (``""`` if missing).
        examples: two example phrases that parse, chosen to fit the mistake.
        text: the original message (``""`` if none was given).

    Nothing is ever accepted from a message that raised this error.
    """

    def __init__(
        self,
        message: str,
        *,
        position: int,
        fragment: str = "",
        text: str = "",
        examples: tuple[str, str] = DEFAULT_EXAMPLES,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.fragment = fragment
        self.text = text
        self.examples = tuple(examples)

    def __str__(self) -> str:
        where = f"{self.fragment!r} at position {self.position}" if self.fragment else f"position {self.position}"
        lines = [f"could not understand {where}: {self.message}"]
        if self.text and "\n" not in self.text:
            width = max(1, len(self.fragment))
            lines.append(f"  {self.text}")
            lines.append("  " + " " * self.position + "^" * width)
        lines.append("try e.g. " + " or ".join(f'"{e}"' for e in self.examples))
        return "\n".join(lines)

    def __reduce__(self):  # keep keyword-only data through pickling (logs, worker queues)
        return (
            _rebuild,
            (self.message, self.position, self.fragment, self.text, self.examples),
        )


def _rebuild(message: str, position: int, fragment: str, text: str, examples: tuple[str, str]) -> ScheduleParseError:
    return ScheduleParseError(message, position=position, fragment=fragment, text=text, examples=examples)
