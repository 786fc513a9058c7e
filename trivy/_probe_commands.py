"""The probe's commands: what ``.help`` lists, and how the probe prints the bus.

The probe prints as ivy-c's and ivy-python's ivyprobes do: ``NAME sent
'g1' 'g2'`` for a match, ``NAME connected from HOST`` when an agent comes,
and, while ``.showbind`` is on, the other agents' subscription changes. A
peer's ``connected`` line always comes first: its subscriptions arrive
during its handshake, and its texts may be read before the event stream
reports it, so whichever line comes first announces it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import trio

from ._bus import IvyBus
from ._event_streams import EventStream
from ._events import (
    BusEvent,
    DirectMessage,
    ErrorReceived,
    Peer,
    PeerDisconnected,
    PeerResponsive,
    PeerUnresponsive,
    SubscriptionAdded,
    SubscriptionChanged,
    SubscriptionRemoved,
)

__all__ = ["PROBE_HELP", "Probe", "format_match", "unquote"]

#: Seconds ``.ping`` waits for a PONG.
PING_TIMEOUT = 5.0

PROBE_HELP = """\
Commands (anything else is sent as a message):
  .help                      this help
  .quit  (.bye)              leave the bus
  .who                       list the agents on the bus
  .where NAME                host:port of agent NAME
  .bind 'RE'                 subscribe to RE
  .unbind ID  (.remove ID)   remove our subscription ID
  .unbind 'RE'               remove our subscription to RE
  .regexps  (.bound)         list our subscriptions, with their ids
  .regexps NAME              list the subscriptions of agent NAME (* : of all)
  .showbind                  show the other agents' subscription changes (on/off)
  .direct NAME ID 'TEXT'     send a direct message to NAME
  .error NAME ID 'TEXT'      send an error message to NAME
  .ping NAME                 round trip to NAME, in ms
  .time N 'TEXT'             send TEXT N times, and say how fast
  .die NAME                  ask NAME to leave the bus
  .dieall-yes-i-am-sure      ask every agent to leave the bus
                             (also .die-all-yes-i-am-sure)"""


def _silent(text: str) -> None:
    pass


def format_match(peer: Peer, groups: Sequence[str]) -> str:
    """ivy-c's ivyprobe line for a match: ``NAME sent 'g1' 'g2'``."""
    return f"{peer.name} sent" + "".join(f" '{group}'" for group in groups)


def unquote(text: str) -> str:
    """Strip blanks, then one pair of surrounding single (or double) quotes."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def peers_count(count: int) -> str:
    """``1 peer``, ``N peers``, as ivy-c writes them."""
    return f"{count} peer" if count == 1 else f"{count} peers"


class Probe:
    """The interactive probe: bindings that print, and stdin commands.

    Args:
      bus: the probe's agent.
      out: prints one line (escaped).
      show_bindings: print the other agents' subscription changes.
      quiet: print only what the agents send (matches, direct messages,
        errors) and what commands answer.
    """

    def __init__(
        self,
        bus: IvyBus,
        out: Callable[[str], None],
        *,
        show_bindings: bool,
        quiet: bool = False,
    ) -> None:
        self.bus = bus
        self.out = out
        #: Prints what is about the bus rather than from it (comings and
        #: goings, counts of what was sent): nothing when quiet.
        self.say = _silent if quiet else out
        self.show_bindings = show_bindings
        self.done = False
        self._announced: set[Peer] = set()
        self._events: EventStream[BusEvent] | None = None

    def _announce(self, peer: Peer) -> None:
        """Print ``peer``'s connected line once, before any other line about it."""
        if peer not in self._announced:
            self._announced.add(peer)
            self.say(f"{peer.name} connected from {peer.host}")

    def print_match(self, peer: Peer, *groups: str) -> None:
        """The binding callback: ``NAME sent 'g1' 'g2'``."""
        self.show_pending()
        self._announce(peer)
        self.out(format_match(peer, groups))

    def show_pending(self) -> None:
        """Print the events that came before now, first.

        The reader emits a peer's events as it reads them, and calls the
        bindings at once: what came on the wire before a MSG (a direct
        message, an ERROR) waits in the event stream, and was printed after
        it, or never when a DIE ended the probe first.
        """
        while self._events is not None:
            try:
                event = self._events.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            self._show(event)

    def bind(self, regexp: str) -> int:
        """Bind ``regexp`` to :meth:`print_match`; returns its id."""
        return self.bus.bind(self.print_match, regexp)

    async def show_events(self, events: EventStream[BusEvent]) -> None:
        """Print connections, direct messages, errors and (when on) subscriptions."""
        self._events = events
        async for event in events:
            self._show(event)

    def _show(self, event: BusEvent) -> None:
        out = self.out
        if isinstance(event, PeerDisconnected):
            self._announced.discard(event.peer)
            self.say(f"{event.peer.name} disconnected from {event.peer.host}")
            return
        if isinstance(event, SubscriptionAdded | SubscriptionChanged):
            self._check_class(event.peer, event.subscription_id, event.regexp)
        subscription = SubscriptionAdded | SubscriptionChanged | SubscriptionRemoved
        if isinstance(event, subscription) and not self.show_bindings:
            return
        self._announce(event.peer)  # (its subscriptions come before its handshake ends)
        if isinstance(event, DirectMessage):
            out(f"{event.peer.name} sent a direct message, id={event.num_id}: '{event.text}'")
        elif isinstance(event, ErrorReceived):
            out(f"{event.peer.name} sent an error, id={event.num_id}: '{event.text}'")
        elif isinstance(event, SubscriptionAdded):
            out(f"{event.peer.name} subscribed id={event.subscription_id} '{event.regexp}'")
        elif isinstance(event, SubscriptionChanged):
            out(
                f"{event.peer.name} changed id={event.subscription_id}"
                f" '{event.old_regexp}' -> '{event.regexp}'"
            )
        elif isinstance(event, SubscriptionRemoved):
            out(f"{event.peer.name} unsubscribed id={event.subscription_id} '{event.regexp}'")
        elif isinstance(event, PeerUnresponsive):
            out(f"{event.peer.name} answers nothing (silent for {event.silent_for:.0f} s)")
        elif isinstance(event, PeerResponsive):
            out(f"{event.peer.name} answers again")

    def _check_class(self, peer: Peer, sub_id: int, regexp: str) -> None:
        """Say so when our message classes (``-c``) make a peer's regexp useless,
        as ivy-c and ivy-java do: a text of ours can never match it."""
        if not self.bus.message_classes.admits(regexp):
            self._announce(peer)
            self.out(
                f"-> {peer.name} id={sub_id} '{regexp}' fits none of our message"
                " classes: it has no effect"
            )

    def _peers(self, name: str) -> list[Peer]:
        peers = self.bus.peers_named(name)
        if not peers:
            self.out(f"-> no agent named {name!r}")
        return peers

    async def command(self, line: str) -> None:
        """Run one stdin line: a ``.command`` or a message to send."""
        if not line.startswith("."):  # (an empty line too, as ivy-c's probe: it reaches nobody)
            try:
                count = await self.bus.send(line)
            except ValueError as exc:  # (too long for a MSG line: the next lines still go)
                self.out(f"-> not sent: {exc}")
                return
            self.say(f"-> Sent to {peers_count(count)}")
            return
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        handler = self._COMMANDS.get(name)
        if handler is None:
            self.out(f"-> unknown command {name!r} (try .help)")
            return
        try:
            await handler(self, rest)
        except (ValueError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            self.out(f"-> {name}: {message}")

    async def _help(self, rest: str) -> None:
        for help_line in PROBE_HELP.splitlines():
            self.out(help_line)

    async def _quit(self, rest: str) -> None:
        self.done = True

    async def _who(self, rest: str) -> None:
        self.out("Apps:" + "".join(f" {peer.name}" for peer in self.bus.peers))

    async def _where(self, rest: str) -> None:
        if not rest:
            raise ValueError("usage: .where NAME")
        for peer in self._peers(rest):
            self.out(f"{peer.name} on {peer.host}:{peer.port}")

    async def _bind(self, rest: str) -> None:
        regexp = unquote(rest)
        if not regexp:
            raise ValueError("usage: .bind 'REGEXP'")
        sub_id = self.bind(regexp)
        self.out(f"-> bound id={sub_id} '{regexp}'")

    async def _unbind(self, rest: str) -> None:
        if not rest:
            raise ValueError("usage: .unbind ID, or .unbind 'REGEXP'")
        try:
            sub_ids = [int(rest)]
        except ValueError:  # ivy-java's form: by the regexp
            wanted = unquote(rest)
            sub_ids = [i for i, regexp in self.bus.subscriptions.items() if regexp == wanted]
            if not sub_ids:
                raise ValueError(f"no subscription of ours is {wanted!r}") from None
        for sub_id in sub_ids:
            regexp = self.bus.unbind(sub_id)
            self.out(f"-> unbound id={sub_id} '{regexp}'")

    async def _regexps(self, rest: str) -> None:
        if rest:
            for peer in self.bus.peers if rest == "*" else self._peers(rest):
                self.out(f"{peer.name} subscriptions:")
                for sub_id, regexp in sorted(peer.subscriptions.items()):
                    self.out(f"  id={sub_id} '{regexp}'")
            return
        self.out("our subscriptions:")
        for sub_id, regexp in sorted(self.bus.subscriptions.items()):
            self.out(f"  id={sub_id} '{regexp}'")

    async def _showbind(self, rest: str) -> None:
        self.show_bindings = not self.show_bindings
        state = "shown" if self.show_bindings else "hidden"
        self.out(f"-> the other agents' subscription changes are {state}")

    def _addressed(self, rest: str, usage: str) -> tuple[list[Peer], int, str]:
        parts = rest.split(None, 2)
        if len(parts) < 3:
            raise ValueError(f"usage: {usage}")
        name, id_text, text = parts
        try:
            num_id = int(id_text)
        except ValueError:
            raise ValueError(f"bad id {id_text!r}") from None
        return self._peers(name), num_id, unquote(text)

    async def _direct(self, rest: str) -> None:
        peers, num_id, text = self._addressed(rest, ".direct NAME ID 'TEXT'")
        for peer in peers:
            self.bus.send_direct(peer, num_id, text)
            self.out(f"-> Sent direct message to {peer.name}")

    async def _error(self, rest: str) -> None:
        peers, num_id, text = self._addressed(rest, ".error NAME ID 'TEXT'")
        for peer in peers:
            self.bus.send_error(peer, num_id, text)
            self.out(f"-> Sent error message to {peer.name}")

    async def _ping(self, rest: str) -> None:
        if not rest:
            raise ValueError("usage: .ping NAME")
        for peer in self._peers(rest):
            try:
                with trio.fail_after(PING_TIMEOUT):
                    seconds = await self.bus.ping(peer)
            except trio.TooSlowError:
                self.out(f"-> {peer.name}: no answer within {PING_TIMEOUT:g} s")
                continue
            except Exception as exc:  # the peer left meanwhile
                self.out(f"-> {peer.name}: {exc}")
                continue
            self.out(f"{peer.name} round trip {seconds * 1000:.3f} ms")

    async def _time(self, rest: str) -> None:
        count_text, _, text = rest.partition(" ")
        try:
            count = int(count_text)
        except ValueError:
            count = 0
        if count < 1 or not text:
            raise ValueError("usage: .time N 'TEXT' (N at least 1)")
        text = unquote(text)
        start = trio.current_time()
        messages = 0
        for _ in range(count):
            messages += await self.bus.send(text)
        seconds = max(trio.current_time() - start, 1e-9)
        self.out(
            f"-> sent {count} texts ({messages} messages) in {seconds * 1000:.1f} ms,"
            f" {count / seconds:.0f} texts/s"
        )

    async def _die(self, rest: str) -> None:
        if not rest:
            raise ValueError("usage: .die NAME")
        for peer in self._peers(rest):
            self.bus.send_die(peer)
            self.out(f"-> Asked {peer.name} to die")

    async def _dieall(self, rest: str) -> None:
        peers = self.bus.peers
        for peer in peers:
            self.bus.send_die(peer)
        self.out(f"-> Asked {len(peers)} agents to die")

    _COMMANDS: ClassVar[dict[str, Callable[[Probe, str], Any]]] = {
        ".help": _help,
        ".quit": _quit,
        ".bye": _quit,
        ".who": _who,
        ".where": _where,
        ".bind": _bind,
        ".unbind": _unbind,
        ".remove": _unbind,
        ".regexps": _regexps,
        ".bound": _regexps,
        ".time": _time,
        ".showbind": _showbind,
        ".direct": _direct,
        ".error": _error,
        ".ping": _ping,
        ".die": _die,
        ".dieall-yes-i-am-sure": _dieall,
        ".die-all-yes-i-am-sure": _dieall,
    }
