"""The flood scenario's order check: what it counts when ACS's start order strays from callq's acceptance order.

The bench runs it against a live stack where it should find nothing; here each kind of fault is planted.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.scenarios import flood
from bench.scenarios.flood import (
    OrderCheck,
    Sample,
    _bystander,
    _result,
    _split,
    check_order,
    starts_per_slot,
    with_plays_meanwhile,
)


def test_plays_started_in_acceptance_order_pass() -> None:
    assert check_order(["a", "b", "c"], ["a", "b", "c"]) == OrderCheck(3, 0, 0, 0, 0)


def test_a_play_started_before_an_earlier_one_is_out_of_order() -> None:
    assert check_order(["a", "b", "c", "d"], ["a", "c", "b", "d"]).out_of_order == 1
    assert check_order(["a", "b", "c", "d"], ["d", "a", "b", "c"]).out_of_order == 3


def test_missing_repeated_and_foreign_plays_are_counted_apart() -> None:
    found = check_order(["a", "b", "c"], ["a", "a", "x", "c"])
    assert found == OrderCheck(accepted=3, out_of_order=0, not_started=1, started_twice=1, unknown=1)


def test_nothing_accepted_nothing_started() -> None:
    assert check_order([], []) == OrderCheck(0, 0, 0, 0, 0)


def _one_play_report() -> tuple[dict[str, Any], dict[str, Any]]:
    """A flooder's report and the play check of a flood in which one play was accepted and ran."""
    report = {"started": 0.0, "ended": 30.0,
              "calls": {"cc": {"accepted": ["p1"], "sent": 1, "refused": {}, "other": {}, "resent": 0}}}
    plays = {"accepted": 1, "succeeded": 1, "out_of_order": 0, "not_started": 0, "started_twice": 0, "unknown": 0,
             "unlisted_202": 0, "unreported": 0, "resolved_by": {"PlayCompleted": 1},
             "started_at_acs_during_flood": 1, "acs_play_starts_per_10ms": {"middle_s": "0" * 100, "last_s": "0" * 100}}
    return report, plays


def test_a_report_whose_samples_all_lack_sent_at_keeps_the_p99_and_leaves_that_part_empty() -> None:
    # ACS may call back before it answers: a connect resolved by its event then has no sent_at. A run where every
    # one of B's idle connects went that way once raised "no samples" and lost the whole scenario.
    report, plays = _one_play_report()
    idle = [Sample(0.0, 0.010, 8.0, None, None, 2.0), Sample(2.0, 0.012, 9.0, None, None, 3.0)]
    flooded = [Sample(10.0, 0.015, 12.0, 9.0, 1.0, 4.0), Sample(12.0, 0.018, 14.0, None, None, 5.0)]
    res = _result(report, plays, idle, flooded, 8.0, ended=True, drain_s=1.0, drain_timeout=60.0, flood_s=30.0,
                  interval_s=2.0, play_s=0.2, per_call=100)
    rows = {r.metric.strip(): r for r in res.rows}
    p99 = rows["quiet clients' connect (B and 0 like it) → succeeded during A's flood, p99"]
    assert p99.passed is True and p99.ratio is not None and 1.4 < p99.ratio < 1.6
    to_sent = rows["of which created_at → sent_at (its turn, then ACS's answer), p99"]
    assert to_sent.baseline is None and to_sent.ratio is None and to_sent.callq == 9.0


def test_the_control_row_sets_a_second_idle_phase_against_the_first_and_is_not_a_target() -> None:
    report, plays = _one_play_report()
    idle = [Sample(0.0, 0.010, 8.0, 5.0, 1.0, 2.0), Sample(2.0, 0.010, 9.0, 5.0, 1.0, 3.0)]
    control = [Sample(4.0, 0.013, 8.0, 5.0, 1.0, 2.0), Sample(6.0, 0.013, 9.0, 5.0, 1.0, 3.0)]
    flooded = [Sample(10.0, 0.015, 12.0, 9.0, 1.0, 4.0), Sample(12.0, 0.015, 14.0, 9.0, 1.0, 5.0)]
    res = _result(report, plays, idle, flooded, 8.0, control=control, ended=True, drain_s=1.0, drain_timeout=60.0,
                  flood_s=30.0, interval_s=2.0, play_s=0.2, per_call=100)
    rows = {r.metric.strip(): r for r in res.rows}
    row = rows["control: quiet clients' connect → succeeded with no flood, a second time, p99"]
    assert row.callq == 13.0 and row.baseline == 10.0 and row.ratio is not None and abs(row.ratio - 1.3) < 1e-9
    assert row.passed is None  # information: only the flood's row has the 2x target
    assert res.details["b_control_ms"]["p99"] == 13.0 and len(res.details["b_control_samples"]) == 2
    assert any("the control" in note for note in res.notes)


def test_starts_per_slot_counts_each_10ms_of_the_second_and_caps_at_nine() -> None:
    starts = [100.0, 100.001, 100.009, 100.015] + [100.5] * 12 + [99.99, 101.0]  # the last two fall outside
    shape = starts_per_slot(starts, 100.0)
    assert len(shape) == 100
    assert shape[0] == "3" and shape[1] == "1" and shape[50] == "9"
    assert shape.count("0") == 97


def test_each_sample_counts_the_plays_acs_started_while_it_was_under_way() -> None:
    samples = [Sample(0.0, 0.020, None, wall_started=100.0), Sample(2.0, 0.010, None, wall_started=102.0)]
    starts = [99.999, 100.0, 100.005, 100.019, 100.021, 102.001, 103.0]
    counted = with_plays_meanwhile(samples, starts)
    assert [s.acs_plays_meanwhile for s in counted] == [3, 1]
    assert _split(counted[0])["acs_plays_meanwhile"] == 3


def test_the_target_row_pools_every_quiet_client_and_client_b_alone_is_an_info_row() -> None:
    report, plays = _one_play_report()
    # B (client 0) is slow during the flood; its twin (client 1) is not: the pooled p99 sits between the two.
    idle = [Sample(0.0, 0.010, None, client=0), Sample(1.0, 0.010, None, client=1),
            Sample(2.0, 0.010, None, client=0), Sample(3.0, 0.010, None, client=1)]
    flooded = [Sample(10.0, 0.030, None, client=0), Sample(11.0, 0.010, None, client=1),
               Sample(12.0, 0.030, None, client=0), Sample(13.0, 0.010, None, client=1)]
    res = _result(report, plays, idle, flooded, 8.0, ended=True, drain_s=1.0, drain_timeout=60.0, flood_s=30.0,
                  interval_s=2.0, play_s=0.2, per_call=100)
    rows = {r.metric.strip(): r for r in res.rows}
    pooled = rows["quiet clients' connect (B and 1 like it) → succeeded during A's flood, p99"]
    assert pooled.target == "≤ 2×" and pooled.callq == 30.0 and pooled.passed is False
    alone = rows["client B alone: its connect → succeeded during A's flood, p99 (of its few: its slowest)"]
    assert alone.callq == 30.0 and alone.baseline == 10.0 and alone.passed is None
    p50 = rows["quiet clients' connect → succeeded during A's flood, p50"]
    assert p50.callq == 20.0  # all four flood samples, two of each client
    assert res.details["quiet_clients"] == 2 and res.details["b_alone_flood_ms"]["n"] == 2
    assert [s["client"] for s in res.details["b_flood_samples"]] == [0, 1, 0, 1]


def test_quiet_clients_take_the_rooms_in_turn_on_schedules_staggered_within_one_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    moments: list[float] = []
    monkeypatch.setattr(flood, "_sleep_until", moments.append)
    monkeypatch.setattr(flood, "_connect_once", lambda api_url, room, client: Sample(0.0, 0.01, None, client=client))
    samples = _bystander("http://api", [f"r{k}" for k in range(8)], 2.0, 100.0, clients=4)
    assert [s.client for s in samples] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert moments == [100.0, 100.5, 101.0, 101.5, 102.0, 102.5, 103.0, 103.5]  # each client every 2 s
