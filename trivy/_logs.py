"""Logging what peers do, at a bounded cost.

Whatever a peer controls (its name, its lines, its texts) reaches the logs
cut short, and each peer's records are rate-limited: a peer that sends a
malformed line a microsecond cannot make us write megabytes a second. A
connection's budget is drawn from its source host's too
(:class:`SourceLogs`): a peer that reconnects gets a new connection, not a
new budget; and the hosts' from one budget for all of them: connections
from many addresses cannot add up to megabytes either.
"""

from __future__ import annotations

import logging
from time import monotonic

__all__ = [
    "ALL_SOURCES_BURST",
    "ALL_SOURCES_INTERVAL",
    "LOG_BURST",
    "LOG_INTERVAL",
    "MAX_LOGGED",
    "MAX_SOURCES",
    "SOURCE_BURST",
    "SOURCE_INTERVAL",
    "LogLimiter",
    "SourceLogs",
    "shorten",
]

#: Characters of a peer-controlled string that a log record quotes.
MAX_LOGGED = 200
#: Records about one peer (or source) logged in a burst...
LOG_BURST = 20
#: ...then one per this many seconds; the rest are counted, and the count
#: is logged with the next record that passes.
LOG_INTERVAL = 1.0
#: Records about all the connections from one host, in a burst, then one
#: per SOURCE_INTERVAL: several agents of one host each get their own
#: connection's share within it, a peer that reconnects does not.
SOURCE_BURST = 100
SOURCE_INTERVAL = 0.2
#: Hosts whose budgets are remembered (the least recent are forgotten).
MAX_SOURCES = 1024
#: Records about all the hosts together, in a burst, then one per
#: ALL_SOURCES_INTERVAL: 1,500 hosts (all of 127/8 is this machine's) with
#: a budget each made 149,401 records.
ALL_SOURCES_BURST = 1000
ALL_SOURCES_INTERVAL = 0.05


def shorten(text: str, limit: int = MAX_LOGGED) -> str:
    """``text``, cut to ``limit`` characters with a mark that it was cut."""
    return text if len(text) <= limit else f"{text[:limit]}…[{len(text)} chars]"


class LogLimiter:
    """A token bucket in front of a logger: ``burst`` records, then one per ``interval``.

    With a ``parent``, a record must also pass the parent's bucket (a
    connection's records, within its host's).
    """

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = LOG_BURST,
        interval: float = LOG_INTERVAL,
        parent: LogLimiter | None = None,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.parent = parent
        self.suppressed = 0
        self._tokens = float(burst)
        self._last = monotonic()

    def _take(self, now: float) -> bool:
        """A token from this bucket and each of its parents', or none taken."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) / self.interval)
        self._last = now
        if self._tokens < 1 or (self.parent is not None and not self.parent._take(now)):
            return False
        self._tokens -= 1
        return True

    def log(self, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        """Log unless this source used up its share; count what is held back.

        With ``exc_info``, the record carries the exception being handled
        (its traceback is formatted only when the record passes).
        """
        if not self.logger.isEnabledFor(level):
            return
        now = monotonic()
        if not self._take(now):
            self.suppressed += 1
            return
        if self.suppressed:
            self.logger.log(level, "(%d more records like these were not logged)", self.suppressed)
            self.suppressed = 0
        self.logger.log(level, message, *args, exc_info=exc_info)

    def exception(self, message: str, *args: object) -> None:
        """:meth:`log` at ERROR, with the exception being handled."""
        self.log(logging.ERROR, message, *args, exc_info=True)

    def warning(self, message: str, *args: object) -> None:
        """:meth:`log` at WARNING."""
        self.log(logging.WARNING, message, *args)

    def info(self, message: str, *args: object) -> None:
        """:meth:`log` at INFO."""
        self.log(logging.INFO, message, *args)


class SourceLogs:
    """One log budget per source host, shared by its connections, across
    reconnects, and all within one budget for every host."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._all = LogLimiter(logger, ALL_SOURCES_BURST, ALL_SOURCES_INTERVAL)
        self._by_host: dict[str, LogLimiter] = {}  # least recently used first

    def for_connection(self, host: str) -> LogLimiter:
        """A new connection's limiter, within ``host``'s budget."""
        budget = self._by_host.pop(host, None)
        if budget is None:
            budget = LogLimiter(self._logger, SOURCE_BURST, SOURCE_INTERVAL, parent=self._all)
            if len(self._by_host) >= MAX_SOURCES:
                del self._by_host[next(iter(self._by_host))]
        self._by_host[host] = budget
        return LogLimiter(self._logger, parent=budget)
