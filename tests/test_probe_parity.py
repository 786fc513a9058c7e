"""The probe against the reference probes' habits (issue: probe parity gaps).

ivy-c's ivyprobe, ivy-java's Probe and ivy-python's ivyprobe send a ready
message, send empty lines, say which regexps a class filter made useless;
ivy-java's adds ``.time``, ``.bye``, ``.bound``, ``.unbind REGEXP``, ``-q``,
``-d`` and send-to-self. Each runs here as a process against a real
ivy-python peer.
"""

from __future__ import annotations

import trio

from .conftest import free_udp_port
from .test_cli import PEER_NAME, PROBE_NAME, TEST_TIMEOUT, probe_with_peer, running
from .test_interop_ivy_python import ivy_python_peer


async def test_ready_message_empty_lines_and_java_commands() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with probe_with_peer("^x (.*)", bind=("^(.*)$",)) as (probe, peer, _):
            ready = await peer.expect("msg", sender=PROBE_NAME)
            assert ready["groups"] == [f"{PROBE_NAME} Ready"]  # as "IVYPROBE Ready"

            # an empty line is sent, not dropped: as in ivy-c, an empty text
            # reaches nobody (the protocol notes), and the count says so
            await probe.send_line("")
            await probe.expect("-> Sent to 0 peers")

            await probe.send_line(".time 3 'burst'")
            await probe.expect(r"-> sent 3 texts \(3 messages\) in \d+\.\d ms, \d+ texts/s")
            for _ in range(3):
                assert (await peer.expect("msg", sender=PROBE_NAME))["groups"] == ["burst"]
            await probe.send_line(".time none")
            await probe.expect(r"-> \.time: usage: \.time N 'TEXT' .*")

            await probe.send_line(".bound")
            await probe.expect("our subscriptions:")
            await probe.expect(r"  id=0 '\^x \(\.\*\)'")
            await probe.send_line(".regexps *")
            await probe.expect(f"{PEER_NAME} subscriptions:")
            await probe.expect(r"  id=\d+ '\^\(\.\*\)\$'")

            await probe.send_line(".unbind '^x (.*)'")  # by its regexp, as ivy-java
            await probe.expect(r"-> unbound id=0 '\^x \(\.\*\)'")
            await peer.expect("regexp", sender=PROBE_NAME, action="remove", id=0)
            await probe.send_line(".unbind '^never'")
            await probe.expect(r"-> \.unbind: no subscription of ours is '\^never'")

            await probe.send_line(".bye")
            assert await probe.finish() == 0
            await peer.expect("disconnected", name=PROBE_NAME)


async def test_quiet_no_ready_message_and_send_to_self() -> None:
    port = free_udp_port()
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            ivy_python_peer(port, bind=("^(.*)$",)) as peer,
            running(
                "probe", "-q", "-r", "", "--send-to-self", "-b", f"127:{port}", "^(hello)"
            ) as probe,
        ):
            await peer.expect("regexp", sender=PROBE_NAME, regexp="^(hello)")
            await probe.send_line("hello")
            await probe.expect(f"{PROBE_NAME} sent 'hello'")  # our own text, to ourselves
            # no ready message: the first text the peer gets is the one typed
            assert (await peer.expect("msg", sender=PROBE_NAME))["groups"] == ["hello"]
            await probe.close_stdin()
            assert await probe.finish() == 0
    chatter = ("Broadcasting", "-> Sent", f"{PEER_NAME} connected")
    assert not [line for line in probe.lines if line.startswith(chatter)], probe.lines


async def test_class_filter_says_which_regexps_it_made_useless() -> None:
    port = free_udp_port()
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            ivy_python_peer(port, bind=("^TRACK (.*)", "^STATUS (.*)")) as peer,
            running("probe", "-c", "TRACK", "-d", "-b", f"127:{port}") as probe,
        ):
            await probe.expect(r"trivy: TRIVYPROBE joined .*")  # -d logs as -vv
            await probe.expect(
                rf"-> {PEER_NAME} id=\d+ '\^STATUS \(\.\*\)' fits none of our message"
                " classes: it has no effect"
            )
            await peer.expect("connected")
            await probe.send_line("TRACK 1")
            await probe.expect("-> Sent to 1 peer")
            await probe.close_stdin()
            assert await probe.finish() == 0
    assert not [line for line in probe.lines if "'^TRACK (.*)' fits none" in line]
