"""What one peer subscribed with, within limits (sans-IO).

Every agent runs its peers' regexps on its own texts, so a peer's
subscriptions are a cost it imposes on us: their number, their length and
their total size are bounded here, before any is compiled. Whether a regexp
compiles is the matcher's verdict (:mod:`trivy._matching`); this module only
keeps the books.
"""

from __future__ import annotations

import re

from ._protocol_events import RegexpAdded, RegexpRejected, RegexpRemoved

__all__ = [
    "MAX_PEER_REGEXP_BYTES",
    "MAX_PEER_SUBSCRIPTIONS",
    "MAX_REGEXP_LENGTH",
    "MAX_SUBSCRIPTIONS",
    "MAX_SUBSCRIPTION_ID",
    "REGEXP_ERRORS",
    "SUBSCRIPTION_FLOOR",
    "PeerRegexps",
    "regexp_error",
]

#: Longest regexp a peer may subscribe with, in characters. Ivy regexps are
#: a line of text; 16 KiB holds an alternation of a thousand message names,
#: and compiles in about 30 ms at worst (5,000 groups) on a 2-core machine,
#: so no compile holds the event loop for long.
MAX_REGEXP_LENGTH = 16 * 1024
#: Subscriptions one peer may hold at once. Real agents have tens; ten
#: thousand leaves room for generated ones while bounding the table.
MAX_PEER_SUBSCRIPTIONS = 10_000
#: Subscriptions all the peers together may hold before new ones are
#: refused: each one matching a text costs that send a MSG (about 0.7 us),
#: and 300 peers of 10,000 ids made 3 million MSGs a send (2 s) and held
#: 729 MB.
MAX_SUBSCRIPTIONS = 50_000
#: Subscriptions a peer may hold even past MAX_SUBSCRIPTIONS, so that no
#: peers that subscribed first shut a newcomer out (real agents have tens):
#: the table holds MAX_SUBSCRIPTIONS + SUBSCRIPTION_FLOOR x max_peers at most.
SUBSCRIPTION_FLOOR = 100
#: Characters of regexps one peer may hold in all: what its subscriptions
#: cost us in memory, compiled, stays within a few megabytes.
MAX_PEER_REGEXP_BYTES = 1024 * 1024
#: Largest subscription id taken from a peer: ids are small counters in
#: every implementation, and each of our MSGs to it carries the id, so a
#: huge one would push a MSG of a long text over the line limit.
MAX_SUBSCRIPTION_ID = 2**63 - 1
#: What compiling a regexp may raise: not only ``re.error``;
#: ``a{4294967296}`` overflows, 500 nested groups recurse too deep.
REGEXP_ERRORS = (re.error, OverflowError, RecursionError, ValueError)


def regexp_error(error: Exception) -> tuple[str, int]:
    """The reason and the offset an ERROR gives for a regexp that did not compile."""
    reason = getattr(error, "msg", None) or str(error) or type(error).__name__
    return reason, getattr(error, "pos", 0) or 0


class PeerRegexps:
    """One peer's subscriptions: id → regexp, in the order they came.

    Args:
      max_length, max_count, max_total: the limits (see the module's
        constants); a regexp over one of them is refused.
    """

    def __init__(
        self,
        max_length: int = MAX_REGEXP_LENGTH,
        max_count: int = MAX_PEER_SUBSCRIPTIONS,
        max_total: int = MAX_PEER_REGEXP_BYTES,
    ) -> None:
        self.by_id: dict[int, str] = {}
        self.max_length = max_length
        self.max_count = max_count
        self.max_total = max_total
        self._total = 0

    def add(self, sub_id: int, regexp: str) -> RegexpAdded | RegexpRejected:
        """ADD_REGEXP: record it, or refuse it if it breaks a limit."""
        replaced = self.by_id.get(sub_id)
        total = self._total + len(regexp) - (0 if replaced is None else len(replaced))
        if not 0 <= sub_id <= MAX_SUBSCRIPTION_ID:
            reason = f"subscription id out of range (0 to {MAX_SUBSCRIPTION_ID})"
        elif len(regexp) > self.max_length:
            reason = f"regexp longer than {self.max_length} characters"
        elif replaced is None and len(self.by_id) >= self.max_count:
            reason = f"more than {self.max_count} subscriptions"
        elif total > self.max_total:
            reason = f"regexps over {self.max_total} characters in all"
        else:
            self.by_id[sub_id] = regexp
            self._total = total
            return RegexpAdded(sub_id, regexp, replaced)
        return self.reject(sub_id, regexp, reason)

    def reject(self, sub_id: int, regexp: str, reason: str) -> RegexpRejected:
        """Refuse ``regexp`` for ``sub_id``; what had that id before goes too.

        (After the fact, when the matcher refuses a regexp :meth:`add` took,
        the removed regexp is that one: then ``replaced`` is None, and what
        the ADD_REGEXP replaced is in its :class:`RegexpAdded` event.)
        """
        replaced = self.remove(sub_id)
        return RegexpRejected(sub_id, regexp, reason, None if replaced == regexp else replaced)

    def remove(self, sub_id: int) -> str | None:
        """Forget ``sub_id``; returns its regexp (None if unknown)."""
        removed = self.by_id.pop(sub_id, None)
        if removed is not None:
            self._total -= len(removed)
        return removed

    def removed(self, sub_id: int) -> RegexpRemoved | None:
        """DEL_REGEXP: the event, or None for an id it does not have."""
        regexp = self.remove(sub_id)
        return None if regexp is None else RegexpRemoved(sub_id, regexp)
