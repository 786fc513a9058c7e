"""Our PINGs to one peer, and the PONGs that answer them.

A PING goes out through the peer's connection; :meth:`Pings.ping` waits for
its PONG and measures the round trip. The heartbeat's PINGs are not waited
for: at most one of them stays expected, so a peer that never answers
costs nothing that grows.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from ._connection import Connection

__all__ = ["Pings"]


@attrs.define(eq=False)
class _Pending:
    sent_at: float
    answered: trio.Event = attrs.field(factory=trio.Event)
    round_trip: float | None = None


class Pings:
    """The PINGs of one session.

    Args:
      conn: the peer's connection, which sends them and knows their ids.
      flush: has the queued PING written.
      name: names the peer in errors.
    """

    def __init__(self, conn: Connection, flush: Callable[[], None], name: object) -> None:
        self._conn = conn
        self._flush = flush
        self._name = name
        self._waiting: dict[int, _Pending] = {}
        self._heartbeat: int | None = None
        #: PINGs sent so far (waited for or not).
        self.sent = 0

    def _send(self) -> int:
        ping_id = self._conn.send_ping()
        self.sent += 1
        self._flush()
        return ping_id

    async def ping(self) -> float:
        """PING the peer, wait for its PONG; returns the round trip in seconds.

        Raises:
          ConnectionError: the peer left before answering.
          IvyIllegalStateError: we already said BYE on this connection.
        """
        ping_id = self._send()
        pending = self._waiting[ping_id] = _Pending(trio.current_time())
        try:
            await pending.answered.wait()
        finally:
            if self._waiting.pop(ping_id, None) is not None:
                self._conn.forget_ping(ping_id)
        if pending.round_trip is None:
            raise ConnectionError(f"{self._name} left before answering the PING")
        return pending.round_trip

    def pong(self, ping_id: int) -> None:
        """The PONG of ``ping_id`` arrived."""
        pending = self._waiting.pop(ping_id, None)
        if pending is not None:
            pending.round_trip = trio.current_time() - pending.sent_at
            pending.answered.set()

    def heartbeat(self) -> None:
        """PING for the heartbeat, forgetting the previous one if unanswered."""
        if self._heartbeat is not None:
            self._conn.forget_ping(self._heartbeat)
        self._heartbeat = self._send()

    def fail_all(self) -> None:
        """The peer is gone: every waiting :meth:`ping` raises."""
        for pending in self._waiting.values():
            pending.answered.set()
        self._waiting.clear()
