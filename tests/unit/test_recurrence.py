"""Occurrence times: pure functions of the plan and a fixed clock, across DST in Europe/Paris."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workers.recurrence import Plan, format_duration, iso, next_cron, parse_cron, parse_duration, parse_instant, zone


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def cron_plan(expr: str, tz: str = "Europe/Paris", duration_s: int = 2700) -> Plan:
    return Plan(kind="cron", duration_s=duration_s, cron=expr, timezone=tz)


def test_a_tuesday_class_stays_at_ten_local_across_spring_forward() -> None:
    plan = cron_plan("0 10 * * 2")
    before = plan.after(at("2026-03-20T00:00:00+00:00"))
    assert before is not None and iso(before) == "2026-03-24T09:00:00Z"  # 10:00 CET (+01:00)
    after = plan.after(before)
    assert after is not None and iso(after) == "2026-03-31T08:00:00Z"  # 10:00 CEST (+02:00), DST began 29 March


def test_a_tuesday_class_stays_at_ten_local_across_fall_back() -> None:
    plan = cron_plan("0 10 * * 2")
    before = plan.after(at("2026-10-19T00:00:00+00:00"))
    assert before is not None and iso(before) == "2026-10-20T08:00:00Z"  # CEST
    after = plan.after(before)
    assert after is not None and iso(after) == "2026-10-27T09:00:00Z"  # CET, DST ended 25 October


def test_a_time_in_the_spring_gap_runs_when_the_clock_jumps_over_it() -> None:
    cron = parse_cron("30 2 * * *")
    paris = zone("Europe/Paris")
    t = next_cron(cron, paris, at("2026-03-28T12:00:00+00:00"))
    assert t is not None and iso(t) == "2026-03-29T01:30:00Z"  # 02:30 does not exist: 03:30 CEST, same instant
    nxt = next_cron(cron, paris, t)
    assert nxt is not None and iso(nxt) == "2026-03-30T00:30:00Z"


def test_a_repeated_wall_time_in_the_fall_runs_once_at_its_first_instant() -> None:
    cron = parse_cron("30 2 * * *")
    paris = zone("Europe/Paris")
    t = next_cron(cron, paris, at("2026-10-24T12:00:00+00:00"))
    assert t is not None and iso(t) == "2026-10-25T00:30:00Z"  # the first 02:30 (CEST)
    nxt = next_cron(cron, paris, t)
    assert nxt is not None and iso(nxt) == "2026-10-26T01:30:00Z"  # not the second 02:30 an hour later


def test_a_gap_time_that_lands_on_a_real_time_is_one_occurrence() -> None:
    cron = parse_cron("30 2,3 * * *")  # on 29 March 02:30 and 03:30 CEST are the same instant
    paris = zone("Europe/Paris")
    first = next_cron(cron, paris, at("2026-03-29T00:00:00+00:00"))
    assert first is not None and iso(first) == "2026-03-29T01:30:00Z"
    second = next_cron(cron, paris, first)
    assert second is not None and iso(second) == "2026-03-30T00:30:00Z"


def test_day_fields_must_all_match_as_in_celery_crontab() -> None:
    plan = cron_plan("0 9 1-7 * 1", tz="UTC")  # the first Monday of the month
    t = plan.after(at("2026-06-01T09:00:00+00:00"))
    assert t is not None and iso(t) == "2026-07-06T09:00:00Z"


def test_every_and_once_occurrences() -> None:
    every = Plan(kind="every", duration_s=2, start=1000, every_s=5)
    assert every.first(990) == 1000 and every.first(1000) == 1000
    assert every.after(1000) == 1005 and every.after(1003) == 1005
    once = Plan(kind="once", duration_s=2, start=1000)
    assert once.first(1000) == 1000 and once.after(1000) is None


def test_after_an_outage_the_schedule_moves_on_to_a_session_still_open() -> None:
    every = Plan(kind="every", duration_s=2, start=1000, every_s=5)
    assert every.next_open(1000, 1001) == 1005  # on time: simply the next one
    assert every.next_open(1000, 1033) == 1035  # 1030 ended at 1032: skip the sessions slept through
    assert every.next_open(1000, 1031) == 1030  # 1030 is still on until 1032: record its rest


def test_cron_overlap_is_measured_on_real_occurrences() -> None:
    assert cron_plan("*/10 * * * *", tz="UTC").shortest_gap_s(at("2026-01-01T00:00:00+00:00")) == 600
    assert Plan(kind="once", duration_s=5, start=10).shortest_gap_s(0) is None


@pytest.mark.parametrize(("text", "seconds"), [("PT45M", 2700), ("PT1H30M", 5400), ("P1D", 86400), ("PT5S", 5),
                                               ("P1DT2H", 93600), (90, 90), ("pt2m", 120)])
def test_durations_parse(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["P1M", "P1Y", "PT", "P", "45", "PT1.5S", -1, True, "PT5S extra"])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_durations_format_canonically() -> None:
    assert [format_duration(s) for s in (0, 5, 2700, 5400, 93600)] == ["PT0S", "PT5S", "PT45M", "PT1H30M", "P1DT2H"]


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "0 10 * * mon-xyz", "0 0 30 2 *"])
def test_bad_cron_expressions_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_cron(bad)


def test_instants_need_an_offset_and_lose_sub_seconds() -> None:
    assert parse_instant("2026-03-31T10:00:00.900+02:00") == int(datetime(2026, 3, 31, 8, tzinfo=UTC).timestamp())
    with pytest.raises(ValueError):
        parse_instant("2026-03-31T10:00:00")
    with pytest.raises(ValueError):
        zone("Mars/Olympus_Mons")
