"""Pure helpers of the Discord adapter: message text, status rendering, autocomplete ranking, log redaction.

No discord.py objects here, so these are cheap to test and to benchmark.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

from rapidfuzz import fuzz, process
from rapidfuzz import utils as fuzz_utils

from adapters.base import ICONS, StatusBoard, step_line

#: Discord's limit on a message's ``content``, in characters
#: (https://discord.com/developers/docs/resources/message#create-message).
MESSAGE_LIMIT = 2000
#: Autocomplete may return at most 25 choices
#: (https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-autocomplete).
MAX_CHOICES = 25
#: Choice names and values are 1–100 characters.
CHOICE_LIMIT = 100
#: Thread names are 1–100 characters.
THREAD_NAME_LIMIT = 100

_FENCE = "```"
_FENCE_ESCAPE = "`\u200b``"  # a zero-width space keeps text from closing our code block


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Discord message contents for ``text``: one line stays plain, several go in code blocks.

    Core replies are aligned plain text (tables, step lines, command output), so a
    multi-line reply is sent in code blocks, which keep the alignment and stop
    output from being read as markdown. Long text is split at line boundaries
    (a single over-long line is cut) into chunks of at most ``limit`` characters
    each, including the fences.

    Returns:
        One or more strings, each ``1 <= len <= limit``; ``[""]`` is never returned
        (an empty ``text`` gives ``["(empty reply)"]``).
    """
    text = text.rstrip()
    if not text:
        return ["(empty reply)"]
    if "\n" not in text and len(text) <= limit:
        return [text]
    room = limit - 2 * len(_FENCE) - 2  # two fences, two newlines
    body = text.replace(_FENCE, _FENCE_ESCAPE)
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in body.split("\n"):
        while len(line) > room:  # an over-long line: cut it
            if current:
                chunks.append("\n".join(current))
                current, size = [], 0
            chunks.append(line[:room])
            line = line[room:]
        extra = len(line) + (1 if current else 0)
        if size + extra > room:
            chunks.append("\n".join(current))
            current, size = [], 0
            extra = len(line)
        current.append(line)
        size += extra
    if current:
        chunks.append("\n".join(current))
    return [f"{_FENCE}\n{c}\n{_FENCE}" for c in chunks]


def split_plain(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Discord message contents for markdown text (an LLM reply): split at line boundaries, no added fences.

    A chunk that ends inside a code block gets the block closed, and the next
    chunk reopens it, so every message renders on its own. Each chunk is at most
    ``limit`` characters; an empty ``text`` gives ``["…"]``.
    """
    text = text.rstrip()
    if not text:
        return ["…"]
    if len(text) <= limit:
        return [text]
    room = limit - 2 * (len(_FENCE) + 1)  # space to close and reopen a code block
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    in_code = False  # at the end of ``current``
    reopen = False  # ``current`` starts inside a code block

    def flush() -> None:
        nonlocal current, size, reopen
        body = "\n".join(current)
        if reopen:
            body = f"{_FENCE}\n{body}"
        if in_code:
            body = f"{body}\n{_FENCE}"
        chunks.append(body)
        current, size, reopen = [], 0, in_code

    for line in text.split("\n"):
        while len(line) > room:
            if current:
                flush()
            current, size = [line[:room]], room
            flush()
            line = line[room:]
        if current and size + 1 + len(line) > room:
            flush()
        current.append(line)
        size += len(line) + (1 if len(current) > 1 else 0)
        if line.lstrip().startswith(_FENCE):
            in_code = not in_code
    if current:
        flush()
    return chunks


def escape_inline(text: str) -> str:
    """``text`` safe inside Discord markdown bold text: ``\\ * _ ` ~ | [ ]`` escaped, one line."""
    return re.sub(r"([\\*_`~|\[\]])", r"\\\1", " ".join(text.split()))


def thread_name(title: str) -> str:
    """A thread name for a session started by ``title`` (1–100 characters, one line)."""
    name = " ".join(title.split()) or "baton"
    return name if len(name) <= THREAD_NAME_LIMIT else name[: THREAD_NAME_LIMIT - 1] + "…"


def render_status(board: StatusBoard, limit: int = MESSAGE_LIMIT) -> str:
    """The live status message of a run: a header line, then one line per step in a code block.

    Returns at most ``limit`` characters: when the steps do not fit, the oldest rows
    are folded into a "… N earlier steps" line (the latest rows matter most).
    """
    icon = ICONS.get(board.status, "▶" if board.status == "running" else "…")
    title = board.title if len(board.title) <= 80 else board.title[:79] + "…"
    head = f"{icon} **Run #{board.run_id}** · {board.status} · {escape_inline(title)}"
    rows = [step_line(r) for r in board.rows()] or ["waiting for the first step…"]
    tail = f"\nError: {board.error[:300]}" if board.error else ""
    room = limit - len(head) - len(tail) - 10
    body = "\n".join(rows).replace(_FENCE, _FENCE_ESCAPE)
    dropped = 0
    while len(body) > room and len(rows) > 1:
        rows.pop(0)
        dropped += 1
        body = "\n".join([f"… {dropped} earlier steps", *rows]).replace(_FENCE, _FENCE_ESCAPE)
    if len(body) > room:
        body = body[: max(room - 1, 0)] + "…"
    return f"{head}\n{_FENCE}\n{body}\n{_FENCE}{tail}"


class NameIndex:
    """Workflow names prepared for ranking (rapidfuzz-processed once, not per keystroke).

    Args:
        names: the candidate names (e.g. ``app.catalog.names()``).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.processed = [fuzz_utils.default_process(n) for n in self.names]
        self.alphabetical = sorted(self.names)

    def rank(self, query: str, limit: int = MAX_CHOICES) -> list[str]:
        """Names for an autocomplete query, best first, at most ``limit``.

        Ranking: an exact match, then names starting with the query, then names
        containing it, then the rest by rapidfuzz ``WRatio`` (score ≥ 50); ties go
        to the higher score, then the shorter name, then alphabetical order. Case
        and punctuation are ignored (rapidfuzz ``default_process``). An empty query
        lists names alphabetically. Discord shows at most 25 choices, hence the
        default ``limit``.
        """
        q = fuzz_utils.default_process(query)
        if not q:
            return self.alphabetical[:limit]
        scores: dict[int, float] = {
            i: score for _, score, i in process.extract(q, self.processed, scorer=fuzz.WRatio, processor=None, limit=None, score_cutoff=50)
        }
        for i, p in enumerate(self.processed):  # substring hits that WRatio scored under the cutoff
            if i not in scores and q in p:
                scores[i] = 0.0
        ranked = sorted((_tier(q, self.processed[i]), -score, len(self.names[i]), self.names[i]) for i, score in scores.items())
        return [r[3] for r in ranked[:limit]]


def rank_workflows(query: str, names: Sequence[str], limit: int = MAX_CHOICES) -> list[str]:
    """:meth:`NameIndex.rank` over ``names`` (builds the index; keep a :class:`NameIndex` for repeated queries)."""
    return NameIndex(names).rank(query, limit)


def _tier(q: str, name: str) -> int:
    if name == q:
        return 0
    if name.startswith(q):
        return 1
    if q in name:
        return 2
    return 3


def choice_label(name: str, description: str) -> str:
    """An autocomplete choice's visible name: ``name — description``, at most 100 characters."""
    label = f"{name} — {description}" if description else name
    return label if len(label) <= CHOICE_LIMIT else label[: CHOICE_LIMIT - 1] + "…"


_URL_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.\-]+")
_FIELD_TOKEN = re.compile(r"""(['"]token['"]\s*:\s*['"])[^'"]+""")


class RedactSecrets(logging.Filter):
    """A logging filter that removes secrets from records before any handler sees them.

    discord.py logs webhook URLs at DEBUG (``/webhooks/{app}/{interaction token}``)
    and whole gateway events (INTERACTION_CREATE carries its ``token``); the bot
    token itself must never reach a log. Replaces known secrets, interaction
    tokens in webhook/interaction URLs and ``"token": "…"`` fields with
    ``[redacted]``. Attach it to each logger that emits (filters on a logger do
    not apply to its children).
    """

    def __init__(self) -> None:
        super().__init__("baton-redact")
        self.secrets: set[str] = set()

    def add(self, secret: str) -> None:
        """Redact ``secret`` wherever it appears (ignored when shorter than 8 characters)."""
        if len(secret) >= 8:
            self.secrets.add(secret)

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for s in self.secrets:
            text = text.replace(s, "[redacted]")
        text = _URL_TOKEN.sub(r"\1[redacted]", text)
        return _FIELD_TOKEN.sub(r"\1[redacted]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            clean = self.redact(text)
            if clean != text:  # only then trade the exception object for its redacted text
                record.exc_text = clean
                record.exc_info = None
        return True

    def attach(self, names: Iterable[str]) -> None:
        """Add this filter to the loggers ``names`` (once each)."""
        for name in names:
            lg = logging.getLogger(name)
            if self not in lg.filters:
                lg.addFilter(self)
