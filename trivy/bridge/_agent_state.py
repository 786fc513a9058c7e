"""What another site says of one of its agents, within the bridge's caps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import trivy

from ._json import MAX_INT_DIGITS

__all__ = ["MAX_AGENT_REGEXPS", "MAX_AGENT_REGEXP_CHARS", "agent_key", "crowding", "within_caps"]

#: Regexps of one remote agent proxied at most, and their characters in all:
#: the core's bounds on one peer's subscriptions, which every local trivy
#: agent applies to the proxy anyway; those past them are refused (counted).
MAX_AGENT_REGEXPS = 10_000
MAX_AGENT_REGEXP_CHARS = 1024 * 1024


def agent_key(peer: trivy.Peer) -> str:
    """How the sites name an agent: its host and port (names need not be unique)."""
    return f"{peer.host}:{peer.port}"


def within_caps(regexps: Mapping[str, object]) -> tuple[dict[int, str], int]:
    """A remote agent's regexps (JSON: id -> regexp) within the caps, and how
    many were refused: those past :data:`MAX_AGENT_REGEXPS`, or past
    :data:`MAX_AGENT_REGEXP_CHARS` in all.

    Raises:
      ValueError: an id is not a number, or a number of over
        :data:`~trivy.bridge._json.MAX_INT_DIGITS` digits (a key: JSON's
        bound on integers never saw it, and ``int()`` of 4,200 digits takes
        about 70 µs).
    """
    taken: dict[int, str] = {}
    chars = refused = 0
    for index, (sub_id, regexp) in enumerate(regexps.items()):
        if len(taken) >= MAX_AGENT_REGEXPS:
            refused += len(regexps) - index  # (the rest, not even looked at)
            break
        text = str(regexp)
        if chars + len(text) > MAX_AGENT_REGEXP_CHARS:
            refused += 1
            continue
        if len(sub_id) > MAX_INT_DIGITS:
            raise ValueError(f"an id of {len(sub_id)} characters")
        taken[int(sub_id)] = text
        chars += len(text)
    return taken, refused


def crowding(shown: Iterable[tuple[str, str]], site: str) -> tuple[str, str] | None:
    """With ``max_remote_agents`` shown, the (site, key) a new agent of ``site``
    takes the place of: the newest of the site showing the most, if that
    shows two more than ``site``; None otherwise (the new one is not shown).

    So one broker user (an ACL holds each to its site) cannot keep every
    other site's new agents out by showing 256 of its own first; it can take
    places from the largest site down to level with its own, not lock it out.
    """
    by_site: dict[str, list[str]] = {}
    for agent_site, key in shown:  # (in the order they were shown)
        by_site.setdefault(agent_site, []).append(key)
    counts = Counter({name: len(keys) for name, keys in by_site.items()})
    top, most = counts.most_common(1)[0] if counts else (site, 0)
    if most < counts[site] + 2:
        return None
    return top, by_site[top][-1]
