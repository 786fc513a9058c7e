"""A bridge's options, in one frozen object (as :class:`trivy.BusOptions` for a bus)."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["BridgeOptions"]


def _positive(_instance: Any, attribute: Any, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen(kw_only=True)
class BridgeOptions:
    """What a bridge needs: its bus, its broker, its site.

    Attributes:
      bus: the local Ivy bus (as :func:`trivy.open_ivy_bus` takes it).
      broker_host, broker_port: the MQTT broker every site uses.
      site: this site's name, unique among the sites (one topic level); a
        second bridge for a site already bridged refuses to start.
      topic: the topics' prefix; sites of one bridged bus share it, so one
        broker serves several deployments side by side.
      max_remote_agents: remote agents shown here at most (each proxy is an
        agent: a listener, a UDP socket, a connection a local agent, and
        tasks; the proxies refuse each other); agents beyond are not shown.
      max_sites: other sites remembered at most (anyone who may publish
        on the broker can name sites); sites beyond are ignored.
      keepalive: seconds between the client's keepalives: a bridge that
        vanishes (SIGKILL, a cut cable) is declared offline by the broker,
        its agents gone on the other sites, within 1.5 times this. The
        other way, the other sites' agents leave this bus 1.5 times this
        after this bridge notices it lost the broker (at once when the
        broker closes the connection, within twice this when it goes silent).
      allow_die: pass DIEs on, both ways (off: one site must not make
        another's agents leave by accident; a proxy never leaves on one).
      tls: connect with TLS; ``ca_file`` is the authority that signed the
        broker's certificate (the system's authorities when ``None``).
      username, password: the broker's credentials, if it asks for them.
      reconnect_max: the longest wait between two reconnect attempts (the
        wait starts at 0.5 s and doubles, with jitter).
      claim_timeout: seconds a starting bridge waits for a bridge of its
        site that the broker says is online to answer (a live one does
        within a round trip; one that died before the broker noticed does
        not, and is taken over).
    """

    bus: str | None = None
    broker_host: str = "127.0.0.1"
    broker_port: int = attrs.field(default=1883)
    site: str = attrs.field()
    topic: str = attrs.field(default="trivy")
    max_remote_agents: int = attrs.field(default=256, validator=_positive)
    max_sites: int = attrs.field(default=256, validator=_positive)
    allow_die: bool = False
    keepalive: int = attrs.field(default=10, validator=_positive)
    tls: bool = False
    ca_file: str | None = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    reconnect_max: float = attrs.field(default=30.0, validator=_positive)
    claim_timeout: float = attrs.field(default=3.0, validator=_positive)

    @broker_port.validator
    def _check_port(self, _attribute: Any, value: int) -> None:
        if not 0 < value < 65536:
            raise ValueError(f"broker_port is 1..65535, not {value!r}")

    @site.validator
    def _check_site(self, _attribute: Any, value: str) -> None:
        if not value or any(c in value for c in "/+#\n "):
            raise ValueError(f"a site is a name without / + # space or newline: {value!r}")

    @topic.validator
    def _check_topic(self, _attribute: Any, value: str) -> None:
        parts = value.split("/")
        if not value or any(not p or p in "+#" or "+" in p or "#" in p for p in parts):
            raise ValueError(f"a topic prefix is levels without wildcards: {value!r}")
