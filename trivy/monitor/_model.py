"""What the monitor knows of the bus, bounded: agents, kinds of texts, series, a tail.

Sans-IO: the bus side feeds it (:meth:`BusModel.text`, :meth:`agent_seen`,
...), the web side takes what changed since the last tick
(:meth:`BusModel.changes`), at most a few times a second whatever the
traffic. Every collection has a bound, so a busy or hostile bus costs the
monitor a fixed amount of memory:

- ``MAX_KINDS`` kinds (a text's kind is its first word); texts of kinds
  beyond it count under ``OTHER_KIND``;
- per kind, the last ``WINDOW_POINTS`` numeric samples within
  ``WINDOW_SECONDS`` (what a new plot starts from), ``MAX_FIELDS`` fields
  each;
- the last ``TAIL_LINES`` texts, each cut to ``MAX_TEXT`` characters;
- ``MAX_AGENTS`` agents shown, the first ``SUBSCRIPTIONS_SHOWN``
  regexps of each (and how many more);
- per update, ``AGENTS_PER_UPDATE`` agents (the others changed come in
  the next ones) and ``UPDATE_POINTS`` plot points; per snapshot,
  ``SNAPSHOT_SUBSCRIPTIONS`` regexps (an agent's that do not fit come in
  the updates that follow).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs

from ._grouping import Grouping

__all__ = [
    "AGENTS_PER_UPDATE",
    "MAX_AGENTS",
    "MAX_KINDS",
    "OTHER_KIND",
    "SNAPSHOT_SUBSCRIPTIONS",
    "SUBSCRIPTIONS_SHOWN",
    "TAIL_LINES",
    "UPDATE_POINTS",
    "WINDOW_POINTS",
    "BusModel",
]

MAX_KINDS = 500
OTHER_KIND = "(other kinds)"
MAX_FIELDS = 16
WINDOW_POINTS = 600
WINDOW_SECONDS = 600.0
TAIL_LINES = 500
MAX_TEXT = 300
MAX_AGENTS = 1000
MAX_SENDERS = 8
#: Regexps of an agent kept and shown (the page says how many more it has).
SUBSCRIPTIONS_SHOWN = 100
#: Agents in one update: an agent carries up to SUBSCRIPTIONS_SHOWN regexps;
#: a bus of agents that all churn would otherwise make each update huge.
AGENTS_PER_UPDATE = 16
#: Regexps in one snapshot, over all agents (up to MAX_AGENTS of them).
SNAPSHOT_SUBSCRIPTIONS = 2000
#: Plot points in one update, over all kinds.
UPDATE_POINTS = 2000
#: Seconds after its arrival in which an agent's first text is taken for its
#: ready message: agents send that as they finish connecting, before anything
#: else; nothing on the wire tells it apart from a text sent at once.
READY_WINDOW = 0.2
#: Seconds over which a kind's rate is measured.
RATE_PERIOD = 1.0


def numeric_fields(words: list[str]) -> tuple[float | None, ...]:
    """The value of each word after the first that reads as a finite number."""
    values: list[float | None] = []
    for word in words[1 : MAX_FIELDS + 1]:
        try:
            value = float(word)
        except ValueError:
            values.append(None)
            continue
        values.append(value if math.isfinite(value) else None)
    return tuple(values)


@attrs.define
class Kind:
    """The texts whose first word is ``name``."""

    name: str
    count: int = 0
    senders: list[str] = attrs.field(factory=list)
    last_text: str = ""
    last_time: float = 0.0
    numeric: list[bool] = attrs.field(factory=list)  # which fields were ever numbers
    window: deque[tuple[float, tuple[float | None, ...]]] = attrs.field(
        factory=lambda: deque(maxlen=WINDOW_POINTS)
    )
    fields: list[str] | None = None  # the fields' names (by the --kinds regexp)
    rate: float = 0.0  # texts per second, over the last RATE_PERIOD or more
    mark: tuple[float, int] | None = None  # (time, count) the rate is measured from

    def update_rate(self, now: float) -> bool:
        """Measure the rate again if a period passed; whether it changed."""
        if self.mark is None:
            return False
        since, count = self.mark
        if now - since < RATE_PERIOD:
            return False
        rate = round((self.count - count) / (now - since), 1)
        self.mark = (now, self.count)
        changed, self.rate = rate != self.rate, rate
        return changed

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "count": self.count,
            "rate": self.rate,
            "senders": self.senders,
            "last": self.last_text,
            "numeric": [i + 1 for i, is_number in enumerate(self.numeric) if is_number],
            "fields": self.fields,
        }


@attrs.define
class Agent:
    """An agent of the bus, as the monitor sees it."""

    key: str
    name: str
    host: str
    since: float
    subscriptions: dict[int, str]  # (the first SUBSCRIPTIONS_SHOWN, cut to MAX_TEXT)
    subscription_count: int = 0
    errors: deque[str] = attrs.field(factory=lambda: deque(maxlen=5))
    congested: bool = False
    ready: str | None = None  # its ready message: its first text, on connecting

    def summary(self, shown: int = SUBSCRIPTIONS_SHOWN) -> dict[str, Any]:
        """What the page shows of it, with its first ``shown`` regexps."""
        subs = [list(sub) for sub in itertools.islice(self.subscriptions.items(), shown)]
        return {
            "key": self.key,
            "name": self.name,
            "host": self.host,
            "since": self.since,
            "subscriptions": subs,
            "more_subscriptions": self.subscription_count - len(subs),
            "errors": list(self.errors),
            "congested": self.congested,
            "ready": self.ready,
        }


class BusModel:
    """The bounded picture of the bus (see the module's docstring)."""

    def __init__(self, grouping: Grouping | None = None) -> None:
        self.grouping = grouping
        self.kinds: dict[str, Kind] = {}
        self.agents: dict[str, Agent] = {}
        # tail lines and events carry a number, so that a page that got them
        # in a snapshot skips them in the update that follows
        self.tail: deque[tuple[int, float, str, str]] = deque(maxlen=TAIL_LINES)
        self.texts = 0
        self._changed_kinds: set[str] = set()
        # (in the order they changed: those past AGENTS_PER_UPDATE go first next time)
        self._changed_agents: dict[str, None] = {}
        self._gone_agents: set[str] = set()
        self._new_tail: list[tuple[int, float, str, str]] = []
        self._new_points: dict[str, list[list[Any]]] = {}
        self.events: deque[tuple[int, str]] = deque(maxlen=50)
        self._new_events: list[tuple[int, str]] = []
        self._event_number = 0
        #: Each sender's texts, as a kind "rate:NAME" whose one field is its
        #: rate (plotted as any field is).
        self.senders: dict[str, Kind] = {}
        self._early: dict[str, tuple[float, str]] = {}  # first texts of agents not seen yet

    # ------------------------------------------------------------- bus side
    def text(self, now: float, sender: str, text: str, key: str | None = None) -> None:
        """A text was sent on the bus by ``sender`` (the agent ``key``, if known)."""
        self.texts += 1
        sender = sender[:MAX_TEXT]  # (as an agent's name is: the page matches them)
        if key is not None:
            self._first_text(now, key, text)
        split = None if self.grouping is None else self.grouping.split(text)
        if split is None:
            words = text.split(maxsplit=MAX_FIELDS + 1)
            name = words[0][:64] if words else ""
        else:
            name, values = split[0][:64], split[1]
        kind = self.kinds.get(name)
        if kind is None:
            if len(self.kinds) >= MAX_KINDS:
                name = OTHER_KIND
                kind = self.kinds.get(name)
            if kind is None:
                kind = self.kinds[name] = Kind(name)
                if split is not None and self.grouping is not None:
                    kind.fields = self.grouping.fields
        if kind.mark is None:
            kind.mark = (now, 0)
        kind.count += 1
        kind.last_text = text[:MAX_TEXT]
        kind.last_time = now
        if sender not in kind.senders and len(kind.senders) < MAX_SENDERS:
            kind.senders.append(sender)
        rates = self.senders.get(sender)
        if rates is None and len(self.senders) < MAX_AGENTS:
            rates = self.senders[sender] = Kind(f"rate:{sender}", numeric=[True], mark=(now, 0))
        if rates is not None:
            rates.count += 1
        if name != OTHER_KIND:
            if split is None:
                values = numeric_fields(words)
            if len(kind.numeric) < len(values):
                kind.numeric.extend([False] * (len(values) - len(kind.numeric)))
            for i, value in enumerate(values):
                if value is not None:
                    kind.numeric[i] = True
            if any(value is not None for value in values):
                kind.window.append((now, values))
                while kind.window and kind.window[0][0] < now - WINDOW_SECONDS:
                    kind.window.popleft()
                points = self._new_points.setdefault(name, [])
                if len(points) < WINDOW_POINTS:
                    points.append([now, *values])
        self._changed_kinds.add(name)
        cut = text[:MAX_TEXT]
        self.tail.append((self.texts, now, sender, cut))
        if len(self._new_tail) < TAIL_LINES:
            self._new_tail.append((self.texts, now, sender, cut))

    def agent_seen(
        self, now: float, key: str, name: str, host: str, subs: Mapping[int, str]
    ) -> None:
        """An agent joined, or its subscriptions changed (only the first are kept)."""
        agent = self.agents.get(key)
        if agent is None:
            if len(self.agents) >= MAX_AGENTS:
                return
            agent = self.agents[key] = Agent(key, name[:MAX_TEXT], host, now, {})
            early = self._early.pop(key, None)
            if early is not None and now - early[0] < READY_WINDOW:
                agent.ready = early[1]
        first = itertools.islice(subs.items(), SUBSCRIPTIONS_SHOWN)
        agent.subscriptions = {sub_id: regexp[:MAX_TEXT] for sub_id, regexp in first}
        agent.subscription_count = len(subs)
        self._changed_agents[key] = None
        self._gone_agents.discard(key)

    def _first_text(self, now: float, key: str, text: str) -> None:
        # An agent's ready message is the first text it sends us on connecting;
        # its text may be read before its arrival is (two tasks): kept a moment.
        agent = self.agents.get(key)
        if agent is None:
            if key not in self._early and len(self._early) < MAX_AGENTS:
                self._early[key] = (now, text[:MAX_TEXT])
        elif agent.ready is None and now - agent.since < READY_WINDOW:
            agent.ready = text[:MAX_TEXT]
            self._changed_agents[key] = None

    def agent_gone(self, key: str) -> None:
        """An agent left."""
        self._early.pop(key, None)
        if self.agents.pop(key, None) is not None:
            self._gone_agents.add(key)
            self._changed_agents.pop(key, None)

    def agent_note(self, key: str, *, error: str | None = None, congested: bool = False) -> None:
        """An ERROR from the agent, or it stopped reading what we send it."""
        agent = self.agents.get(key)
        if agent is None:
            return
        if error is not None:
            agent.errors.append(error[:MAX_TEXT])
            self.event(f"ERROR from {agent.name}: {error[:MAX_TEXT]}")
        if congested and not agent.congested:
            agent.congested = True
            self.event(f"{agent.name} is congested (it reads slower than the bus sends)")
        self._changed_agents[key] = None

    def event(self, line: str) -> None:
        """A line for the page's event list."""
        self._event_number += 1
        self.events.append((self._event_number, line))
        if len(self._new_events) < 50:
            self._new_events.append((self._event_number, line))

    # ------------------------------------------------------------- web side
    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything, for a page that just opened, bounded: the regexps of
        agents past SNAPSHOT_SUBSCRIPTIONS come in the updates that follow."""
        agents, budget = [], SNAPSHOT_SUBSCRIPTIONS
        for agent in self.agents.values():
            shown = min(budget, SUBSCRIPTIONS_SHOWN)
            agents.append(agent.summary(shown))
            budget -= len(agents[-1]["subscriptions"])
            if shown < min(agent.subscription_count, SUBSCRIPTIONS_SHOWN):
                self._changed_agents[agent.key] = None  # (the rest of it, in an update)
        return {
            "type": "snapshot",
            "clock": [now, time.time()],
            "texts": self.texts,
            "agents": agents,
            "kinds": [kind.summary() for kind in self.kinds.values()],
            "tail": [list(line) for line in self.tail],
            "rates": {sender: rates.rate for sender, rates in self.senders.items()},
            "events": [list(event) for event in self.events],
        }

    def window(self, kind: str) -> list[list[Any]]:
        """The numeric samples a plot of ``kind`` (or ``rate:SENDER``) starts from."""
        found = self.kinds.get(kind) or self.senders.get(kind.removeprefix("rate:"))
        return [] if found is None else [[t, *values] for t, values in found.window]

    def window_version(self, kind: str) -> object:
        """What tells :meth:`window` changed: the same as long as it did not
        (samples are added at its end, and leave from its start); None for a
        kind the model does not have."""
        found = self.kinds.get(kind) or self.senders.get(kind.removeprefix("rate:"))
        if found is None:
            return None
        if not found.window:
            return (id(found), 0)
        window = found.window
        return (id(found), getattr(found, "count", 0), len(window), window[0][0], window[-1][0])

    def changes(self, now: float) -> dict[str, Any] | None:
        """What changed since the last call (``None``: nothing), bounded."""
        for name, kind in self.kinds.items():
            if kind.update_rate(now):
                self._changed_kinds.add(name)
        new_rates = {}
        for sender, rates in self.senders.items():
            if rates.mark is not None and now - rates.mark[0] >= RATE_PERIOD:
                if rates.update_rate(now):
                    new_rates[sender] = rates.rate
                rates.window.append((now, (rates.rate,)))
                self._new_points.setdefault(rates.name, []).append([now, rates.rate])
        if not (
            self._changed_kinds
            or self._changed_agents
            or self._gone_agents
            or self._new_events
            or self._new_points
        ):
            return None
        # the agents changed past AGENTS_PER_UPDATE wait for the next update
        now_agents = list(itertools.islice(self._changed_agents, AGENTS_PER_UPDATE))
        for key in now_agents:
            del self._changed_agents[key]
        update = {
            "type": "update",
            "clock": [now, time.time()],
            "texts": self.texts,
            "agents": [self.agents[key].summary() for key in now_agents if key in self.agents],
            "gone": sorted(self._gone_agents),
            "kinds": [self.kinds[k].summary() for k in self._changed_kinds if k in self.kinds],
            "tail": [list(line) for line in self._new_tail],
            "points": _first_points(self._new_points, UPDATE_POINTS),
            "rates": new_rates,
            "events": [list(event) for event in self._new_events],
        }
        self._changed_kinds, self._gone_agents = set(), set()
        self._new_tail, self._new_points, self._new_events = [], {}, []
        return update


def _first_points(points: dict[str, list[list[Any]]], budget: int) -> dict[str, list[list[Any]]]:
    """The new points of each kind, up to ``budget`` in all (the plots' windows hold the rest)."""
    taken = {}
    for name, kind_points in points.items():
        if budget <= 0:
            break
        taken[name] = kind_points[:budget]
        budget -= len(taken[name])
    return taken
