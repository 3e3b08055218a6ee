"""Is a message a request, a question or a statement? (issue 16: statements are not requests)

A chat-ops bot reads many messages that *mention* a route's words without asking for
anything: "the disk team lunch is at noon", "fyi I already restarted the api",
"> deploy failed again". Running a workflow on those is the worst mistake a router
can make, so the router classifies the *form* of every plain message first, with
cheap rules (no model; microseconds):

* ``REQUEST`` — an imperative (``check the disk``), a polite request (``can you
  restart the api``, ``please …``, ``I need a system report``), or a bare noun phrase
  (``disk usage``, ``system report please``).
* ``QUESTION`` — a present-tense question that asks the bot to find something out
  (``is the disk full?``, ``how much memory is free``).
* ``TOPIC_QUESTION`` — a question *about* the topic, not asking for the action
  (``why did the disk fill up yesterday?``, ``did you run the disk check?``,
  ``what does ops-check do``).
* ``STATEMENT`` — anything else: reports, notes, past-tense narration, quotes.

The router lets a REQUEST or QUESTION run a read-only route at high confidence; a
STATEMENT or TOPIC_QUESTION never runs anything from plain language (at most the bot
asks). The word lists are English and deliberately small: they decide *form*, not
topic, and were checked on ``tests/routing/data/statements.yaml`` (``bench/routing.py
--statements``).
"""

from __future__ import annotations

import enum
import re


class SpeechAct(str, enum.Enum):
    """The form of a message (see the module docstring)."""

    REQUEST = "request"
    QUESTION = "question"
    TOPIC_QUESTION = "topic-question"
    STATEMENT = "statement"

    @property
    def may_run(self) -> bool:
        """True when a message of this form may start a run from plain language."""
        return self in (SpeechAct.REQUEST, SpeechAct.QUESTION)


_LEAD = re.compile(
    r"^(?:(?:hey|hi|hello|ok|okay|yo|so|and|also|now|then|alright|right)\b[\s,!.]*|@?baton\b[\s,:!]*|<@[^>]+>[\s,:]*)+",
    re.I,
)
_POLITE = re.compile(
    r"^(?:please|pls|plz|kindly|(?:can|could|would|will|wo)(?:n't)?\s+(?:you|u|we|someone)(?:\s+please)?|"
    r"would\s+you\s+mind|i\s+(?:need|want|would\s+like|'d\s+like|d\s+like)(?:\s+you)?(?:\s+to)?|i'd\s+like(?:\s+you)?(?:\s+to)?|"
    r"i\s+need|we\s+need(?:\s+to)?|let's|lets|let\s+us|go\s+ahead\s+and|time\s+to|mind|quick(?:ly)?|just)\b[\s,]*",
    re.I,
)
_VERBS = frozenset(
    """check run show give get tell display list report ping test verify scan look see fetch find inspect audit examine
    restart reboot bounce start stop kill deploy ship release roll rollback redeploy build publish promote push
    clean clear flush purge prune rotate reload refresh sync update upgrade install uninstall remove delete drop
    create make add open close trigger kick launch do perform execute summarize summarise prepare compile draft
    measure monitor watch count compute calculate print dump query describe spin scale resize backup restore
    investigate diagnose debug troubleshoot sweep probe pull mark grab collect generate produce""".split()
)
"""Verbs that open an imperative (``check the disk``)."""

_NOT_IMPERATIVE_NEXT = frozenset(
    """is was were are be been being has had have failed fails worked works went goes took takes broke breaks
    looks looked seems seemed finished finishes completed succeeded ran runs got gets started starts stopped
    will would should could might may can did does do done team meeting lunch notes note job jobs window
    schedule log logs channel script scripts ticket tickets call calls""".split()
)
"""A verb-looking first word followed by one of these is a noun ("restart failed", "deploy
is at 5", "check was green"), so the message is not an imperative."""

_Q_PRESENT = frozenset("is are am how what what's whats which where can could will would do does any has have".split())
_Q_TOPIC = frozenset("why did was were when who who's whose should shall".split())
_NOTE = re.compile(
    r"^(?:fyi|btw|note(?:\s+to\s+self)?|heads[\s-]?up|reminder|remember|just\s+so\s+you\s+know|so\s+you\s+know|for\s+the\s+record|"
    r"for\s+your\s+information|psa|update|status)\b",
    re.I,
)
_TOPIC_PATTERNS = re.compile(
    r"\b(?:does|do)\s+\S+(?:\s+\S+)?\s+(?:do|mean|work|take|cost)\b|\bwhat\s+(?:is|are)\s+(?:a|an|the)\s+[\w-]+\s+(?:for|made of)\b|"
    r"\bhow\s+(?:does|do)\b|\b(?:did|have|has)\s+(?:you|we|they|he|she|someone|anyone)\b|\b(?:should|shall)\s+(?:i|we)\b",
    re.I,
)
_STATEMENT_OPENERS = re.compile(
    r"^(?:fyi|btw|note|heads[\s-]?up|reminder|remember|just\s+so\s+you\s+know|for\s+the\s+record|update|status|news|"
    r"i|i'm|im|i've|ive|i'll|we|we're|we've|we'll|our|my|they|their|he|she|it|it's|its|there|this|that|these|those|"
    r"the|a|an|yesterday|today|tonight|tomorrow|last|earlier|lol|haha|thanks|thank)\b",
    re.I,
)
_QUOTE = re.compile(r"^\s*(?:>|\"|'|“|‘|`)")


def _strip(text: str) -> str:
    t = text.strip()
    t = _LEAD.sub("", t).strip()
    return t


_CLAUSE = re.compile(r"[,;.!?:]\s+|\s+-+\s+|\s+(?:so|and\s+then|then)\s+", re.I)


def _imperative(clause: str) -> bool:
    """True when ``clause`` (a later part of a message) is itself a request."""
    c = _strip(clause)
    if _POLITE.match(c):
        return True
    words = re.findall(r"[a-z0-9][a-z0-9'’_-]*", c.lower())
    if not words or words[0] not in _VERBS:
        return False
    nxt = words[1] if len(words) > 1 else ""
    return not (nxt in _NOT_IMPERATIVE_NEXT or re.match(r"^[a-z]+ed$", nxt))


def speech_act(text: str) -> SpeechAct:
    """Classify the form of ``text`` (see the module docstring). Never raises.

    A report followed by a request ("the api is down, restart it", "disk is full - can
    you check?") is a request: every later clause is checked for an imperative."""
    act = _speech_act(text)
    if act is SpeechAct.STATEMENT and not _QUOTE.match(text.strip()) and not _NOTE.match(_strip(text)):
        if any(_imperative(c) for c in _CLAUSE.split(text.strip())[1:] if c.strip()):
            return SpeechAct.REQUEST
    return act


def _speech_act(text: str) -> SpeechAct:
    raw = text.strip()
    if not raw or _QUOTE.match(raw):
        return SpeechAct.STATEMENT
    t = _strip(raw)
    if not t:
        return SpeechAct.STATEMENT
    lower = t.lower()
    words = re.findall(r"[a-z0-9][a-z0-9'’_-]*", lower)
    if not words:
        return SpeechAct.STATEMENT
    first = words[0]
    question_mark = raw.rstrip().endswith("?")
    if _NOTE.match(t):
        return SpeechAct.STATEMENT
    if _POLITE.match(t):
        rest = _POLITE.sub("", t, count=1).strip()
        # "can you tell me why the disk filled up" is still a request to the bot
        return SpeechAct.REQUEST if rest else SpeechAct.STATEMENT
    if first in _VERBS:
        nxt = words[1] if len(words) > 1 else ""
        if nxt in _NOT_IMPERATIVE_NEXT or re.match(r"^[a-z]+ed$", nxt) and nxt not in ("need", "speed", "feed"):
            return SpeechAct.STATEMENT
        return SpeechAct.REQUEST
    if first in _Q_TOPIC or _TOPIC_PATTERNS.search(lower):
        return SpeechAct.TOPIC_QUESTION
    if first in _Q_PRESENT:
        return SpeechAct.QUESTION
    if _STATEMENT_OPENERS.match(lower):
        return SpeechAct.QUESTION if question_mark else SpeechAct.STATEMENT
    # a short verbless noun phrase ("disk usage", "system report please") is a request;
    # anything longer with a finite verb is narration ("error rates climbed to 7 percent").
    if len(words) <= 4 and not any(w in _NOT_IMPERATIVE_NEXT or re.match(r"^[a-z]{3,}ed$", w) for w in words):
        return SpeechAct.REQUEST
    return SpeechAct.QUESTION if question_mark else SpeechAct.STATEMENT


__all__ = ["SpeechAct", "speech_act"]
