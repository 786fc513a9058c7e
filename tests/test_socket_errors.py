"""Errors of the listener and the UDP socket, handled as trio's listeners do.

A lack of resources (EMFILE, ENOBUFS...) waits ACCEPT_RETRY_DELAY and
retries; an error about one connection or one earlier datagram (a reset,
an ICMP port unreachable) is skipped at once; anything else means the
socket is broken (a bug) and is raised, ending the bus loudly instead of
being logged for ever. Time is virtual (``autojump_clock``), so the
back-off is measured exactly.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

import trivy
from trivy import _discovery
from trivy._discovery import ACCEPT_RETRY_DELAY, Discovery
from trivy._options import BusOptions
from trivy._sockets import connect_tcp, open_listener


def _error(code: int) -> OSError:
    return OSError(code, errno.errorcode[code])


#: Calls after which a fake socket gives up: an error retried for ever
#: fails the test instead of hanging it.
MAX_CALLS = 100


def _counted(calls: int) -> None:
    if calls > MAX_CALLS:
        raise AssertionError(f"called {calls} times: the error is retried for ever")


class Scripted:
    """A socket whose accept()/recvfrom() give these results in turn (an
    exception is raised), then raise the last one for ever."""

    def __init__(self, *results: object) -> None:
        self.results = list(results)
        self.calls = 0

    def _next(self) -> Any:
        self.calls += 1
        _counted(self.calls)
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def accept(self) -> Any:
        return self._next()

    def recvfrom(self, size: int) -> Any:
        return self._next()


def _discovery_serving(served: list[str]) -> Discovery:
    async def serve(sock: object, host: str, agent_id: str | None, port: int) -> None:
        served.append(host)

    options = BusOptions(agent_name="A", bus="127:2010")
    return Discovery(options, serve=serve, is_connected=lambda host, port: False)


async def test_accept_backs_off_on_emfile_skips_a_reset_and_raises_ebadf(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trivy")
    served: list[str] = []
    discovery = _discovery_serving(served)
    listener = Scripted(
        _error(errno.ECONNABORTED),  # one connection gone before we took it
        (object(), ("127.0.0.1", 40000)),
        _error(errno.EMFILE),
        (object(), ("127.0.0.2", 40001)),
        _error(errno.EBADF),  # the listener is broken: raised, not retried
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with pytest.raises(OSError) as raised:
                await discovery._accept_loop(listener, nursery)  # type: ignore[arg-type]
    assert raised.value.errno == errno.EBADF
    assert listener.calls == 5
    assert served == ["127.0.0.1", "127.0.0.2"]
    assert trio.current_time() == ACCEPT_RETRY_DELAY  # the reset cost no wait
    assert f"accept failed: [Errno {errno.EMFILE}] EMFILE; retrying" in caplog.text
    assert "ECONNABORTED" not in caplog.text


async def test_udp_backs_off_on_enobufs_skips_icmp_errors_and_raises_enotsock(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trivy")
    discovery = _discovery_serving([])
    udp = Scripted(
        _error(errno.ECONNREFUSED),  # ICMP port unreachable, for an announce we sent
        _error(errno.ENOBUFS),
        _error(errno.ECONNREFUSED),
        _error(errno.ENOTSOCK),
    )
    with trio.fail_after(10), pytest.raises(OSError) as raised:
        await discovery._listen_loop(udp)  # type: ignore[arg-type]
    assert raised.value.errno == errno.ENOTSOCK
    assert udp.calls == 4
    assert trio.current_time() == ACCEPT_RETRY_DELAY
    assert f"UDP receive failed: [Errno {errno.ENOBUFS}] ENOBUFS; retrying" in caplog.text
    assert "ECONNREFUSED" not in caplog.text


class _Broken:
    """A real socket whose ``method`` raises ``code`` (the rest is the socket's)."""

    def __init__(self, sock: socket.socket, method: str, code: int) -> None:
        self._sock = sock
        self._method = method
        self._code = code
        self._calls = 0

    def __getattr__(self, name: str) -> Any:
        if name == self._method:
            return self._fail
        return getattr(self._sock, name)

    def _fail(self, *args: object) -> None:
        self._calls += 1
        _counted(self._calls)
        raise _error(self._code)


def _breaking(real: Callable[..., socket.socket], method: str) -> Callable[..., Any]:
    def open_broken(*args: Any) -> Any:
        return _Broken(real(*args), method, errno.EBADF)

    return open_broken


@pytest.mark.parametrize(
    ("opener", "method"), [("open_listener", "accept"), ("open_discovery_socket", "recvfrom")]
)
async def test_a_broken_socket_ends_the_bus_with_its_error(
    bus: str,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    opener: str,
    method: str,
) -> None:
    monkeypatch.setattr(_discovery, opener, _breaking(getattr(_discovery, opener), method))
    with trio.fail_after(10), pytest.raises(Exception) as raised:
        async with trivy.open_ivy_bus("A", bus):
            await trio.sleep_forever()
    # (in an exception group: the error of a task of the bus)
    assert [exc.errno for exc in _leaves(raised.value) if isinstance(exc, OSError)] == [errno.EBADF]


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc``, out of their exception groups."""
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    return [leaf for one in inner for leaf in _leaves(one)] if inner else [exc]


async def test_sockets_that_fail_to_open_or_connect_are_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unused = socket.socket()  # bound, not listening: connecting is refused
    unused.bind(("127.0.0.1", 0))
    made: list[socket.socket] = []

    class Kept(socket.socket):  # kept alive here, so only close() closes them
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(socket, "socket", Kept)
    with pytest.raises(OSError):
        open_listener("203.0.113.7")  # TEST-NET-3: not ours, bind fails
    with trio.move_on_after(0):  # cancelled while connecting
        await connect_tcp("127.0.0.1", unused.getsockname()[1])
    with pytest.raises(ConnectionRefusedError):
        await connect_tcp("127.0.0.1", unused.getsockname()[1])
    unused.close()
    assert len(made) == 3
    assert [sock.fileno() for sock in made] == [-1, -1, -1]
