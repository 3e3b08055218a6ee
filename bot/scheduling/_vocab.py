"""English vocabulary of the schedule grammar (day, month, unit and number words).

Weekday numbers follow :mod:`datetime` / :mod:`dateutil.rrule`: Monday = 0 … Sunday = 6.
Cron day-of-week numbers (Sunday = 0) are produced only when a cron string is written.
"""

from __future__ import annotations

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)

# word -> (weekday, plural)
WEEKDAYS: dict[str, tuple[int, bool]] = {}
for _i, _forms in enumerate(
    (
        ("monday", "mon"),
        ("tuesday", "tue", "tues"),
        ("wednesday", "wed", "weds"),
        ("thursday", "thu", "thur", "thurs"),
        ("friday", "fri"),
        ("saturday", "sat"),
        ("sunday", "sun"),
    )
):
    for _f in _forms:
        WEEKDAYS[_f] = (_i, False)
    WEEKDAYS[_forms[0] + "s"] = (_i, True)

# group words -> (weekdays, plural)
DAY_GROUPS: dict[str, tuple[tuple[int, ...], bool]] = {
    "weekday": ((0, 1, 2, 3, 4), False),
    "weekdays": ((0, 1, 2, 3, 4), True),
    "weekend": ((5, 6), False),
    "weekends": ((5, 6), True),
}

MONTHS: dict[str, int] = {}
for _i, _name in enumerate(MONTH_NAMES, start=1):
    MONTHS[_name.lower()] = _i
    MONTHS[_name.lower()[:3]] = _i
MONTHS["sept"] = 9

ORDINAL_WORDS: dict[str, int] = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}

NUMBER_WORDS: dict[str, int] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "ninety": 90,
}

# unit word -> (unit, multiplier)
UNITS: dict[str, tuple[str, int]] = {}
for _unit, _words in (
    ("second", ("second", "seconds", "sec", "secs")),
    ("minute", ("minute", "minutes", "min", "mins")),
    ("hour", ("hour", "hours", "hr", "hrs")),
    ("day", ("day", "days")),
    ("week", ("week", "weeks")),
    ("month", ("month", "months")),
    ("year", ("year", "years")),
):
    for _w in _words:
        UNITS[_w] = (_unit, 1)
UNITS["fortnight"] = ("week", 2)
UNITS["fortnights"] = ("week", 2)

UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600}
SUBDAILY = ("second", "minute", "hour")

# adverb -> (unit, interval)
ADVERBS: dict[str, tuple[str, int]] = {
    "secondly": ("second", 1),
    "minutely": ("minute", 1),
    "hourly": ("hour", 1),
    "daily": ("day", 1),
    "nightly": ("day", 1),
    "weekly": ("week", 1),
    "fortnightly": ("week", 2),
    "monthly": ("month", 1),
    "quarterly": ("month", 3),
    "yearly": ("year", 1),
    "annually": ("year", 1),
}

SEPARATORS = (",", "and", "&", "or")

MAX_INTERVAL = 10_000
"""Largest number accepted in "every N units" (HumanCron refuses overflowing intervals)."""
