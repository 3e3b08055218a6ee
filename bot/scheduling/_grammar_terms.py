"""The schedule grammar's terms: what a clause is made of.

:class:`Terms` — the cursor, and the small parsers every clause uses (numbers,
units, days, months, times, dates, ordinals). The records they produce are in
:mod:`._draft`; the clauses themselves are in :mod:`._grammar`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from . import _vocab as V
from ._lexer import Token
from .errors import ScheduleParseError

from ._draft import _LABELS, DateRef, Draft, Fact, _Fail

__all__ = ["Terms"]


class Terms:
    """The cursor and the term parsers of the grammar (see the module doc)."""
    """Parses tokens ``toks`` of message ``source`` into a :class:`Draft` (see module doc)."""

    def __init__(self, toks: list[Token], source: str, end: int) -> None:
        self.toks = toks
        self.src = source
        self.end = end
        self.i = 0
        self.far = -1
        self.expected: list[str] = []
        self.draft = Draft()
        self.seen_rule = False

    # -- cursor helpers -----------------------------------------------------------------
    def peek(self, k: int = 0) -> Token | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def here(self) -> int:
        """Offset of the next token (end of the schedule part if none)."""
        t = self.peek()
        return t.start if t is not None else self.end

    def at_end(self) -> bool:
        return self.i >= len(self.toks)

    def fail(self, what: str) -> _Fail:
        if self.i > self.far:
            self.far, self.expected = self.i, [what]
        elif self.i == self.far and what not in self.expected:
            self.expected.append(what)
        return _Fail(what)

    def next(self) -> Token:
        t = self.peek()
        if t is None:
            raise self.fail("more words")
        self.i += 1
        return t

    def word(self, *words: str) -> Token:
        t = self.peek()
        if t is None or not t.is_word(*words):
            raise self.fail(" or ".join(repr(w) for w in words[:3]))
        self.i += 1
        return t

    def opt(self, *words: str) -> Token | None:
        t = self.peek()
        if t is not None and t.is_word(*words):
            self.i += 1
            return t
        return None

    def opt_punct(self, *ps: str) -> Token | None:
        t = self.peek()
        if t is not None and t.kind == "punct" and t.value in ps:
            self.i += 1
            return t
        return None

    def attempt(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn``; on a soft failure restore the cursor and return ``None``."""
        save = self.i
        try:
            return fn(*args, **kwargs)
        except _Fail:
            self.i = save
            return None

    def last_end(self) -> int:
        return self.toks[self.i - 1].end if self.i else 0

    def hard(self, message: str, tok: Token | None = None, *, pos: int | None = None, end: int | None = None,
             examples: tuple[str, str] | None = None) -> ScheduleParseError:
        if tok is not None:
            pos, end = tok.start, tok.end
        assert pos is not None
        frag = self.src[pos:end] if end is not None else ""
        kw = {"examples": examples} if examples else {}
        return ScheduleParseError(message, position=pos, fragment=frag, text=self.src, **kw)

    def sep(self) -> bool:
        """Consume a list separator (``,`` ``and`` ``&`` ``or`` ``, and``); say whether one was there."""
        save = self.i
        if self.opt_punct(",", "&"):
            self.opt("and", "or")
            return True
        if self.opt("and", "or"):
            return True
        self.i = save
        return False

    # -- small items --------------------------------------------------------------------
    def number(self, *, article: bool = False) -> tuple[int, Token]:
        t = self.peek()
        if t is not None:
            if t.kind == "num":
                self.i += 1
                return t.value, t
            if t.kind == "word" and t.value in V.NUMBER_WORDS:
                self.i += 1
                return V.NUMBER_WORDS[t.value], t
            if article and t.is_word("a", "an"):
                self.i += 1
                return 1, t
        raise self.fail("a number")

    def unit(self) -> tuple[str, int, Token]:
        t = self.peek()
        if t is not None and t.kind == "word" and t.value in V.UNITS:
            self.i += 1
            u, mult = V.UNITS[t.value]
            return u, mult, t
        raise self.fail(_LABELS["unit"])

    def interval_word(self) -> tuple[int, Token]:
        """``other`` = 2, ``3``, ``3rd``, ``third``, ``three``."""
        t = self.peek()
        if t is None:
            raise self.fail("a number")
        if t.is_word("other"):
            self.i += 1
            return 2, t
        if t.kind in ("num", "ord"):
            self.i += 1
            return t.value, t
        if t.kind == "word" and (t.value in V.ORDINAL_WORDS or t.value in V.NUMBER_WORDS):
            self.i += 1
            return V.ORDINAL_WORDS.get(t.value) or V.NUMBER_WORDS[t.value], t
        raise self.fail("a number")

    def check_interval(self, n: int, tok: Token) -> int:
        if n < 1:
            raise self.hard("an interval must be at least 1", tok)
        if n > V.MAX_INTERVAL:
            raise self.hard(f"{n} is too large for an interval (at most {V.MAX_INTERVAL})", tok)
        return n

    def weekday(self) -> tuple[int, bool, Token]:
        t = self.peek()
        if t is not None and t.kind == "word" and t.value in V.WEEKDAYS:
            self.i += 1
            wd, plural = V.WEEKDAYS[t.value]
            return wd, plural, t
        raise self.fail(_LABELS["weekday"])

    def month(self) -> tuple[int, Token]:
        t = self.peek()
        if t is not None and t.kind == "word" and t.value in V.MONTHS:
            self.i += 1
            return V.MONTHS[t.value], t
        raise self.fail(_LABELS["month"])

    def year(self) -> tuple[int, Token]:
        t = self.peek()
        if t is not None and t.kind == "num" and len(t.text) == 4 and 1900 <= t.value <= 2999:
            self.i += 1
            return t.value, t
        raise self.fail("a year")

    def day_number(self) -> tuple[int, Token]:
        """A day of the month as ``4th``, ``fourth`` or ``4``."""
        t = self.peek()
        if t is not None:
            if t.kind in ("ord", "num") and len(t.text.rstrip("stndrh")) <= 2:
                self.i += 1
                return t.value, t
            if t.kind == "word" and t.value in V.ORDINAL_WORDS:
                self.i += 1
                return V.ORDINAL_WORDS[t.value], t
        raise self.fail("a day of the month")

    def check_monthday(self, d: int, tok: Token, month: int | None = None) -> int:
        limit = 31 if month is None else (29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31)
        if not 1 <= d <= limit:
            where = f" of {V.MONTH_NAMES[month - 1]}" if month else " of a month"
            raise self.hard(f"there is no day {d}{where} (days run from 1 to {limit})", tok)
        return d

    # -- lists --------------------------------------------------------------------------
    def daylist(self) -> tuple[tuple[int, ...], bool, int, int]:
        """Weekday list with ranges: ``monday, wednesday and friday``, ``tuesday-saturday``,
        ``saturdays through tuesdays``, ``weekdays``, ``weekends``.

        Returns ``(weekdays, plural, start, end)``; ``plural`` when any item was plural
        or a group word (``weekdays``) — a repeating rule.
        """
        out: list[int] = []
        plural = False
        start = self.here()

        def item() -> bool:
            nonlocal plural
            t = self.peek()
            if t is not None and t.kind == "word" and t.value in V.DAY_GROUPS:
                self.i += 1
                days, pl = V.DAY_GROUPS[t.value]
                plural = plural or pl or t.value in ("weekday", "weekend")
                out.extend(d for d in days if d not in out)
                return True
            wd, pl, _ = self.weekday()
            plural = plural or pl
            save = self.i
            if self.opt_punct("-") or self.opt("through", "thru", "to", "till", "until"):
                got = self.attempt(self.weekday)
                if got is not None:
                    wd2, pl2, _ = got
                    plural = True  # a range of days ("mon-fri") repeats
                    d = wd
                    while True:
                        if d not in out:
                            out.append(d)
                        if d == wd2:
                            break
                        d = (d + 1) % 7
                    return True
                self.i = save
            if wd not in out:
                out.append(wd)
            return True

        item()
        while True:
            save = self.i
            if not self.sep():
                break
            if self.attempt(item) is None:
                self.i = save
                break
        if len(out) > 1:
            plural = True  # "monday and thursday at 9am": several days repeat weekly
        return tuple(out), plural, start, self.last_end()

    def monthlist(self) -> tuple[tuple[int, ...], int, int]:
        """``january``, ``january, april and july``, ``january-march``, ``january through march``."""
        out: list[int] = []
        start = self.here()

        def item() -> bool:
            m, _ = self.month()
            save = self.i
            if self.opt_punct("-") or self.opt("through", "thru", "to", "till", "until"):
                got = self.attempt(self.month)
                if got is not None:
                    m2 = got[0]
                    x = m
                    while True:
                        if x not in out:
                            out.append(x)
                        if x == m2:
                            break
                        x = x % 12 + 1
                    return True
                self.i = save
            if m not in out:
                out.append(m)
            return True

        item()
        while True:
            save = self.i
            if not self.sep():
                break
            # "in march 2011 and may 2011": a month followed by a year ends the list
            if self.attempt(item) is None:
                self.i = save
                break
        return tuple(out), start, self.last_end()

    def daynumlist(self, month: int | None = None) -> tuple[tuple[int, ...], int, int]:
        """Days of the month: ``21st and 31st``, ``20 and 30``, ``15``."""
        out: list[int] = []
        start = self.here()
        d, t = self.day_number()
        out.append(self.check_monthday(d, t, month))
        while True:
            save = self.i
            if not self.sep():
                break
            got = self.attempt(self.day_number)
            if got is None:
                self.i = save
                break
            nxt = self.peek()
            if nxt is not None and (nxt.is_word("day", "days") or nxt.kind == "word" and nxt.value in V.WEEKDAYS):
                self.i = save  # "2nd and 4th friday": not a day number list
                break
            out.append(self.check_monthday(got[0], got[1], month))
        return tuple(out), start, self.last_end()

    # -- times --------------------------------------------------------------------------
    def time(self, *, bare_numbers: bool) -> tuple[tuple[int, int, int], Token]:
        t = self.peek()
        if t is None:
            raise self.fail(_LABELS["time"])
        if t.kind == "time":
            self.i += 1
            return t.value, t
        if t.is_word("noon", "midday"):
            self.i += 1
            return (12, 0, 0), t
        if t.is_word("midnight"):
            self.i += 1
            return (0, 0, 0), t
        if t.kind == "num" and len(t.text) <= 2:
            nxt = self.peek(1)
            oclock = nxt is not None and nxt.is_word("o'clock", "oclock")
            if oclock or bare_numbers:
                if t.value > 23:
                    raise self.hard(f"{t.text!r} is not an hour (0 to 23)", t)
                self.i += 2 if oclock else 1
                return (t.value, 0, 0), t
        raise self.fail(_LABELS["time"])

    def timelist(self, *, bare_numbers: bool) -> tuple[tuple[tuple[int, int, int], ...], int, int]:
        start = self.here()
        out = [self.time(bare_numbers=bare_numbers)[0]]
        while True:
            save = self.i
            if not self.sep():
                break
            got = self.attempt(self.time, bare_numbers=bare_numbers)
            if got is None:
                self.i = save
                break
            if got[0] not in out:
                out.append(got[0])
        return tuple(out), start, self.last_end()

    # -- dates --------------------------------------------------------------------------
    def dateref(self, *, month_only: bool = True, bare_weekday: bool = True, with_time: bool = False) -> DateRef:
        """A single day (see :class:`DateRef`); ``with_time`` also takes ``[at] time``."""
        start_tok = self.peek()
        if start_tok is None:
            raise self.fail(_LABELS["date"])
        ref = self._dateref_core(month_only=month_only, bare_weekday=bare_weekday)
        if with_time:
            save = self.i
            self.opt("at")
            got = self.attempt(self.time, bare_numbers=self.toks[self.i - 1].is_word("at") if self.i else False)
            if got is None:
                self.i = save
            else:
                ref = replace(ref, time=got[0], end=self.last_end())
        return ref

    def _dateref_core(self, *, month_only: bool, bare_weekday: bool) -> DateRef:
        t = self.peek()
        assert t is not None
        s = t.start
        if t.is_word("today", "tonight"):
            self.i += 1
            return DateRef("days", s, t.end, n=0)
        if t.is_word("tomorrow"):
            self.i += 1
            return DateRef("days", s, t.end, n=1)
        if t.is_word("this", "next", "coming"):
            self.i += 1
            mode = "next" if t.value == "next" else "this"
            u = self.peek()
            if u is not None and mode == "next" and u.is_word("week", "month", "year"):
                self.i += 1
                return DateRef("next_unit", s, u.end, unit=u.value)
            wd, _, w = self.weekday()
            return DateRef("weekday", s, w.end, wd=wd, mode=mode)
        if t.kind == "date":
            self.i += 1
            y, m, d = t.value
            if not 1 <= m <= 12:
                raise self.hard(f"{t.text!r}: there is no month {m} (dates are month/day/year)", t)
            self.check_monthday(d, t, m)
            return DateRef("md", s, t.end, month=m, day=d, year=y)
        for alt in (self._date_month_first, self._date_day_first, self._date_nthwd, self._date_weekday_md):
            got = self.attempt(alt)
            if got is not None:
                return got
        if month_only:
            got = self.attempt(self._date_month_only)
            if got is not None:
                return got
        if bare_weekday:
            wd, plural, w = self.weekday()
            if not plural:
                return DateRef("weekday", s, w.end, wd=wd, mode="bare")
        raise self.fail(_LABELS["date"])

    def _opt_year(self) -> int | None:
        save = self.i
        self.opt_punct(",")
        got = self.attempt(self.year)
        if got is None:
            self.i = save
            return None
        return got[0]

    def _date_month_first(self) -> DateRef:
        m, mt = self.month()
        self.opt("the")
        d, dt = self.day_number()
        nxt = self.peek()
        if nxt is not None and (nxt.is_word("day", "days") or nxt.kind == "word" and nxt.value in V.WEEKDAYS):
            raise self.fail("a day of the month")
        self.check_monthday(d, dt, m)
        y = self._opt_year()
        return DateRef("md", mt.start, self.last_end(), month=m, day=d, year=y)

    def _date_day_first(self) -> DateRef:
        start = self.here()
        self.opt("the")
        d, dt = self.day_number()
        self.opt("of")
        m, _ = self.month()
        self.check_monthday(d, dt, m)
        y = self._opt_year()
        return DateRef("md", start, self.last_end(), month=m, day=d, year=y)

    def _date_nthwd(self) -> DateRef:
        start = self.here()
        self.opt("the")
        n, nt = self.ordinal_item()
        wd, _, _ = self.weekday()
        self.word("in", "of")
        m, _ = self.month()
        y = self._opt_year()
        self.check_nth(n, nt, 5)
        return DateRef("nthwd", start, self.last_end(), nth=n, wd=wd, month=m, year=y)

    def _date_weekday_md(self) -> DateRef:
        wd, plural, w = self.weekday()
        if plural:
            raise self.fail("a date")
        self.opt_punct(",")
        inner = self.attempt(self._date_month_first) or self._date_day_first()
        return DateRef("md", w.start, inner.end, month=inner.month, day=inner.day, year=inner.year, wd=wd)

    def _date_month_only(self) -> DateRef:
        m, mt = self.month()
        y = self._opt_year()
        return DateRef("month", mt.start, self.last_end(), month=m, year=y)

    # -- ordinals -----------------------------------------------------------------------
    def ordinal_item(self) -> tuple[int, Token]:
        """``4th`` / ``fourth`` / ``last`` / ``2nd to [the] last`` -> int (negative from the end)."""
        t = self.peek()
        if t is None:
            raise self.fail("an ordinal such as 1st or last")
        if t.is_word("last"):
            self.i += 1
            return -1, t
        if t.kind == "ord":
            n = t.value
        elif t.kind == "word" and t.value in V.ORDINAL_WORDS:
            n = V.ORDINAL_WORDS[t.value]
        else:
            raise self.fail("an ordinal such as 1st or last")
        self.i += 1
        save = self.i
        if self.opt("to", "from"):
            self.opt("the")
            if self.opt("last"):
                return -n, t
            self.i = save
        return n, t

    def check_nth(self, n: int, tok: Token, limit: int) -> int:
        if n == 0 or abs(n) > limit:
            raise self.hard(f"{tok.text!r}: a month has at most {limit} of each weekday", tok)
        return n

    def ordinal_list(self) -> list[tuple[int, Token]]:
        out = [self.ordinal_item()]
        while True:
            save = self.i
            if not self.sep():
                break
            self.opt("the")
            got = self.attempt(self.ordinal_item)
            if got is None:
                self.i = save
                break
            out.append(got)
        return out

    def ordinal_construct(self, *, need_period: bool) -> list[Fact]:
        """``[the] ordinals [weekday | day | instance of days] [(of|in) period]``.

        Examples: "4th of every month", "every 4th and 10th of the month", "2nd to the
        last friday of each month", "first and third friday and second tuesday of each
        month", "31st day of every year", "first and last instance of wed and fri",
        "beginning of each month", "35th day", "2nd fri in feb 2010".
        """
        facts: list[Fact] = []
        start = self.here()
        said_the = self.opt("the") is not None
        t = self.peek()
        if t is not None and t.is_word("beginning", "start", "end"):
            self.i += 1
            self.word("of")
            per = self.period_ref()
            val = -1 if t.value == "end" else 1
            return [Fact("monthdays", (val,), start, self.last_end()), *per]
        ords = self.ordinal_list()
        nxt = self.peek()
        kind = "days"
        groups: list[tuple[int, int]] = []
        if nxt is not None and nxt.kind == "word" and nxt.value in V.WEEKDAYS:
            kind = "nthwd"
            wd, _, _ = self.weekday()
            groups.extend((n, wd) for n, _ in ords)
            # "... friday and second tuesday"
            while True:
                save = self.i
                if not self.sep():
                    break
                more = self.attempt(self._ord_weekday_group)
                if more is None:
                    self.i = save
                    break
                groups.extend(more[0])
                ords.extend(more[1])
        elif nxt is not None and nxt.is_word("instance", "instances", "occurrence", "occurrences"):
            self.i += 1
            self.word("of")
            days, _, _, _ = self.daylist()
            facts.append(Fact("setpos", tuple(n for n, _ in ords), start, self.last_end()))
            facts.append(Fact("weekdays", tuple((None, d) for d in days), start, self.last_end()))
            kind = "setpos"
        said_day = False
        if kind == "days" and self.opt("day", "days"):
            said_day = True
        save = self.i
        per: list[Fact] = []
        if self.opt("of", "in"):
            got = self.attempt(self.period_ref)
            if got is None:
                self.i = save
                if need_period:
                    self.i += 1
                    raise self.fail("'each month', 'the month', 'every year' or a month name")
            else:
                per = got
        elif need_period:
            raise self.fail("'of' or 'in' followed by a period such as 'each month'")
        end = self.last_end()
        if kind == "nthwd":
            lim = 53 if any(f.key == "period" and f.value[0] == "year" for f in per) and not any(
                f.key == "months" for f in per) else 5
            for (n, tok) in ords:
                self.check_nth(n, tok, lim)
            facts.append(Fact("weekdays", tuple(groups), start, end))
        elif kind == "days":
            if not per and not said_day and not said_the and any(tok.kind == "word" for _, tok in ords):
                raise self.fail("'day' or 'of the month'")  # a bare "first"/"last" is not a date
            for n, tok in ords:
                if n == 0 or abs(n) > 366:
                    raise self.hard(f"{tok.text!r} is not a day number", tok)
            facts.append(Fact("day_ordinals", (tuple(n for n, _ in ords), said_day), start, end))
        facts.extend(per)
        return facts

    def _ord_weekday_group(self) -> tuple[list[tuple[int, int]], list[tuple[int, Token]]]:
        self.opt("the")
        ords = self.ordinal_list()
        wd, _, _ = self.weekday()
        return [(n, wd) for n, _ in ords], ords

    def period_ref(self) -> list[Fact]:
        """After "of"/"in": ``(each|every) [other|N|Nth] month|year``, ``the month``,
        ``month [year]``, ``year``."""
        t = self.peek()
        if t is None:
            raise self.fail("a period")
        s = t.start
        if t.is_word("each", "every"):
            self.i += 1
            n = 1
            got = self.attempt(self.interval_word)
            if got is not None:
                n = self.check_interval(*got)
            u, mult, ut = self.unit()
            if u not in ("month", "year"):
                raise self.fail("'month' or 'year'")
            return [Fact("period", (u, n * mult, True), s, ut.end)]
        if t.is_word("the", "a"):
            self.i += 1
            u, _, ut = self.unit()
            if u not in ("month", "year"):
                raise self.fail("'month' or 'year'")
            return [Fact("period", (u, 1, True), s, ut.end)]
        got = self.attempt(self.year)
        if got is not None:
            return [Fact("year", got[0], s, got[1].end)]
        months, ms, me = self.monthlist()
        facts = [Fact("months", months, ms, me)]
        y = self._opt_year()
        if y is not None:
            facts.append(Fact("year", y, ms, self.last_end()))
        return facts
