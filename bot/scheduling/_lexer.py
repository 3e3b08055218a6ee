"""Tokenizer for the schedule part of a chat message.

Every token keeps its character span in the *original* message so that errors can
point at it. Kinds:

``word``     letters (``monday``, ``o'clock``); ``value`` is the lower-cased text
``num``      digits; ``value`` is the int
``ord``      ``4th`` / ``31st``; ``value`` is the int
``numx``     ``3x`` (a repeat count); ``value`` is the int
``time``     ``9am``, ``3 pm``, ``12:15am``, ``17:30``, ``9.30``; ``value`` is ``(h, m, s)`` on a
             24-hour clock, validated (``25pm`` / ``24:00`` / ``10:99`` raise)
``date``     ``8/1/2100`` (US month/day[/year], as the recurrent vectors use) or
             ``2025-03-30`` (ISO 8601); ``value`` is ``(year | None, month, day)``
``zone``     a word with ``/`` (``Europe/Berlin``); validated later
``punct``    ``,`` ``&`` ``-``
``other``    anything else; the grammar never accepts it

A ``.`` glued to a word (``wed.``) or ending the text is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ScheduleParseError

__all__ = ["Token", "tokenize"]


@dataclass(frozen=True, slots=True)
class Token:
    """One token: ``kind`` (see module doc), ``text`` as written, ``value``, ``start``/``end`` offsets."""

    kind: str
    text: str
    value: Any
    start: int
    end: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.value in words


_TOKEN_RE = re.compile(
    r"""
    (?P<zone>[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)+)
  | (?P<iso>\d{4}-\d{1,2}-\d{1,2})(?![\w/:])
  | (?P<date>\d{1,2}/\d{1,2}(?:/\d{2,4})?)(?![\w/:])
  | (?P<clock>\d{1,2})[:.](?P<cmin>\d{2})(?::(?P<csec>\d{2}))?
        (?:\s*(?P<cmer>[ap]\.m\.|[ap]m)|(?P<cmer1>[ap]))?(?![\w:])
  | (?P<hour>\d{1,2})(?:\s*(?P<hmer>[ap]\.m\.|[ap]m)|(?P<hmer1>[ap]))(?!\w)
  | (?P<ord>\d+)(?:st|nd|rd|th)(?!\w)
  | (?P<numx>\d+)x(?!\w)
  | (?P<num>\d+)(?![\w:/])
  | (?P<word>[A-Za-z]+(?:'[A-Za-z]+)?)
  | (?P<punct>[,&\-])
  | (?P<dot>\.)
  | (?P<other>\d+[A-Za-z_]\w*|[^\sA-Za-z0-9,&\-.]+|\S)
    """,
    re.VERBOSE | re.IGNORECASE,
)


def _time_value(h: int, m: int, s: int, meridiem: str | None, text: str, start: int,
                source: str) -> tuple[int, int, int]:
    def bad(why: str) -> ScheduleParseError:
        return ScheduleParseError(
            f"{text!r} is not a valid time of day ({why})",
            position=start,
            fragment=text,
            text=source,
            examples=("every day at 9am run X", "every day at 17:30 run X"),
        )

    if m > 59:
        raise bad("minutes run from 00 to 59")
    if s > 59:
        raise bad("seconds run from 00 to 59")
    if meridiem:
        if not 1 <= h <= 12:
            raise bad("with am/pm the hour runs from 1 to 12")
        pm = meridiem.lower().startswith("p")
        h = (h % 12) + (12 if pm else 0)
    elif h > 23:
        raise bad("the hour runs from 0 to 23 on a 24-hour clock")
    return (h, m, s)


def tokenize(source: str, start: int, end: int) -> list[Token]:
    """Tokenize ``source[start:end]``; offsets in the tokens are offsets into ``source``.

    Raises :class:`ScheduleParseError` for a time-like token that is out of range
    (``25pm``, ``13pm``, ``24:00``, ``10:99``): such a token cannot mean anything else.
    """
    tokens: list[Token] = []
    pos = start
    while pos < end:
        while pos < end and source[pos].isspace():
            pos += 1
        if pos >= end:
            break
        m = _TOKEN_RE.match(source, pos, end)
        assert m is not None  # the last alternative matches any non-space char
        text = m.group(0)
        s, e = m.start(), m.end()
        g = m.groupdict()
        if g["zone"]:
            tokens.append(Token("zone", text, text, s, e))
        elif g["iso"]:
            y, mo, d = (int(x) for x in text.split("-"))
            tokens.append(Token("date", text, (y, mo, d), s, e))
        elif g["date"]:
            parts = [int(x) for x in text.split("/")]
            year = None
            if len(parts) == 3:
                year = parts[2] + (2000 if parts[2] < 100 else 0)
            tokens.append(Token("date", text, (year, parts[0], parts[1]), s, e))
        elif g["clock"] is not None:
            mer = g["cmer"] or g["cmer1"]
            value = _time_value(int(g["clock"]), int(g["cmin"]), int(g["csec"] or 0), mer, text, s, source)
            tokens.append(Token("time", text, value, s, e))
        elif g["hour"] is not None:
            mer = g["hmer"] or g["hmer1"]
            value = _time_value(int(g["hour"]), 0, 0, mer, text, s, source)
            tokens.append(Token("time", text, value, s, e))
        elif g["ord"] is not None:
            tokens.append(Token("ord", text, int(g["ord"]), s, e))
        elif g["numx"] is not None:
            tokens.append(Token("numx", text, int(g["numx"]), s, e))
        elif g["num"] is not None:
            tokens.append(Token("num", text, int(g["num"]), s, e))
        elif g["word"]:
            tokens.append(Token("word", text, text.lower(), s, e))
        elif g["punct"]:
            tokens.append(Token("punct", text, text, s, e))
        elif g["dot"]:
            pass  # "wed." / trailing full stop
        else:
            tokens.append(Token("other", text, text, s, e))
        pos = e
    return tokens
