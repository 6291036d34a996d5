"""When a recording schedule's occurrences happen: pure time arithmetic, no I/O, the clock passed in.

Three kinds of plan: ``once`` (one ``start_at``), ``every`` (``start_at + k × every``; short cycles make
recurring schedules testable in seconds) and ``cron`` (five fields read on the wall clock of an IANA
zone). An occurrence is identified by its planned time, a whole second in UTC (epoch seconds), so every
process must compute the same planned times from the same plan: that is why this is pure.

Cron and daylight saving: fields are matched on the zone's wall clock and the match is converted to UTC,
so a 10:00 Europe/Paris class is at 10:00 local on both sides of a change. A wall time that does not
exist (the spring-forward gap) runs when the clock has jumped over it (02:30 → 03:30 CEST, the same
instant as the old offset gives); a wall time that happens twice (fall back) runs once, at its first
instant. Day matching follows Celery's ``crontab``: month, day of month *and* day of week must all match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import ParseException, crontab

Kind = Literal["once", "every", "cron"]
# Long enough for the rarest cron that can match at all (29 February on a given weekday: every 28 years).
CRON_SEARCH_DAYS = 366 * 29
OVERLAP_SAMPLES = 50  # consecutive cron occurrences checked for overlapping sessions
_ISO_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")
_UNITS = ((86_400 * 7, "W"), (86_400, "D"), (3600, "H"), (60, "M"), (1, "S"))


def parse_duration(value: object) -> int:
    """Whole seconds from an ISO 8601 duration (``PT45M``, ``PT1H30M``, ``P1D``) or a number of seconds.

    Years and months are refused: their length depends on the calendar. Raises ValueError.
    """
    if isinstance(value, bool):
        raise ValueError("must be an ISO 8601 duration such as PT45M, or whole seconds")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str) and (match := _ISO_DURATION.fullmatch(value.strip().upper())) and value.strip() != "P":
        weeks, days, hours, minutes, secs = (int(g or 0) for g in match.groups())
        seconds = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + secs
    else:
        raise ValueError("must be an ISO 8601 duration such as PT45M (days, hours, minutes, seconds), or whole seconds")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def format_duration(seconds: int) -> str:
    """The canonical ISO 8601 form: ``PT45M``, ``PT1H30M``, ``P1DT2H``, ``PT0S``."""
    if seconds == 0:
        return "PT0S"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return f"P{f'{days}D' if days else ''}{'T' + time if time else ''}"


def parse_cron(expression: str) -> crontab:
    """A five-field cron expression (minute hour day-of-month month day-of-week); raises ValueError."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("must have five fields: minute hour day-of-month month day-of-week")
    try:
        return crontab.from_string(" ".join(fields))
    except (ValueError, ParseException, TypeError) as exc:
        raise ValueError(str(exc) or "is not a valid cron expression") from None


def zone(name: str) -> ZoneInfo:
    """The IANA zone called ``name``; raises ValueError for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA timezone such as Europe/Paris") from None


def _day_matches(cron: crontab, day: date) -> bool:
    return (day.month in cron.month_of_year and day.day in cron.day_of_month
            and day.isoweekday() % 7 in cron.day_of_week)  # cron counts Sunday as 0


def next_cron(cron: crontab, tz: ZoneInfo, after: int) -> int | None:
    """The first instant strictly after ``after`` (epoch s) whose wall clock in ``tz`` matches ``cron``."""
    start = datetime.fromtimestamp(after, UTC).astimezone(tz).date()
    hours, minutes = sorted(cron.hour), sorted(cron.minute)
    for n in range(CRON_SEARCH_DAYS):
        day = start + timedelta(days=n)
        if not _day_matches(cron, day):
            continue
        for hour in hours:
            for minute in minutes:
                # fold=0: a gap maps forward (old offset), a repeated hour to its first instant; an instant
                # already used (a gap time equal to the next real time) is skipped by the "> after" test.
                at = int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).timestamp())
                if at > after:
                    return at
    return None


@dataclass(frozen=True)
class Plan:
    """A schedule's timing: which kind, and the fields that kind uses (times in epoch seconds, UTC)."""

    kind: Kind
    duration_s: int
    start: int | None = None  # once: the occurrence; every: the first occurrence
    every_s: int | None = None
    cron: str | None = None
    timezone: str | None = None

    def after(self, t: int) -> int | None:
        """The first occurrence strictly after ``t``, or None when there is none."""
        if self.kind == "once":
            assert self.start is not None
            return self.start if self.start > t else None
        if self.kind == "every":
            assert self.start is not None and self.every_s
            if t < self.start:
                return self.start
            return self.start + ((t - self.start) // self.every_s + 1) * self.every_s
        assert self.cron is not None and self.timezone is not None
        return next_cron(parse_cron(self.cron), zone(self.timezone), t)

    def first(self, now: int) -> int | None:
        """The first occurrence of a schedule created at ``now``."""
        if self.kind == "cron":
            return self.after(now)
        return self.after(now - 1)  # a start_at of exactly now still happens

    def next_open(self, planned: int, now: int) -> int | None:
        """The occurrence after ``planned`` whose session has not ended by ``now``.

        After an outage (beat or workers down) the schedule moves on to a session that can still be
        recorded instead of replaying every session it slept through.
        """
        return self.after(max(planned, now - self.duration_s))

    def shortest_gap_s(self, now: int) -> int | None:
        """The shortest time between two consecutive occurrences (None: fewer than two occur)."""
        if self.kind == "every":
            return self.every_s
        if self.kind == "once":
            return None
        times: list[int] = []
        t: int | None = now
        while t is not None and len(times) < OVERLAP_SAMPLES:
            t = self.after(t)
            if t is not None:
                times.append(t)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        return min(gaps) if gaps else None


def iso(epoch_s: int | float) -> str:
    """RFC 3339 in UTC with a ``Z``: ``2026-03-31T08:00:00Z``."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_instant(value: str) -> int:
    """Epoch seconds from an RFC 3339 timestamp with an offset (``Z`` or ``+02:00``); raises ValueError.

    Sub-second parts are dropped: planned times are whole seconds.
    """
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError("must be an RFC 3339 timestamp such as 2026-03-31T10:00:00+02:00") from None
    if parsed.tzinfo is None or "T" not in value.upper():
        raise ValueError("must be an RFC 3339 timestamp with a UTC offset, such as 2026-03-31T10:00:00Z")
    return int(parsed.timestamp())
