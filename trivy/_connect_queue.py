"""Which announced agents we connect to, and when: slots, a queue, penalties.

Each announce of an agent we are not connected to calls for an outgoing
connection. Anyone on the LAN can announce ports that never answer (a
listener whose accept queue is full drops the SYN: ``connect`` hangs until
its timeout), and do it again and again; each attempt holds a slot. Real
agents announce once, when they start: an announce that finds every slot
taken must not be lost. So :class:`ConnectQueue`

- runs at most :data:`MAX_CONNECTING` attempts at once, and at most
  :data:`MAX_CONNECTING_PER_HOST` to one other host (this machine's own
  agents share the whole pool: a cap would only delay them);
- keeps an announce that finds no free slot, in a queue bounded per host
  and in hosts, and serves the queue by host in turn as slots free, so a
  newcomer waits for at most one round of attempts from each other host;
- ignores, for :data:`HANGING_PENALTY` seconds, an address whose attempt
  timed out: announcing it again wins no slot;
- ignores for a while an address whose connection failed or ended before
  its handshake did (a listener that accepts and never speaks, or resets):
  :data:`FIRST_FAILURE_PENALTY` seconds, doubled at each such end in a row,
  up to :data:`HANGING_PENALTY`. 400 such addresses, announced as fast as
  a process could, made 101,157 connections in 14 s, the waiting
  handshakes churned, and the loop fell behind its UDP socket (the
  kernel dropped a newcomer's one announce). A real agent restarting at
  the same address after one failed handshake waits half a second.

It decides only; :class:`~trivy._discovery.Discovery` connects.
"""

from __future__ import annotations

from collections import Counter, deque

from ._options import is_loopback

__all__ = [
    "FIRST_FAILURE_PENALTY",
    "HANGING_PENALTY",
    "MAX_CONNECTING",
    "MAX_CONNECTING_PER_HOST",
    "MAX_WAITING_HOSTS",
    "MAX_WAITING_PER_HOST",
    "ConnectQueue",
]

#: Attempts at once, in all (each holds a socket and a task)...
MAX_CONNECTING = 64
#: ...and to one other host.
MAX_CONNECTING_PER_HOST = 16
#: Announces kept while no slot is free: per host, and hosts. Beyond, an
#: announce is dropped (and logged by the caller).
MAX_WAITING_PER_HOST = 64
MAX_WAITING_HOSTS = 256
#: Seconds an address whose attempt timed out is ignored...
HANGING_PENALTY = 60.0
#: ...and how many such addresses are remembered (the oldest are forgotten).
MAX_HANGING = 4096
#: Seconds an address whose connection ended before its handshake is ignored
#: (doubled at each such end in a row, up to HANGING_PENALTY).
FIRST_FAILURE_PENALTY = 0.5

Address = tuple[str, int]
#: An attempt to make: host, port, and the agent id its announce gave.
Attempt = tuple[str, int, str | None]


class ConnectQueue:
    """The outgoing connection attempts, running and waiting (see the module docstring)."""

    def __init__(self) -> None:
        self._running: set[Address] = set()
        self._per_host: Counter[str] = Counter()
        #: Waiting announces: port → agent id, by host, oldest first.
        self._waiting: dict[str, dict[int, str | None]] = {}
        self._turns: deque[str] = deque()  # hosts with waiting announces, in turn
        self._hanging: dict[Address, float] = {}  # address → ignored until then
        self._failures: dict[Address, int] = {}  # address → failed ends in a row

    def __len__(self) -> int:
        """Attempts running."""
        return len(self._running)

    def knows(self, host: str, port: int) -> bool:
        """Whether an attempt to ``host:port`` runs or waits."""
        return (host, port) in self._running or port in self._waiting.get(host, ())

    def offer(self, host: str, port: int, agent_id: str | None, now: float) -> str:
        """An announce of ``host:port``: what becomes of it.

        Returns ``"connect"`` (a slot is taken for it: connect now, then
        call :meth:`done`), ``"queued"``, ``"known"`` (it runs or waits
        already), ``"hanging"`` (it timed out lately) or ``"full"`` (no
        room to keep it).
        """
        address = (host, port)
        if self.knows(host, port):
            return "known"
        until = self._hanging.get(address)
        if until is not None:
            if now < until:
                return "hanging"
            del self._hanging[address]
        if host not in self._waiting and self._has_slot(host):
            self._take(address)
            return "connect"
        waiting = self._waiting.get(host)
        if waiting is None:
            if len(self._waiting) >= MAX_WAITING_HOSTS:
                return "full"
            waiting = self._waiting[host] = {}
            self._turns.append(host)
        elif len(waiting) >= MAX_WAITING_PER_HOST:
            return "full"
        waiting[port] = agent_id
        return "queued"

    def done(self, host: str, port: int, *, timed_out: bool, now: float) -> list[Attempt]:
        """The attempt to ``host:port`` is over; returns the waiting ones to start now."""
        address = (host, port)
        self._running.discard(address)
        self._per_host[host] -= 1
        if not self._per_host[host]:
            del self._per_host[host]
        if timed_out:
            self._ignore(address, now + HANGING_PENALTY)
        return self._next()

    def failed(self, host: str, port: int, now: float) -> None:
        """The connection to ``host:port`` failed or ended before its handshake."""
        address = (host, port)
        failures = self._failures.pop(address, 0) + 1
        if len(self._failures) >= MAX_HANGING:
            del self._failures[next(iter(self._failures))]
        self._failures[address] = failures
        penalty = FIRST_FAILURE_PENALTY * 2.0 ** min(failures - 1, 16)
        self._ignore(address, now + min(penalty, HANGING_PENALTY))

    def succeeded(self, host: str, port: int) -> None:
        """The connection to ``host:port`` completed its handshake."""
        self._failures.pop((host, port), None)

    def _ignore(self, address: Address, until: float) -> None:
        self._hanging.pop(address, None)  # (re-inserted: the newest last)
        if len(self._hanging) >= MAX_HANGING:
            del self._hanging[next(iter(self._hanging))]
        self._hanging[address] = until

    def _has_slot(self, host: str) -> bool:
        return len(self._running) < MAX_CONNECTING and (
            self._per_host[host] < MAX_CONNECTING_PER_HOST or is_loopback(host)
        )

    def _take(self, address: Address) -> None:
        self._running.add(address)
        self._per_host[address[0]] += 1

    def _next(self) -> list[Attempt]:
        """Waiting announces that now get a slot, one host after the other."""
        started: list[Attempt] = []
        turns = self._turns
        passed = 0  # hosts passed over in a row (at their cap)
        while turns and passed < len(turns) and len(self._running) < MAX_CONNECTING:
            host = turns.popleft()
            if not self._has_slot(host):
                turns.append(host)
                passed += 1
                continue
            passed = 0
            waiting = self._waiting[host]
            port = next(iter(waiting))
            started.append((host, port, waiting.pop(port)))
            self._take((host, port))
            if waiting:
                turns.append(host)
            else:
                del self._waiting[host]
        return started
