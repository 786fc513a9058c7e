"""Bounds on what the broker's clients can make a bridge log.

Anyone who may publish on the prefix's topics can make a bridge log (a
malformed message, a refused regexp, an agent over the cap), so every such
line goes through a :class:`LimitedLog`: a burst of records of one kind,
then one a second at most; the rest are counted, and the count rides on
the next record of that kind let through. What the broker's clients chose
(names, topics, regexps) is :func:`cut` short first.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

__all__ = ["LOG_BURST", "LOG_CUT", "LOG_EVERY", "LimitedLog", "cut"]

#: Records of one kind logged at once before the limit applies ...
LOG_BURST = 20
#: ... then one every this many seconds (the burst refills at that pace).
LOG_EVERY = 1.0
#: Characters of a name, topic or regexp from the broker put in a log line.
LOG_CUT = 200


def cut(text: object, limit: int = LOG_CUT) -> str:
    """``text``, cut to ``limit`` characters (saying how long it was)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class LimitedLog:
    """A logger's records, rate-limited by kind (a token bucket per kind).

    Attributes:
      asked: records asked for, by kind, logged or not.
      held: records not logged, by kind (all time).
    """

    def __init__(
        self, logger: logging.Logger, burst: int = LOG_BURST, every: float = LOG_EVERY
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._every = every
        # kind -> (tokens, when counted); kinds are the code's own strings: few
        self._buckets: dict[str, tuple[float, float]] = {}
        self._unsaid: Counter[str] = Counter()  # held since the last record logged
        self.asked: Counter[str] = Counter()
        self.held: Counter[str] = Counter()

    def warning(self, kind: str, message: str, *args: object) -> None:
        """Log a warning of this kind, unless over its rate."""
        self.log(logging.WARNING, kind, message, *args)

    def info(self, kind: str, message: str, *args: object) -> None:
        """Log an info record of this kind, unless over its rate."""
        self.log(logging.INFO, kind, message, *args)

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        """Log a record of this kind, or count it if over its rate."""
        self.asked[kind] += 1
        now = time.monotonic()
        tokens, then = self._buckets.get(kind, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - then) / self._every)
        if tokens < 1:
            self._buckets[kind] = (tokens, now)
            self._unsaid[kind] += 1
            self.held[kind] += 1
            return
        self._buckets[kind] = (tokens - 1, now)
        unsaid = self._unsaid.pop(kind, 0)
        if unsaid:
            message += " (and %d more like it, not logged)"
            args = (*args, unsaid)
        self._logger.log(level, message, *args)
