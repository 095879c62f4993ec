"""Dates written in many human formats, paired with the ISO ``yyyy-mm-dd`` form they mean.

Conventions that give every source exactly one answer (so the task is learnable):

- dates run from 1950-01-01 to 2049-12-31, so a two-digit year ``yy`` means 19yy for 50-99
  and 20yy for 00-49 ("21" is 2021, "63" is 1963);
- numeric dates with the year last are American, month first: "03/04/21" is 2021-03-04;
- numeric dates with the year first are year, month, day: "2021.03.04" is 2021-03-04;
- a weekday name is always the weekday of the date itself.

A format is a ``str.format`` template over the fields of ``date_fields``, for 2021-03-04:
``{Weekday}`` Thursday, ``{Wkd}`` Thu, ``{Month}`` March, ``{Mon}`` Mar, ``{d}`` 4, ``{dd}`` 04,
``{dth}`` 4th, ``{m}`` 3, ``{mm}`` 03, ``{yy}`` 21, ``{yyyy}`` 2021.
"""
import bisect
import datetime
import itertools
import string

MONTHS = ("January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December")
# Indexed by datetime.date.weekday(): Monday is 0.
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

FIRST_DAY = datetime.date(1950, 1, 1)
LAST_DAY = datetime.date(2049, 12, 31)
NUM_DAYS = (LAST_DAY - FIRST_DAY).days + 1

DATE_FIELDS = ("Weekday", "Wkd", "Month", "Mon", "d", "dd", "dth", "m", "mm", "yy", "yyyy")
NUMERIC_FIELDS = {"d", "dd", "dth", "m", "mm", "yy", "yyyy"}

DATE_FORMATS = (
    "the {dth} of {Month}, {yyyy}",          # the 3rd of March, 2021
    "{dth} of {Month} {yyyy}",               # 3rd of March 2021
    "{Weekday} the {dth} of {Month} {yyyy}",  # Wednesday the 3rd of March 2021
    "{mm}/{dd}/{yy}",                        # 03/03/21
    "{m}/{d}/{yy}",                          # 3/3/21
    "{m}/{d}/{yyyy}",                        # 3/3/2021
    "{mm}/{dd}/{yyyy}",                      # 03/03/2021
    "{yyyy}.{mm}.{dd}",                      # 2021.03.03
    "{yyyy}/{mm}/{dd}",                      # 2021/03/03
    "{yyyy}-{mm}-{dd}",                      # 2021-03-03
    "{yyyy}{mm}{dd}",                        # 20210303
    "{Weekday} {Month} {d} {yyyy}",          # Wednesday March 3 2021
    "{Weekday}, {Month} {d}, {yyyy}",        # Wednesday, March 3, 2021
    "{Wkd}, {d} {Mon} {yyyy}",               # Wed, 3 Mar 2021
    "{Wkd} {dd} {Mon} {yyyy}",               # Wed 03 Mar 2021
    "{Month} {d}, {yyyy}",                   # March 3, 2021
    "{Month} {dth}, {yyyy}",                 # March 3rd, 2021
    "{Month} {dth} {yyyy}",                  # March 3rd 2021
    "{d} {Month} {yyyy}",                    # 3 March 2021
    "{dth} {Month} {yy}",                    # 3rd March 21
    "{Mon} {d} {yyyy}",                      # Mar 3 2021
    "{Mon}. {d}, {yyyy}",                    # Mar. 3, 2021
    "{d}-{Mon}-{yyyy}",                      # 3-Mar-2021
    "{dd} {Mon} {yy}",                       # 03 Mar 21
)

# A source is written as the template has it (half the time), in lower case or in upper case.
CASE_STYLES = (str, str.lower, str.upper)
CASE_CUMULATIVE_PROBS = (0.5, 0.75)


def ordinal(n):
    """English ordinal of a positive integer: 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ..."""
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def date_fields(date):
    """The values of every format field (see the module docstring) for a ``datetime.date``."""
    weekday = WEEKDAYS[date.weekday()]
    month = MONTHS[date.month - 1]
    return {
        "Weekday": weekday, "Wkd": weekday[:3], "Month": month, "Mon": month[:3],
        "d": str(date.day), "dd": f"{date.day:02d}", "dth": ordinal(date.day),
        "m": str(date.month), "mm": f"{date.month:02d}",
        "yy": f"{date.year % 100:02d}", "yyyy": str(date.year),
    }


def check_format(template):
    """Raise TypeError/ValueError unless ``template`` is a str whose fields are all in DATE_FIELDS."""
    if not isinstance(template, str):
        raise TypeError(f"date format must be a str, got {type(template).__name__}: {template!r}")
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is not None and (field not in DATE_FIELDS or spec or conversion):
            raise ValueError(f"date format {template!r} has field {{{field}}}; "
                             f"expected plain fields from {DATE_FIELDS}")


def format_date(date, template):
    """Write ``date`` with a format template, e.g. ``format_date(d, "{Month} {d}, {yyyy}")``."""
    check_format(template)
    return template.format(**date_fields(date))


def source_chars(templates, mixed_case=True):
    """Every character that a source written with these templates can contain."""
    texts, fields = [], set()
    for template in templates:
        check_format(template)
        for literal, field, _, _ in string.Formatter().parse(template):
            texts.append(literal)
            fields.add(field)
    names = {"Weekday": WEEKDAYS, "Wkd": [w[:3] for w in WEEKDAYS],
             "Month": MONTHS, "Mon": [m[:3] for m in MONTHS], "dth": ["stndrdth"]}
    texts += itertools.chain.from_iterable(names.get(field, ()) for field in fields)
    text = "".join(texts)
    if fields & NUMERIC_FIELDS:
        text += string.digits
    styles = CASE_STYLES if mixed_case else (str,)
    return set().union(*(style(text) for style in styles))


def draw_date_pair(rng, templates=DATE_FORMATS, mixed_case=True):
    """One (source, ISO target) pair: a uniform date in 1950-2049 in a random format and case.

    ``templates`` must already have passed ``check_format``.
    """
    date = FIRST_DAY + datetime.timedelta(days=int(rng.integers(NUM_DAYS)))
    source = templates[int(rng.integers(len(templates)))].format(**date_fields(date))
    if mixed_case:
        style = CASE_STYLES[bisect.bisect_right(CASE_CUMULATIVE_PROBS, rng.random())]
        source = style(source)
    return source, date.isoformat()
