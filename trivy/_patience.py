"""How long one peer may keep our senders waiting: a leaky bucket of seconds.

A peer over its output limit makes ``send`` wait. One that reads a trickle
(64 KiB every 4 s) takes some bytes before every stall check, yet holds
every sender to its pace for as long as it likes. So the time senders
spend waiting for one peer is charged to it: :class:`Patience` adds up the
seconds someone waited and forgives :data:`FORGIVEN_PER_SECOND` of them per
second nobody did. Once the total reaches the budget (``stall_timeout``),
the peer is let go. A peer that is behind now and then (a burst, a pause)
never reaches it; one that keeps the senders waiting most of the time
does, within the budget: no ``send`` waits longer than that for one peer.
"""

from __future__ import annotations

__all__ = ["FORGIVEN_PER_SECOND", "Patience", "SharedPatience"]

#: Seconds of waiting forgiven per second in which nobody waits: a peer may
#: keep senders waiting one second in eleven for ever, and the whole budget
#: once in a while.
FORGIVEN_PER_SECOND = 0.1


class Patience:
    """The seconds senders waited for one peer, lately (see the module docstring).

    Args:
      budget: seconds of waiting, net of what was forgiven, past which the
        peer has run out of patience (``math.inf``: never).
    """

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self._waited = 0.0  # net of what was forgiven, as of _since
        self._since = 0.0
        self._waiting = False
        self._waiters = 0

    def add_waiter(self, now: float) -> None:
        """One more waits for the peer (or is counted as if it did)."""
        if not self._waiters:
            self.start_waiting(now)
        self._waiters += 1

    def remove_waiter(self, now: float) -> None:
        """One fewer waits for the peer."""
        self._waiters -= 1
        if not self._waiters:
            self.stop_waiting(now)

    def start_waiting(self, now: float) -> None:
        """Someone starts to wait for the peer (nobody did)."""
        idle = now - self._since
        self._waited = max(0.0, self._waited - idle * FORGIVEN_PER_SECOND)
        self._since = now
        self._waiting = True

    def stop_waiting(self, now: float) -> None:
        """Nobody waits for the peer any more."""
        self._waited += now - self._since
        self._since = now
        self._waiting = False

    def runs_out_at(self) -> float:
        """When the patience runs out if the present wait goes on."""
        return self._since + self.budget - self._waited

    def waited(self, now: float) -> float:
        """Seconds waited for the peer, net of what was forgiven, as of ``now``."""
        if self._waiting:
            return self._waited + now - self._since
        return max(0.0, self._waited - (now - self._since) * FORGIVEN_PER_SECOND)


class SharedPatience:
    """The seconds senders waited for any of the peers, lately.

    Each peer's own :class:`Patience` forgives it while senders wait for
    the others, so peers slow in turns (40 in staggered phases kept ``send``
    waiting 57 s a minute, each within its own budget) never ran out of it.
    This account counts the time some sender waited, for whichever peer,
    and forgives at the same rate, only when nobody waits. Once it reaches
    ``budget``, the peers waited for are excused (see
    :meth:`PeerOutput.wait_for_room <trivy._output.PeerOutput.wait_for_room>`):
    the senders stop waiting for them and their MSGs over the limit are
    dropped until they take all they have; and so is, at once, any peer that
    would make a sender wait before the account is forgiven some of it.

    Nobody is disconnected for it: which peer is to blame cannot be told
    from the account (30 peers that each lagged once, then a peer that
    lagged 0.6 s after them: the latter had the most blame and was
    dropped, isolated for a lag well within its own patience). Nor does a
    peer that leaves take its part with it: peers that reconnect as soon
    as they are dropped would then start the account over, again and again.

    Args:
      budget: seconds of waiting for all the peers together, net of what
        was forgiven (``math.inf``: never).
    """

    def __init__(self, budget: float) -> None:
        self.account = Patience(budget)
        self._waited_for: set[object] = set()  # the peers senders wait for now

    def start_waiting(self, member: object, now: float) -> None:
        """Senders start to wait for ``member`` (nobody did)."""
        if not self._waited_for:
            self.account.start_waiting(now)
        self._waited_for.add(member)

    def stop_waiting(self, member: object, now: float) -> None:
        """Nobody waits for ``member`` any more (or it left)."""
        if member not in self._waited_for:
            return
        self._waited_for.discard(member)
        if not self._waited_for:
            self.account.stop_waiting(now)

    def runs_out_at(self) -> float:
        """When the account reaches its budget if the present waits go on."""
        return self.account.runs_out_at()
