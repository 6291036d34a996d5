"""The deliverer's policy: how long a claim on a lane lasts."""

from __future__ import annotations

from workers.delivery import LEASE_MARGIN_S, lease_s


def test_a_claim_outlives_the_attempt_by_the_timeout_again_up_to_the_margin() -> None:
    assert lease_s(2.0) == 4.0  # a test's short timeout: a killed deliverer's lanes go out again after 4 s
    assert lease_s(15.0) == 30.0  # the default
    assert lease_s(60.0) == 60.0 + LEASE_MARGIN_S
    assert all(lease_s(t) > t for t in (0.1, 1.0, 8.0, 300.0))  # always longer than an attempt can take
