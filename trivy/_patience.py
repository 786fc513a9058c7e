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

from typing import Protocol

__all__ = ["FORGIVEN_PER_SECOND", "MAX_HOSTS_REMEMBERED", "Impatient", "Patience", "SharedPatience"]

#: Hosts whose last peer's account SharedPatience remembers for the next.
MAX_HOSTS_REMEMBERED = 1024
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

    def resume(self, waited: float, as_of: float) -> None:
        """Start from an account of ``waited`` seconds as of ``as_of`` (not waiting)."""
        self._waited, self._since, self._waiting = waited, as_of, False

    @property
    def settled(self) -> float:
        """Seconds waited, net of what was forgiven, as of the last change."""
        return self._waited

    def forgive(self, seconds: float, now: float) -> None:
        """Take ``seconds`` off the account (a peer it waited for is gone)."""
        waiting = self._waiting
        self._waited = self.waited(now)
        self._since = now
        self._waited = max(0.0, self._waited - seconds)
        self._waiting = waiting


class Impatient(Protocol):
    """A peer's output, as the senders' patience with all the peers sees it."""

    def let_go(self, reason: str) -> None:
        """Have the peer's writer let it go (every wait for it ends)."""
        ...


class SharedPatience:
    """The seconds senders waited for any of the peers, lately, and whose fault.

    Each peer's own :class:`Patience` forgives it while senders wait for
    the others, so peers slow in turns (40 in staggered phases kept ``send``
    waiting 57 s a minute, each within its own budget) never ran out of it.
    This account counts the time some sender waited, for whichever peer,
    and forgives at the same rate, only when nobody waits; each peer's part
    of it (its blame) is forgiven in proportion. Once the account reaches
    ``budget``, the peer with the most blame is let go, and its blame taken
    off the account.

    A peer's own account also outlives its connection: the next connection
    from its host starts from it (:meth:`patience_for`), so that a peer
    that reconnects just before its budget is spent (4.5 s of every 5)
    gets the rest of it, not a new one.

    Args:
      budget: seconds of waiting for all the peers together, net of what
        was forgiven (``math.inf``: never).
    """

    def __init__(self, budget: float) -> None:
        self.account = Patience(budget)
        self._blame: dict[Impatient, float] = {}  # settled, as of the last wait's end
        self._waited_since: dict[Impatient, float] = {}  # those waited for now
        # host → (its last peer's account, as of when), oldest first
        self._by_host: dict[str, tuple[float, float]] = {}

    def patience_for(self, host: str, budget: float, now: float) -> Patience:
        """The account of a new connection from ``host``: where its last one left it."""
        patience = Patience(budget)
        remembered = self._by_host.get(host)
        if remembered is not None:
            patience.resume(*remembered)
        return patience

    def remember(self, host: str, patience: Patience, now: float) -> None:
        """A connection from ``host`` closes: its account waits for the next one."""
        waited = patience.waited(now)
        by_host = self._by_host
        remembered = by_host.pop(host, None)
        if remembered is not None:  # (several peers on one host: the worst is kept)
            other = Patience(patience.budget)
            other.resume(*remembered)
            waited = max(waited, other.waited(now))
        if waited > 0:
            by_host[host] = (waited, now)
            if len(by_host) > MAX_HOSTS_REMEMBERED:
                del by_host[next(iter(by_host))]

    def start_waiting(self, member: Impatient, now: float) -> None:
        """Senders start to wait for ``member`` (nobody did)."""
        if not self._waited_since:
            before = self.account.settled
            self.account.start_waiting(now)
            self._forgive_in_proportion(before, self.account.settled)
        self._waited_since[member] = now

    def stop_waiting(self, member: Impatient, now: float) -> None:
        """Nobody waits for ``member`` any more."""
        since = self._waited_since.pop(member, None)
        if since is None:
            return
        self._blame[member] = self._blame.get(member, 0.0) + now - since
        if not self._waited_since:
            self.account.stop_waiting(now)

    def runs_out_at(self) -> float:
        """When the account reaches its budget if the present waits go on."""
        return self.account.runs_out_at()

    def blame(self, member: Impatient, now: float) -> float:
        """``member``'s part of the account."""
        since = self._waited_since.get(member)
        return self._blame.get(member, 0.0) + (0.0 if since is None else now - since)

    def leave(self, member: Impatient, now: float) -> None:
        """``member`` is gone: its part of the account goes with it."""
        self.stop_waiting(member, now)
        self.account.forgive(self._blame.pop(member, 0.0), now)

    def ran_out(self, now: float) -> None:
        """The account reached its budget: let go of the peer with the most blame."""
        members = {*self._blame, *self._waited_since}
        worst = max(members, key=lambda member: self.blame(member, now), default=None)
        if worst is None:  # (nobody to blame: what is left is rounding)
            self.account.forgive(self.account.waited(now), now)
            return
        self.leave(worst, now)
        worst.let_go(
            f"kept our senders waiting the most of all the peers, who made them"
            f" wait {self.account.budget:g} s in all, lately"
        )

    def _forgive_in_proportion(self, before: float, after: float) -> None:
        """The account was forgiven from ``before`` to ``after``: so is each part."""
        if after >= before:
            return
        ratio = after / before
        blame = self._blame
        for member, part in list(blame.items()):
            part *= ratio
            if part < 1e-6:
                del blame[member]
            else:
                blame[member] = part
