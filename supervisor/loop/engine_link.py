"""The link to the Docker engine: connect, watch its events, notice its loss, reconnect.

It owns the one docker-py client and the event watcher, and reports what happened
(``connect`` says whether the engine just came back); the loop decides what that means for
the phase and the container.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supervisor.backoff import BackoffPolicy
from supervisor.engine.client import Engine
from supervisor.engine.events import EventWatcher
from supervisor.errors import EngineUnavailable

# An engine restart takes a couple of seconds, and the engine is a local socket: a refused
# connect costs microseconds and a client a millisecond, so look every 0.1 s at first and
# never less often than every 0.5 s (at most 10 tries a second: not hot). Docker's own
# restart policy starts its containers before the API answers; every 0.1 s of polling
# lost after the engine is back is recovery time lost.
ENGINE_RETRY = BackoffPolicy(base_s=0.1, factor=1.25, cap_s=0.5)
# An engine that answers a ping and then fails us again (or refuses what we ask) is
# reconnected to no sooner than this, and later ever more slowly, until the registry is
# healthy again: every retry path has a minimum delay, none loops hot.
ENGINE_MIN_RETRY_S = 0.1


@dataclass(frozen=True)
class Connected:
    """The engine answers again; ``after_loss``: it had been lost (not the first connect)."""

    after_loss: bool


@dataclass(frozen=True)
class Unreachable:
    """The engine does not answer; the next try is at ``retry_at``."""

    retry_at: float
    delay_s: float
    error: str


class EngineLink:
    """One connection to the engine at a time, with the reconnect backoff."""

    def __init__(
        self,
        factory: Callable[[], Engine],
        post: Callable[[Any], None],
        before_call: Callable[[], None],
        clock: Callable[[], float],
        log: Any,
    ) -> None:
        self._factory = factory
        self.log = log
        self._post = post  # event watcher -> the loop's message queue
        self._before_call = before_call
        self._clock = clock
        self._engine: Engine | None = None
        self._watcher: EventWatcher | None = None
        self.attempt = 0
        self.retry_at = 0.0
        self.was_lost = False
        # Losses since the registry was last healthy: the reconnect backoff's attempt.
        self.losses = 0

    @property
    def connected(self) -> bool:
        """Whether a client is connected (the engine answered and was not lost since)."""
        return self._engine is not None

    @property
    def docker(self) -> Engine:
        """The connected engine; only called on paths that run while connected.

        Every engine call may block up to its API timeout (a hung engine): the watchdog
        gets a fresh period first when one call could run past it.
        """
        if self._engine is None:
            raise EngineUnavailable("not connected")
        self._before_call()
        return self._engine

    def connect(self, now: float, names: tuple[str, ...]) -> Connected | Unreachable | None:
        """Try to connect if a try is due (None: not yet), then watch ``names``' events.

        Subscribing comes before anyone looks at the containers, so nothing happens unseen
        in between.
        """
        if now < self.retry_at:
            return None
        try:
            engine = self._factory()
            engine.ping()
        except EngineUnavailable as err:
            self.attempt += 1
            delay = ENGINE_RETRY.delay(self.attempt + 1)
            if self.attempt == 1 and not self.was_lost:
                # (a lost engine was already reported by lose())
                self.log.warning("engine.unreachable", error=str(err), retry_in_s=delay)
            self.retry_at = now + delay
            return Unreachable(self.retry_at, delay, str(err))
        self._engine = engine
        self.log.info(
            "engine.reconnected" if self.was_lost else "engine.connected",
            after_attempts=self.attempt,
        )
        self.attempt = 0
        self.watch(names)
        return Connected(after_loss=self.was_lost)

    def watch(self, names: tuple[str, ...]) -> None:
        """Follow the engine's events for ``names`` (replacing any earlier watcher)."""
        self._close_watcher()
        self._watcher = EventWatcher(self.docker.api, names, self._post)
        self._watcher.start()

    def lose(self, detail: str) -> bool:
        """The engine failed us: drop the client and back off. False if already lost."""
        if self._engine is None:
            return False
        self.log.warning("engine.unreachable", error=detail)
        self.close()
        self.was_lost = True
        self.losses += 1
        delay = max(ENGINE_MIN_RETRY_S, ENGINE_RETRY.delay(self.losses))
        self.retry_at = self._clock() + delay
        return True

    def close(self) -> None:
        """Stop watching and close the client (idempotent)."""
        self._close_watcher()
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def stop_watching(self) -> None:
        """Stop following events (shutdown: our own stops are not faults)."""
        self._close_watcher()

    def _close_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def registry_healthy(self) -> None:
        """The registry served: the next loss backs off from the start again."""
        self.losses = 0

    def side_engine(self) -> Engine:
        """A client of its own, for a one-off question while the link is down (the
        caller closes it)."""
        return self._factory()
