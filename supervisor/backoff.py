"""Capped exponential backoff between restarts, reset after a healthy spell (pure).

Nothing here sleeps: callers ask for a delay and schedule it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """The first restart is immediate; later ones wait base * factor**(n-2), capped.

    Unlike Docker's restart manager (100 ms first, doubling to 60 s), the first
    repair costs nothing: a single crash should be repaired as fast as possible,
    a crash loop should slow down.
    """

    base_s: float = 0.5
    factor: float = 2.0
    cap_s: float = 60.0
    # The registry must stay healthy this long before the attempt count resets.
    reset_after_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (1-based)."""
        if attempt <= 1:
            return 0.0
        return min(self.cap_s, self.base_s * self.factor ** (attempt - 2))


@dataclass
class RestartBudget:
    """Counts consecutive restarts; healthy long enough, and the count resets."""

    policy: BackoffPolicy
    attempt: int = 0
    healthy_since: float | None = None

    def next_restart(self) -> tuple[int, float]:
        """Record a restart; return its attempt number and the delay before it."""
        self.attempt += 1
        self.healthy_since = None
        return self.attempt, self.policy.delay(self.attempt)

    def observe_healthy(self, now: float) -> None:
        """Count healthy time from ``now``; healthy long enough, the attempts start over."""
        if self.healthy_since is None:
            self.healthy_since = now
        elif now - self.healthy_since >= self.policy.reset_after_s:
            self.attempt = 0

    def observe_unhealthy(self) -> None:
        """Healthy time is interrupted: the count towards a reset starts again."""
        self.healthy_since = None
