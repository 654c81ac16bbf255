"""core.retry.RetryPolicy: the one backoff every retry loop uses."""

from __future__ import annotations

import pytest

from core.retry import RetryPolicy

pytestmark = pytest.mark.unit


def test_bounded_policy_is_exhausted_after_its_attempts() -> None:
    policy = RetryPolicy(attempts=3)
    assert [policy.exhausted(tries) for tries in (1, 2, 3, 4)] == [False, False, True, True]


def test_unbounded_policy_never_gives_up_and_never_overflows() -> None:
    policy = RetryPolicy(attempts=0, base_delay=1.0, max_delay=30.0)
    assert not policy.exhausted(10**9)
    # a node down for days: thousands of retries, the delay stays at the cap (2**5000 would overflow)
    delays = [policy.delay(5000, None) for _ in range(50)]
    assert all(15.0 <= d <= 30.0 for d in delays)


def test_retry_after_below_the_backoff_does_not_shorten_it() -> None:
    policy = RetryPolicy(base_delay=8.0, max_delay=8.0)
    assert all(4.0 <= policy.delay(1, 0.5) <= 8.0 for _ in range(50))
