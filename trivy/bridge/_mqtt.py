"""paho-mqtt driven from trio: one task owns the client and its socket.

paho-mqtt's external-loop API leaves the I/O to the caller: the driver
task waits on the client's socket with trio (readable; writable while paho
has bytes to write) and calls ``loop_read``, ``loop_write`` and, every
second, ``loop_misc`` (keepalive). paho's callbacks run inside those calls,
in the driver task; they only collect what arrived, and the driver hands
it to a memory channel as it has room: a bridge that cannot keep up stops
reading the broker (backpressure), it drops nothing, and the driver still
writes and keeps the connection alive meanwhile (it waited for room, and
the broker dropped a bridge that was behind for its missed keepalives).
The other way, :meth:`MqttClient.wait_room` waits while too many of our
messages await the broker's acknowledgement.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from time import perf_counter
from typing import Any

import attrs
import paho.mqtt.client as paho
import trio
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["RECEIVED_BYTES", "MqttClient", "MqttError", "MqttMessage", "open_mqtt"]

#: Seconds between two calls of paho's ``loop_misc`` (keepalive, timeouts).
MISC_EVERY = 1.0
#: Received messages handed to the bridge at once (its channel's size);
#: more wait with the driver.
RECEIVED_BUFFER = 1000
#: Bytes of received messages held for the bridge, each counted with its
#: topic and MESSAGE_OVERHEAD (1,000 messages of 4 MiB held 4 GiB). Reading stops once
#: they are held (what one read brings, the socket's buffer, comes on top)
#: until the bridge takes some; the driver still writes and keeps the
#: connection alive meanwhile (it used to wait for room, and the broker
#: dropped a bridge behind for its missed keepalives).
RECEIVED_BYTES = 64 * 1024 * 1024
#: What a received message costs beyond its payload (its objects, its topic).
MESSAGE_OVERHEAD = 512
#: Messages paho may hold for the broker (unacknowledged and unsent):
#: past it, publish fails and the message is dropped, rather than memory
#: growing with a broker that is slow or gone.
MAX_OUTGOING = 10_000
#: Packets one ``loop_read`` handles before the driver yields.
READ_PACKETS = 100
#: Our messages awaiting the broker's acknowledgement past which
#: :meth:`MqttClient.wait_room` waits (a slow broker slows the senders).
UNACKED_HIGH = 1000
#: Seconds the bridge takes received messages (and handles them) before its
#: ``async for`` yields: a receive on each one made it handle one message a
#: pass of the scheduler, a few a second when the passes were long.
TAKE_SLICE = 0.002


@attrs.frozen
class MqttMessage:
    """A message from the broker."""

    topic: str
    payload: bytes
    retain: bool


class MqttError(OSError):
    """The broker could not be reached, or refused or dropped us."""


class MqttClient:
    """A connected client: publish, subscribe, and read what arrives (``async for``)."""

    def __init__(self, client: paho.Client) -> None:
        self._client = client
        self._send, self._received = trio.open_memory_channel[MqttMessage](RECEIVED_BUFFER)
        self._arrived: deque[MqttMessage] = deque()  # (filled by paho's callback)
        self._turn = perf_counter()  # (when the bridge's turn of taking messages began)
        #: Bytes of the received messages the bridge has not taken yet, as
        #: counted (their topics too, and MESSAGE_OVERHEAD each).
        self.held = 0
        self._failure = ""
        self._woken = False
        self._waiting: trio.CancelScope | None = None
        self.connected = trio.Event()
        self._unacked = 0
        self._room = trio.Event()
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    # paho's callbacks, called from loop_read/loop_write/loop_misc
    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        payload, topic = bytes(message.payload), message.topic
        self.held += _cost(topic, payload)
        self._arrived.append(MqttMessage(topic, payload, message.retain))

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self._failure = f"the broker refused us: {reason}"
        else:
            self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._failure = self._failure or f"the broker dropped us: {reason}"
        self._room.set()

    def _on_publish(self, _c: Any, _u: Any, _mid: Any, _reason: Any, _props: Any) -> None:
        self._unacked -= 1
        if self._unacked < UNACKED_HIGH:
            self._room.set()

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """Queue a message (QoS 1: the broker acknowledges it); never blocks."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}")
        self._unacked += 1
        self._wake()

    async def wait_room(self) -> None:
        """Wait while the broker has not acknowledged many of our messages."""
        while self._unacked >= UNACKED_HIGH and not self._failure:
            self._room = trio.Event()
            await self._room.wait()

    def subscribe(self, topic: str) -> None:
        """Receive what is published on ``topic`` (wildcards allowed)."""
        result, _ = self._client.subscribe(topic, qos=1)
        if result != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"cannot subscribe to {topic!r}: {paho.error_string(result)}")
        self._wake()

    @property
    def lost(self) -> bool:
        """Whether the broker refused or dropped us (the driver then ends)."""
        return bool(self._failure)

    def __aiter__(self) -> MqttClient:
        return self

    async def __anext__(self) -> MqttMessage:
        if perf_counter() - self._turn > TAKE_SLICE:
            await trio.lowlevel.checkpoint()  # (before taking: cancelled, it takes nothing)
            self._turn = perf_counter()
        try:
            try:
                message = self._received.receive_nowait()
            except trio.WouldBlock:
                message = await self._received.receive()  # (cancelled, it takes nothing)
                self._turn = perf_counter()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        held = self.held
        self.held -= _cost(message.topic, message.payload)
        if self._waiting is not None and (self._arrived or held >= RECEIVED_BYTES > self.held):
            self._waiting.cancel()  # (the driver has more to hand over, or may read again)
        return message

    def _check(self, result: int) -> None:
        if self._failure:
            raise MqttError(self._failure)
        if result not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_AGAIN):
            self._failure = f"connection to the broker lost: {paho.error_string(result)}"
            self._room.set()
            raise MqttError(self._failure)

    async def drive(self) -> None:
        """The driver task: the client's I/O, until cancelled or the broker is lost."""
        client = self._client
        sock = client.socket()
        if not isinstance(sock, socket.socket):
            raise MqttError("the MQTT client has no socket")
        next_misc = trio.current_time() + MISC_EVERY
        while True:
            self._woken = False
            if client.want_write():
                self._check(client.loop_write())
                if client.want_write():  # (the socket is full: wait, reading nothing)
                    with trio.move_on_at(next_misc):
                        await trio.lowlevel.wait_writable(sock)
            # (TLS may hold decrypted bytes the socket no longer signals)
            readable = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if self._hand_over() >= RECEIVED_BYTES:  # (no more read; writes go on)
                readable = False
                with trio.move_on_at(next_misc) as self._waiting:  # (a take or publish ends it)
                    await trio.sleep_forever()
                self._waiting = None
            elif not readable and not self._woken and not client.want_write():
                with trio.move_on_at(next_misc) as self._waiting:  # (publish cancels it)
                    await trio.lowlevel.wait_readable(sock)
                    readable = True
                self._waiting = None
            if readable:
                self._check(client.loop_read(READ_PACKETS))
            if trio.current_time() >= next_misc:
                self._check(client.loop_misc())
                next_misc = trio.current_time() + MISC_EVERY
            self._hand_over()
            await trio.lowlevel.checkpoint()

    def _hand_over(self) -> int:
        """Hand what arrived to the bridge while its channel has room; the bytes held."""
        arrived = self._arrived
        with suppress(trio.WouldBlock):
            while arrived:
                self._send.send_nowait(arrived[0])
                arrived.popleft()
        return self.held

    def _wake(self) -> None:
        """paho has bytes to write: the driver stops waiting to read."""
        self._woken = True
        if self._waiting is not None:
            self._waiting.cancel()


def _cost(topic: str, payload: bytes) -> int:
    """What a received message is counted in ``held``: its topic too, which may
    be 64 KiB (4 bytes a character, at most: 20,000 messages of empty payloads
    and 60 KB topics held 1.8 GB and were counted 9.8 MB)."""
    return len(payload) + 4 * len(topic) + MESSAGE_OVERHEAD


@asynccontextmanager
async def open_mqtt(
    host: str,
    port: int,
    *,
    client_id: str,
    will: tuple[str, bytes] | None = None,
    keepalive: int = 10,
    connect_timeout: float = 5.0,
    tls: bool = False,
    ca_file: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> AsyncIterator[MqttClient]:
    """Connect to the broker at ``host:port``; the client, until the block ends.

    ``will``: a (topic, payload) the broker publishes, retained, if we
    vanish. Leaving disconnects cleanly (no will). ``tls``: the broker's
    certificate is checked against ``ca_file`` (or the system's
    authorities) and its host name.

    Raises:
      MqttError: the broker is not there, refuses us, or drops us.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_queued_messages_set(MAX_OUTGOING)
    mqtt = MqttClient(client)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    if tls:
        client.tls_set_context(ssl.create_default_context(cafile=ca_file))
    if username is not None:
        client.username_pw_set(username, password)
    try:
        with trio.fail_after(connect_timeout):
            # (paho's connect is a blocking TCP connect: in a thread)
            await trio.to_thread.run_sync(client.connect, host, port, keepalive)
    except (OSError, trio.TooSlowError) as exc:
        raise MqttError(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from None
    sock = client.socket()
    if isinstance(sock, socket.socket):  # (paho leaves Nagle on: 40 ms stalls per message)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mqtt.drive)
            try:
                with trio.fail_after(connect_timeout):
                    await mqtt.connected.wait()
            except trio.TooSlowError:
                raise MqttError(f"no answer from the MQTT broker at {host}:{port}") from None
            try:
                yield mqtt
            finally:
                nursery.cancel_scope.cancel()
    finally:  # the driver is gone: a clean DISCONNECT (no will), best effort
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            sock = client.socket()
            if isinstance(sock, socket.socket):
                client.disconnect()
                while client.want_write():
                    await trio.lowlevel.wait_writable(sock)
                    if client.loop_write() != paho.MQTT_ERR_SUCCESS:
                        break
