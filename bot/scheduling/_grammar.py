"""Recursive-descent grammar: schedule tokens -> :class:`Draft` (facts with positions).

The grammar is a loop over *clauses* (ordered choice, backtracking inside a clause);
every token must be consumed by some clause, otherwise the parse fails at the
furthest position any clause reached. Clauses (``[]`` optional, ``|`` choice)::

    every    (every|each) [other|N|Nth] unit | ... half hour | ... quarter hour | ... day list
             | ... ordinal day(s) of|in period | ... month day(s) | ... month list
    adverb   daily|weekly|monthly|quarterly|yearly|annually|hourly|minutely|fortnightly
             | once (a|an|per|every) unit
    ordinal  [the] ordinals [weekday(s) | day | instance of day list] [(of|in) period]
             ("4th of every month", "2nd to the last friday of each month", "35th day")
    at       at times | at the (beginning|start|end) [of the month]
    on       on (ordinal construct | date | day list | day N, M | N, M)
    in       in (IANA zone | UTC | week N | months [year] | year | N units [and N units])
    between  between (months | weekdays | times) and ...
    from     from time to time | from date [to|until date]
    starting (starting|beginning) ([on|in|from] date | [at] time | now);  from now [on]
    until    (until|till|through) date
    for      for [up to] [the] [next] [N] units | for N times|occurrences | for Nx
    count    Nx | twice | thrice | [up to] N times   (only after the repeating rule)
    except   except [for|on|in] item (and item)*   item: date [at time] | month [year]
             | day list | each/every/daily... rule
    time     9am | 17:30 | 10 o'clock | noon | midnight      (without "at")
    relative N units from now
    days     day list ("tuesdays", "weekends", "monday and thursday")
    date     today | tomorrow | this/next weekday | month day [year] | M/D[/Y] | ISO date
    zone     Europe/Berlin | UTC

The grammar only records *what was said* (facts); :mod:`._build` decides what it
means (frequency, defaults, one-off vs. repeating) and reports contradictions.
"""

from __future__ import annotations

import difflib

from . import _vocab as V
from ._lexer import Token
from .errors import ScheduleParseError
from ._draft import _LABELS, DateRef, Draft, Exclusion, Fact
from ._grammar_terms import Terms

__all__ = ["Draft", "DateRef", "Exclusion", "Fact", "parse_tokens"]


class Parser(Terms):
    """Parses tokens ``toks`` of message ``source`` into a :class:`Draft` (see module doc)."""

    # -- clauses ------------------------------------------------------------------------
    def c_every(self) -> list[Fact]:
        t = self.word("every", "each")
        s = t.start
        for alt in (self._every_ordinal, self._every_unit, self._every_days, self._every_month_days,
                    self._every_months):
            got = self.attempt(alt, s)
            if got is not None:
                if not any(f.key in ("period", "sub") for f in got):
                    got.append(Fact("recurring", True, s, self.last_end()))
                return got
        raise self.fail(_LABELS["every"])

    def _every_ordinal(self, s: int) -> list[Fact]:
        return self.ordinal_construct(need_period=True)

    def fraction_of_hour(self) -> tuple[str, int, Token]:
        """``half [an] hour`` = 30 minutes, ``quarter [of an] hour`` = 15 minutes."""
        t = self.word("half", "quarter")
        if t.value == "quarter":
            self.opt("of")
        self.opt("an", "a")
        h = self.word("hour")
        return "minute", 30 if t.value == "half" else 15, h

    def _every_unit(self, s: int) -> list[Fact]:
        got = self.attempt(self.fraction_of_hour)
        if got is not None:
            u, n, ut = got
            return self._unit_facts(u, n, s, ut)
        n, ntok = 1, None
        got = self.attempt(self._interval_then_unit)
        if got is None:
            u, mult, ut = self.unit_or_group()
        else:
            (n, ntok), (u, mult, ut) = got
            n = self.check_interval(n, ntok)
        return self._unit_facts(u, n * mult, s, ut)

    def _interval_then_unit(self) -> tuple[tuple[int, Token], tuple[str, int, Token]]:
        iv = self.interval_word()
        return iv, self.unit_or_group()

    def unit_or_group(self) -> tuple[str, int, Token]:
        t = self.peek()
        if t is not None and t.is_word("weekday", "weekdays", "weekend", "weekends"):
            self.i += 1
            return t.value.rstrip("s"), 1, t
        return self.unit()

    def _unit_facts(self, u: str, n: int, s: int, ut: Token) -> list[Fact]:
        if u in V.SUBDAILY:
            return [Fact("sub", (u, n), s, ut.end)]
        if u in ("weekday", "weekend"):
            days = V.DAY_GROUPS[u][0]
            return [Fact("period", ("week", n, False), s, ut.end),
                    Fact("weekdays", tuple((None, d) for d in days), ut.start, ut.end)]
        return [Fact("period", (u, n, True), s, ut.end)]

    def _every_days(self, s: int) -> list[Fact]:
        n = 1
        got = self.attempt(self.interval_word)
        if got is not None:
            n = self.check_interval(*got)
        days, _, ds, de = self.daylist()
        return [Fact("period", ("week", n, False), s, de),
                Fact("weekdays", tuple((None, d) for d in days), ds, de)]

    def _every_month_days(self, s: int) -> list[Fact]:
        m, mt = self.month()
        self.opt("the")
        days, ds, de = self.daynumlist(m)
        return [Fact("period", ("year", 1, False), s, de), Fact("months", (m,), mt.start, mt.end),
                Fact("monthdays", days, ds, de)]

    def _every_months(self, s: int) -> list[Fact]:
        months, ms, me = self.monthlist()
        return [Fact("period", ("year", 1, False), s, me), Fact("months", months, ms, me)]

    def c_adverb(self) -> list[Fact]:
        t = self.peek()
        if t is not None and t.kind == "word" and t.value in V.ADVERBS:
            self.i += 1
            u, n = V.ADVERBS[t.value]
            return self._unit_facts(u, n, t.start, t)
        t = self.word("once")
        self.word("a", "an", "per", "each", "every")
        u, mult, ut = self.unit()
        return self._unit_facts(u, mult, t.start, ut)

    def c_ordinal(self) -> list[Fact]:
        return self.ordinal_construct(need_period=False)

    def c_at(self) -> list[Fact]:
        t = self.word("at")
        nxt = self.peek()
        if nxt is not None and nxt.is_word("the"):
            self.i += 1
            w = self.word("beginning", "start", "end")
            save = self.i
            if self.opt("of"):
                if self.attempt(self.period_ref) is None:
                    self.i = save
            return [Fact("monthdays", (-1 if w.value == "end" else 1,), t.start, self.last_end())]
        times, ts, te = self.timelist(bare_numbers=True)
        return [Fact("times", times, t.start, te)]

    def c_time(self) -> list[Fact]:
        times, ts, te = self.timelist(bare_numbers=False)
        return [Fact("times", times, ts, te)]

    def c_on(self) -> list[Fact]:
        t = self.word("on")
        s = t.start
        for alt in (self._on_day_word, self._on_month_days, self._on_date, self._on_ordinal, self._on_days,
                    self._on_numbers):
            got = self.attempt(alt, s)
            if got is not None:
                return got
        raise self.fail("a day, a date or an ordinal such as 'the 1st'")

    def _on_day_word(self, s: int) -> list[Fact]:
        self.opt("the")
        self.word("day", "days")
        nums, ns, ne = self._plain_numbers(366)
        return [Fact("day_ordinals", (nums, True), s, ne)]

    def _plain_numbers(self, limit: int) -> tuple[tuple[int, ...], int, int]:
        start = self.here()
        out = []

        def one() -> bool:
            t = self.peek()
            if t is None or t.kind not in ("num", "ord"):
                raise self.fail("a number")
            self.i += 1
            if not 1 <= t.value <= limit:
                raise self.hard(f"{t.text!r} is out of range (1 to {limit})", t)
            out.append(t.value)
            return True

        one()
        while True:
            save = self.i
            if not self.sep():
                break
            if self.attempt(one) is None:
                self.i = save
                break
        return tuple(out), start, self.last_end()

    def _on_month_days(self, s: int) -> list[Fact]:
        """``on december 21st and 31st`` / ``on Dec 25``: a month with one or more days."""
        m, mt = self.month()
        self.opt("the")
        days, ds, de = self.daynumlist(m)
        if len(days) < 2:
            raise self.fail("more than one day")  # a single date (maybe with a year) is _on_date
        return [Fact("months", (m,), mt.start, mt.end), Fact("monthdays", days, ds, de)]

    def _on_date(self, s: int) -> list[Fact]:
        return self.date_facts(allow_bare_weekday=False)

    def _on_ordinal(self, s: int) -> list[Fact]:
        return self.ordinal_construct(need_period=False)

    def _on_days(self, s: int) -> list[Fact]:
        return self.c_days()

    def _on_numbers(self, s: int) -> list[Fact]:
        t = self.peek()
        nums = []
        if t is None or t.kind != "num":
            raise self.fail("a day of the month")
        start = t.start
        while True:
            t = self.peek()
            if t is None or t.kind != "num" or len(t.text) > 2:
                raise self.fail("a day of the month")
            self.i += 1
            nums.append(self.check_monthday(t.value, t))
            save = self.i
            if not self.sep() or self.peek() is None or self.peek().kind != "num":
                self.i = save
                break
        return [Fact("monthdays", tuple(nums), start, self.last_end())]

    def c_in(self) -> list[Fact]:
        t = self.word("in")
        z = self.peek()
        if z is not None and (z.kind == "zone" or z.is_word("utc", "gmt")):
            self.i += 1
            return [Fact("zone", z.text if z.kind == "zone" else "UTC", z.start, z.end)]  # points at the name
        if z is not None and z.kind == "word" and z.text.isupper() and 3 <= len(z.text) <= 5 \
                and z.value not in V.MONTHS:
            raise self.hard(f"{z.text!r} is ambiguous as a time zone (abbreviations ignore daylight saving); "
                            "use an IANA name such as Europe/Berlin or America/New_York", z,
                            examples=("at 9am on weekdays in Europe/Berlin run X",
                                      "every day at 17:30 in America/New_York run X"))
        if z is not None and z.is_word("week", "weeks"):
            self.i += 1
            nums, ns, ne = self._plain_numbers(53)
            return [Fact("weeknos", nums, t.start, ne)]
        got = self.attempt(self._duration)
        if got is not None:
            (u, n), end = got
            return [Fact("relative", (u, n), t.start, end)]
        got = self.attempt(self.year)
        if got is not None:
            return [Fact("year", got[0], t.start, got[1].end)]
        months, ms, me = self.monthlist()
        facts = [Fact("months", months, t.start, me)]
        y = self._opt_year()
        if y is not None:
            facts.append(Fact("year", y, t.start, self.last_end()))
        return facts

    def _duration(self) -> tuple[tuple[str, int], int]:
        """``2 hours``, ``an hour``, ``half an hour``, ``1 hour and 30 minutes`` -> ``((unit, n), end)``;
        a compound of hours/minutes/seconds becomes seconds."""
        (u, n), end = self._duration_part()
        parts = [(u, n)]
        while True:
            save = self.i
            if not self.sep():
                break
            more = self.attempt(self._duration_part)
            if more is None or more[0][0] not in V.SUBDAILY or u not in V.SUBDAILY:
                self.i = save
                break
            parts.append(more[0])
            end = more[1]
        if len(parts) == 1:
            return (u, n), end
        return ("second", sum(k * V.UNIT_SECONDS[unit] for unit, k in parts)), end

    def _duration_part(self) -> tuple[tuple[str, int], int]:
        got = self.attempt(self.fraction_of_hour)
        if got is not None:
            return (got[0], got[1]), got[2].end
        n, nt = self.number(article=True)
        if self.opt("half"):  # "in an hour and a half" is not supported; "half" alone neither
            raise self.fail(_LABELS["unit"])
        u, mult, ut = self.unit()
        if n < 1 or n > V.MAX_INTERVAL:
            raise self.hard(f"{n} is out of range for a duration", nt)
        return (u, n * mult), ut.end

    def c_relative(self) -> list[Fact]:
        s = self.here()
        (u, n), _ = self._duration()
        self.word("from", "later")
        if self.toks[self.i - 1].is_word("from"):
            self.word("now")
        return [Fact("relative", (u, n), s, self.last_end())]

    def c_between(self) -> list[Fact]:
        t = self.word("between")
        for alt in (self._between_months, self._between_days, self._between_times):
            got = self.attempt(alt, t.start)
            if got is not None:
                return got
        raise self.fail("two months, two days or two times")

    def _between_months(self, s: int) -> list[Fact]:
        a, _ = self.month()
        self.word("and")
        b, bt = self.month()
        out, x = [], a
        while True:
            out.append(x)
            if x == b:
                break
            x = x % 12 + 1
        return [Fact("months", tuple(out), s, bt.end)]

    def _between_days(self, s: int) -> list[Fact]:
        a, _, _ = self.weekday()
        self.word("and")
        b, _, bt = self.weekday()
        out, x = [], a
        while True:
            out.append(x)
            if x == b:
                break
            x = (x + 1) % 7
        return [Fact("weekdays", tuple((None, d) for d in out), s, bt.end)]

    def _between_times(self, s: int) -> list[Fact]:
        a, _ = self.time(bare_numbers=True)
        self.word("and")
        b, bt = self.time(bare_numbers=True)
        return [Fact("time_range", (a, b), s, bt.end)]

    def c_from(self) -> list[Fact]:
        t = self.word("from")
        got = self.attempt(self._from_times, t.start)
        if got is not None:
            return got
        a = self.dateref(with_time=False)
        facts = [Fact("dtstart", a, t.start, a.end)]
        save = self.i
        if self.opt("to", "until", "till", "through", "thru") or self.opt_punct("-"):
            b = self.attempt(self.dateref)
            if b is None:
                self.i = save
            else:
                facts.append(Fact("until", b, b.pos, b.end))
        return facts

    def _from_times(self, s: int) -> list[Fact]:
        a, _ = self.time(bare_numbers=True)
        if not (self.opt("to", "until", "till", "through", "thru") or self.opt_punct("-")):
            raise self.fail("'to'")
        b, bt = self.time(bare_numbers=True)
        return [Fact("time_range", (a, b), s, bt.end)]

    def c_starting(self) -> list[Fact]:
        t = self.word("starting", "beginning", "commencing", "effective")
        if self.opt("now", "immediately"):  # the default: nothing to record
            return []
        at = self.opt("on", "in", "from", "at")
        if at is None or at.value == "at":
            got = self.attempt(self.timelist, bare_numbers=at is not None)
            if got is not None:  # "every 3 hours starting at 9am": the time the grid runs through
                return [Fact("times", got[0], t.start, got[2])]
        ref = self.dateref(with_time=True)
        return [Fact("dtstart", ref, t.start, ref.end)]

    def c_from_now_on(self) -> list[Fact]:
        self.word("from")
        self.word("now")
        self.opt("on")
        return []

    def c_until(self) -> list[Fact]:
        t = self.word("until", "till", "til", "through", "thru", "ending")
        self.opt("on", "in")
        ref = self.dateref(with_time=True)
        return [Fact("until", ref, t.start, ref.end)]

    def c_for(self) -> list[Fact]:
        t = self.word("for")
        got = self.attempt(self._count_body)
        if got is not None:
            return [Fact("count", got[0], t.start, got[1])]
        if self.opt("up"):
            self.word("to")
        self.opt("the")
        self.opt("next")
        save = self.i
        n = 1
        got = self.attempt(self.number, article=True)
        if got is not None:
            n = got[0]
        u, mult, ut = self.unit()
        if n < 1 or n > V.MAX_INTERVAL:
            raise self.hard(f"{n} is out of range for a duration", self.toks[save])
        return [Fact("until", ("for", u, n * mult), t.start, ut.end)]

    def _count_body(self) -> tuple[int, int]:
        if self.opt("up"):
            self.word("to")
        t = self.peek()
        if t is not None and t.kind == "numx":
            self.i += 1
            return self._check_count(t.value, t), t.end
        n, nt = self.number()
        w = self.word("times", "time", "occurrences", "occurrence", "runs", "run")
        if w.value in ("run", "runs"):  # "for 3 runs" is fine, but never swallow the workflow's "run"
            raise self.fail("'times'")
        return self._check_count(n, nt), w.end

    def _check_count(self, n: int, tok: Token) -> int:
        if not 1 <= n <= V.MAX_INTERVAL:
            raise self.hard(f"{n} is out of range for a repeat count", tok)
        return n

    def c_count(self) -> list[Fact]:
        if not self.seen_rule:
            raise self.fail("a repeat such as 'every day' before the count")
        t = self.peek()
        if t is not None and t.is_word("twice", "thrice"):
            self.i += 1
            return [Fact("count", 2 if t.value == "twice" else 3, t.start, t.end)]
        s = t.start if t else self.end
        n, end = self._count_body()
        return [Fact("count", n, s, end)]

    def c_except(self) -> list[Fact]:
        self.word("except", "excluding", "but")
        if self.toks[self.i - 1].is_word("but"):
            self.word("not")
        items: list[Exclusion] = [self._except_item()]
        while True:
            save = self.i
            if not self.sep():
                break
            got = self.attempt(self._except_item)
            if got is None:
                self.i = save
                break
            items.append(got)
        return [Fact("exclusions", tuple(items), items[0].pos, self.last_end())]

    def _except_item(self) -> Exclusion:
        self.opt("for", "on", "in")
        t = self.peek()
        if t is None:
            raise self.fail("a day, a month or a date")
        if t.is_word("each", "every") or (t.kind == "word" and t.value in V.ADVERBS):
            sub = self.attempt(self._except_rule)
            if sub is not None:
                return Exclusion("rule", t.start, rule=sub)
        save = self.i
        got = self.attempt(self.daylist)
        if got is not None:
            nxt = self.peek()
            followed_by_date = nxt is not None and (
                nxt.kind in ("ord", "num", "date") or nxt.is_word("the")
                or (nxt.kind == "punct" and nxt.value == "," and self.peek(1) is not None
                    and self.peek(1).kind == "word" and self.peek(1).value in V.MONTHS))
            if not followed_by_date:
                return Exclusion("weekdays", t.start, weekdays=got[0])
            self.i = save
        ref = self.dateref(month_only=True, bare_weekday=False, with_time=True)
        return Exclusion("date", t.start, ref=ref)

    def _except_rule(self) -> "Draft":
        sub = Parser(self.toks, self.src, self.end)
        sub.i = self.i
        sub.far = self.far
        start = self.here()
        clauses = (sub.c_every, sub.c_adverb, sub.c_at, sub.c_on, sub.c_in_months)
        progressed = False
        while not sub.at_end():
            for c in clauses:
                facts = sub.attempt(c)
                if facts is not None:
                    sub.apply(facts)
                    progressed = True
                    break
            else:
                break
        if not progressed:
            raise self.fail("a repeat such as 'each 2nd monday in march'")
        self.i = sub.i
        sub.draft.start, sub.draft.end = start, self.last_end()
        return sub.draft

    def c_in_months(self) -> list[Fact]:
        t = self.word("in")
        months, ms, me = self.monthlist()
        return [Fact("months", months, t.start, me)]

    def c_days(self) -> list[Fact]:
        days, plural, ds, de = self.daylist()
        facts = [Fact("weekdays", tuple((None, d) for d in days), ds, de)]
        if plural:
            facts.append(Fact("recurring", True, ds, de))
        return facts

    def date_facts(self, *, allow_bare_weekday: bool) -> list[Fact]:
        ref = self.dateref(month_only=False, bare_weekday=allow_bare_weekday)
        return self.dateref_facts(ref)

    def dateref_facts(self, ref: DateRef) -> list[Fact]:
        if ref.kind == "md":
            facts = [Fact("months", (ref.month,), ref.pos, ref.end), Fact("monthdays", (ref.day,), ref.pos, ref.end)]
            if ref.year is not None:
                facts.append(Fact("year", ref.year, ref.pos, ref.end))
            if ref.wd is not None:
                facts.append(Fact("weekdays", ((None, ref.wd),), ref.pos, ref.end))
            return facts
        if ref.kind == "nthwd":
            facts = [Fact("months", (ref.month,), ref.pos, ref.end),
                     Fact("weekdays", ((ref.nth, ref.wd),), ref.pos, ref.end)]
            if ref.year is not None:
                facts.append(Fact("year", ref.year, ref.pos, ref.end))
            return facts
        if ref.kind == "weekday" and ref.mode == "bare":
            return [Fact("weekdays", ((None, ref.wd),), ref.pos, ref.end)]
        return [Fact("date_rel", ref, ref.pos, ref.end)]

    def c_date(self) -> list[Fact]:
        return self.date_facts(allow_bare_weekday=False)

    def c_zone(self) -> list[Fact]:
        t = self.peek()
        if t is not None and t.is_word("utc", "gmt"):
            self.i += 1
            return [Fact("zone", "UTC", t.start, t.end)]
        if t is None or t.kind != "zone":
            raise self.fail(_LABELS["zone"])
        self.i += 1
        return [Fact("zone", t.text, t.start, t.end)]

    def c_comma(self) -> list[Fact]:
        if self.opt_punct(",") is None:
            raise self.fail("','")
        return []

    # -- applying facts -----------------------------------------------------------------
    def apply(self, facts: list[Fact]) -> None:
        d = self.draft
        for f in facts:
            if f.key == "exclusions":
                d.exclusions.extend(f.value)
                if "exclusions" not in d.facts:
                    d.facts["exclusions"] = f
                continue
            if f.key == "period" and "period" in d.facts:
                old = d.facts["period"]
                ou, on, oexp = old.value
                nu, nn, nexp = f.value
                if (ou, on) == (nu, nn):
                    d.facts["period"] = f if nexp and not oexp else old
                    continue
                if not oexp and on == 1:
                    d.facts["period"] = f
                    continue
                if not nexp and nn == 1:
                    continue
                raise self.hard(
                    f"this repeat contradicts the earlier one ({self.src[old.pos:old.end]!r})",
                    pos=f.pos, end=f.end)
            if f.key == "recurring":
                d.facts.setdefault("recurring", f)
                continue
            if f.key in d.facts:
                old = d.facts[f.key]
                if old.value == f.value:
                    continue
                raise self.hard(
                    f"this says the {_SLOT_NAMES.get(f.key, f.key)} again; it was already given as "
                    f"{self.src[old.pos:old.end]!r}",
                    pos=f.pos, end=f.end)
            d.facts[f.key] = f
        if any(f.key in ("period", "sub", "recurring") for f in facts) or any(
                f.key in ("weekdays", "monthdays", "day_ordinals", "months", "times", "date_rel", "relative")
                for f in facts):
            self.seen_rule = True


_SLOT_NAMES = {
    "sub": "repeat interval",
    "weekdays": "days of the week",
    "monthdays": "days of the month",
    "day_ordinals": "day numbers",
    "months": "months",
    "times": "time of day",
    "time_range": "time range",
    "year": "year",
    "date_rel": "date",
    "relative": "delay",
    "count": "number of times",
    "until": "end",
    "dtstart": "start",
    "zone": "time zone",
    "weeknos": "week numbers",
    "setpos": "instances",
    "yeardays": "days of the year",
}


def parse_tokens(toks: list[Token], source: str, start: int, end: int) -> Draft:
    """Parse the schedule tokens of ``source[start:end]`` into a :class:`Draft`.

    Raises :class:`ScheduleParseError` at the furthest token no clause could consume,
    or at a value that is out of range (e.g. "every month on 0").
    """
    p = Parser(toks, source, end)
    clauses = (
        p.c_comma, p.c_every, p.c_adverb, p.c_ordinal, p.c_at, p.c_on, p.c_in, p.c_between, p.c_from_now_on,
        p.c_from,
        p.c_starting, p.c_until, p.c_for, p.c_count, p.c_except, p.c_time, p.c_relative, p.c_days,
        p.c_date, p.c_zone,
    )
    while not p.at_end():
        for clause in clauses:
            facts = p.attempt(clause)
            if facts is not None:
                p.apply(facts)
                break
        else:
            pos_i = max(p.far, p.i)
            if pos_i >= len(toks):
                raise ScheduleParseError(
                    "the phrase stops too early; expected " + _expected(p.expected),
                    position=end, fragment="", text=source)
            tok = toks[pos_i]
            raise ScheduleParseError(
                f"expected {_expected(p.expected)}{_suggest(tok.text)}",
                position=tok.start, fragment=tok.text, text=source, examples=_examples_for(p.expected))
    p.draft.start, p.draft.end = start, end
    return p.draft


_PRIORITY = (_LABELS["weekday"], _LABELS["time"], _LABELS["month"], _LABELS["unit"], _LABELS["date"])


def _expected(labels: list[str]) -> str:
    if not labels:
        return "a schedule such as 'every day at 9am'"
    ordered = [x for x in _PRIORITY if x in labels] + [x for x in labels if x not in _PRIORITY]
    shown = ordered[:4]
    return ", ".join(shown[:-1]) + (" or " if len(shown) > 1 else "") + shown[-1]


def _suggest(fragment: str) -> str:
    """A hint such as "; did you mean 'wednesday'?" for a near-miss of a known word.

    Only a hint in the error message: a misspelt word is never accepted."""
    words = [*V.WEEKDAYS, *V.MONTHS, *V.UNITS, *V.ADVERBS, *V.DAY_GROUPS, "every", "each", "except",
             "until", "starting", "tomorrow", "today", "midnight", "noon"]
    close = difflib.get_close_matches(fragment.lower(), words, n=1, cutoff=0.8)
    return f"; did you mean {close[0]!r}?" if close and close[0] != fragment.lower() else ""


def _examples_for(labels: list[str]) -> tuple[str, str]:
    text = " ".join(labels)
    if "time" in text:
        return ("every day at 9am run X", "every monday and thursday at 17:30 run X")
    if "day name" in text or "month" in text:
        return ("every monday and thursday at 17:30 run X", "on the first of every month at 8:00 run X")
    return ("every weekday at 9am run standup-report", "every 15 minutes run disk-check")
