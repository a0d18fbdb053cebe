"""Docker event stream for our containers, forwarded to the supervision loop.

Hazard: docker-py's stream has no read timeout and ends silently (no exception)
when the engine goes away, so the end of iteration is reported as EngineLost.
The stream is closed from the main thread with ``close()``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests

# Everything else (exec_*, attach, top...) is noise for supervision. Filters must be
# lists: docker-py turns any other iterable into one string that matches nothing.
# `start` marks where a container's story begins again: why it goes down next is read
# from the events after it, in the stream's order (never by comparing engine clocks).
WATCHED_ACTIONS = ("start", "die", "oom", "kill", "stop", "destroy")


@dataclass(frozen=True)
class ContainerEvent:
    """One engine event about a container named like ours."""

    action: str
    container_id: str
    name: str = ""
    exit_code: int | None = None
    time_ns: int = 0  # when the engine says it happened
    signal: int | None = None


@dataclass(frozen=True)
class EngineLost:
    """The event stream ended: the engine stopped or restarted."""

    detail: str = ""


def parse_event(raw: dict[str, Any]) -> ContainerEvent:
    """Read one decoded event dict from the engine (pure)."""
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    action = str(raw.get("Action") or raw.get("status") or "")

    return ContainerEvent(
        action=action,
        container_id=str(actor.get("ID") or raw.get("id") or ""),
        name=str(attributes.get("name") or ""),
        time_ns=_int(raw.get("timeNano")) or (_int(raw.get("time")) or 0) * 1_000_000_000,
        exit_code=_int(attributes.get("exitCode")),
        signal=_int(attributes.get("signal")),
    )


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def event_filters(container_names: tuple[str, ...]) -> dict[str, Any]:
    """The engine-side filter for our containers' events (values must be lists)."""
    return {
        "type": "container",
        "container": list(container_names),
        "event": list(WATCHED_ACTIONS),
    }


class EventWatcher:
    """A daemon thread that streams events for some container names into ``sink``."""

    def __init__(
        self,
        api: docker.APIClient,
        container_names: tuple[str, ...],
        sink: Callable[[ContainerEvent | EngineLost], None],
    ) -> None:
        self._api = api
        self._names = container_names
        self._sink = sink
        self._stream: Any = None
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)

    def start(self) -> None:
        """Start streaming; returns once the stream is subscribed (or has failed)."""
        self._thread.start()
        self._ready.wait(timeout=10)

    def _run(self) -> None:
        try:
            self._stream = self._api.events(decode=True, filters=event_filters(self._names))
        except (requests.exceptions.RequestException, docker.errors.DockerException) as err:
            self._ready.set()
            self._sink(EngineLost(str(err)))
            return
        self._ready.set()
        try:
            for raw in self._stream:
                event = parse_event(raw)
                # The filter matches names as substrings; check the exact name.
                if event.name in self._names:
                    self._sink(event)
        except (requests.exceptions.RequestException, docker.errors.DockerException) as err:
            if not self._closed.is_set():
                self._sink(EngineLost(str(err)))
            return
        if not self._closed.is_set():
            self._sink(EngineLost("event stream ended"))

    def close(self) -> None:
        """End the stream from the main thread; the reader thread then ends too."""
        self._closed.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
        self._thread.join(timeout=5)
