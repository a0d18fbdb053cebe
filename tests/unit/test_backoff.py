"""Restart backoff (pure: nothing sleeps)."""

from __future__ import annotations

from supervisor.backoff import BackoffPolicy, RestartBudget


def test_first_restart_is_immediate_then_delays_double_up_to_the_cap() -> None:
    """Delays: 0, base, 2*base, ... capped."""
    policy = BackoffPolicy(base_s=0.5, factor=2.0, cap_s=4.0)
    assert [policy.delay(n) for n in range(1, 8)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_crash_loop_counts_attempts() -> None:
    """Consecutive restarts without a healthy spell grow the attempt number."""
    budget = RestartBudget(BackoffPolicy(base_s=1.0))
    assert [budget.next_restart() for _ in range(3)] == [(1, 0.0), (2, 1.0), (3, 2.0)]


def test_attempts_reset_after_being_healthy_long_enough() -> None:
    """Healthy for reset_after_s seconds: the next failure is attempt 1 again."""
    budget = RestartBudget(BackoffPolicy(reset_after_s=10.0))
    budget.next_restart()
    budget.next_restart()
    budget.observe_healthy(100.0)
    budget.observe_healthy(110.0)
    assert budget.next_restart() == (1, 0.0)


def test_a_short_healthy_spell_does_not_reset() -> None:
    """Healthy for less than reset_after_s keeps the count."""
    budget = RestartBudget(BackoffPolicy(reset_after_s=10.0))
    budget.next_restart()
    budget.observe_healthy(100.0)
    budget.observe_healthy(105.0)
    assert budget.next_restart()[0] == 2


def test_an_unhealthy_probe_restarts_the_healthy_clock() -> None:
    """Healthy, unhealthy, healthy again: the spell counts from the last recovery."""
    budget = RestartBudget(BackoffPolicy(reset_after_s=10.0))
    budget.next_restart()
    budget.observe_healthy(100.0)
    budget.observe_unhealthy()
    budget.observe_healthy(108.0)
    budget.observe_healthy(112.0)
    assert budget.next_restart()[0] == 2
