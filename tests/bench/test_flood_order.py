"""The flood scenario's order check: what it counts when ACS's start order strays from callq's acceptance order.

The bench runs it against a live stack where it should find nothing; here each kind of fault is planted.
"""

from __future__ import annotations

from bench.scenarios.flood import OrderCheck, check_order


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
