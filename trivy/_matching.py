"""The table of the peers' regexps, and the matching of our texts against it.

A text we send is tried against every distinct regexp peers subscribed with;
each regexp is compiled once however many peers use it. Regexps that begin
with a literal prefix (``^word ...``; any regexp in ``match``/``fullmatch``
mode) are indexed by that prefix, so that a text is only tried against the
regexps whose prefix it starts with, plus the few that have none.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Generic, Literal, TypeVar

from ._posix_classes import translate_posix_classes
from ._regexp_guard import check_regexp, guarded_find

__all__ = [
    "COSTLY_STEPS",
    "MATCH_MODES",
    "MAX_TABLE_CHARACTERS",
    "MatchMode",
    "NoMoreGuarded",
    "RegexpEntry",
    "RegexpTable",
    "literal_prefix",
    "safe_search",
]

MatchMode = Literal["search", "match", "fullmatch"]
MATCH_MODES = ("search", "match", "fullmatch")

SubscriberT = TypeVar("SubscriberT")

# Characters that mean something in a Python regexp; a literal prefix stops
# at the first of them.
#: Texts are at most this long (a line a peer accepts): a regexp safe for
#: them needs no length test.
MAX_TEXT_LENGTH = 1024 * 1024
#: A regexp with this many groups could make a MSG over the line limit out
#: of a short text: it takes the checked path (with a size test).
MANY_GROUPS = 200
#: Bytes of groups a checked match may carry (the MSG line limit).
MAX_GROUPS_TEXT = MAX_TEXT_LENGTH - 1024


#: Steps of a search's bound from which the router times it (about 20 us):
#: cheaper ones, the common case, cost no clock.
COSTLY_STEPS = 20_000
#: Characters of regexps the table holds, from all the peers (each distinct
#: regexp once): with 1,000 peers of 1 Mi characters each, what the compiled
#: patterns cost would be gigabytes; this keeps it to hundreds of megabytes.
MAX_TABLE_CHARACTERS = 16 * 1024 * 1024


class NoMoreGuarded(ValueError):
    """The regexp needs the guard, and its subscriber may have no more such."""


_GROUP_END = "\x03"
_SPECIAL = frozenset(".^$*+?{}[]\\|()")
_QUANTIFIERS = frozenset("*+?{")
_INLINE_FLAGS = re.compile(r"\(\?[aiLmsux-]")
try:  # the compiler behind re.compile, without the cache
    from re._compiler import compile as _compile  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    from sre_compile import compile as _compile


def compile_uncached(regexp: str) -> re.Pattern[str]:
    """Compile ``regexp`` without ``re``'s module cache.

    The cache would keep a peer's compiled regexps (512 of them, of any
    size) after the peer left; compiled here, a pattern lives as long as its
    table entry.
    """
    pattern: re.Pattern[str] = _compile(regexp, 0)
    return pattern


def literal_prefix(regexp: str, *, anchored: bool) -> str:
    """The text every match of ``regexp`` starts with ("" if unknown).

    Args:
      regexp: the regexp as the peer sent it.
      anchored: whether matching starts at the beginning of the text anyway
        (``match``/``fullmatch`` modes); otherwise only a leading ``^``
        anchors it.
    """
    if "|" in regexp or _INLINE_FLAGS.search(regexp):
        # an alternative could start anywhere; a flag could change case
        return ""
    if regexp.startswith("^"):
        regexp = regexp[1:]
    elif not anchored:
        return ""
    end = 0
    while end < len(regexp) and regexp[end] not in _SPECIAL:
        end += 1
    if end < len(regexp) and regexp[end] in _QUANTIFIERS:
        end -= 1  # "ab?" : the b is optional
    return regexp[: max(end, 0)]


class RegexpEntry(Generic[SubscriberT]):
    """One distinct regexp and the (subscriber, subscription id) pairs using it.

    Attributes:
      find: search/match/fullmatch a text. For a regexp that cannot
        backtrack for long, ``re``'s own method; otherwise
        :meth:`_find_checked`, which sends the texts ``re`` is not safe for
        to a guarded engine (see :mod:`trivy._regexp_guard`) and may raise
        ``TimeoutError``.
      safe_length: the longest text ``re`` is given for this regexp.
      steps_per_char, fixed_steps: the bound on its search's steps, a
        character of text and whatever the text (see
        :class:`~trivy._regexp_guard.RegexpCheck`).
    """

    __slots__ = (
        "_guarded",
        "_re_find",
        "costly_above",
        "find",
        "fixed_steps",
        "guarded",
        "mode",
        "peers",
        "prefix",
        "regexp",
        "safe_length",
        "steps_per_char",
        "subscribers",
    )

    def __init__(self, regexp: str, mode: MatchMode, *, may_guard: bool = True) -> None:
        wire_regexp = regexp
        regexp = translate_posix_classes(regexp)  # ivy-c's [[:alpha:]], as re reads it
        # (bounded before it compiles: some regexps take seconds to compile)
        # (groups counted before compiling: a regexp of MANY_GROUPS takes a
        # guard slot of its peer, and the guard's size limits, like any other)
        safe_length, self.steps_per_char, self.fixed_steps = check_regexp(
            regexp, anchored=mode != "search", longest=MAX_TEXT_LENGTH, guard_groups=MANY_GROUPS
        )
        #: Texts longer than this may cost a search COSTLY_STEPS or more: the
        #: router times those searches and charges them to the subscribers.
        #: An int, as a text's length is: comparing an int with a float is
        #: not specialized, and the router does it for every candidate.
        steps, within = self.steps_per_char, COSTLY_STEPS - self.fixed_steps
        # (-1: costly whatever the text)
        self.costly_above = -1 if within <= 0 else int(within / steps) if steps else sys.maxsize
        if safe_length < MAX_TEXT_LENGTH and not may_guard:
            raise NoMoreGuarded(regexp)
        pattern = compile_uncached(regexp)
        self.regexp = wire_regexp
        self.mode = mode
        self._re_find: Callable[[str], re.Match[str] | None] = getattr(pattern, mode)
        self.safe_length = safe_length  # 0 for MANY_GROUPS: see _find_checked
        # The common case costs nothing: re's method itself, no length test.
        #: Whether some texts go to the guarded engine (compiled now, not
        #: while sending; ValueError if it cannot take the regexp).
        self.guarded = self.safe_length < MAX_TEXT_LENGTH
        self._guarded = guarded_find(regexp, mode) if self.guarded else None
        self.find: Callable[[str], Any] = self._find_checked if self.guarded else self._re_find
        self.prefix = literal_prefix(regexp, anchored=mode != "search")
        #: (subscriber, id) pairs, as a dict: removal is O(1) in any order.
        self.subscribers: dict[tuple[SubscriberT, int], None] = {}
        #: The same, by subscriber: what is done once per peer (a search
        #: charged, one MSG more past the send's budget) is O(peers), not
        #: O(subscriptions) (one regexp may have 150,000).
        self.peers: dict[SubscriberT, dict[int, None]] = {}

    def _find_checked(self, text: str) -> Any:
        found = self._re_find(text) if len(text) <= self.safe_length else self._guarded(text)  # type: ignore[misc]
        if found is not None and self.safe_length == 0:
            groups = found.groups("")
            if len(_GROUP_END.join(groups).encode("utf-8", "surrogateescape")) > MAX_GROUPS_TEXT:
                return None  # hundreds of overlapping groups: a MSG no peer would take
        return found


class RegexpTable(Generic[SubscriberT]):
    """Every regexp the peers subscribed with, indexed for fast matching.

    Args:
      mode: ``"search"`` (anywhere in the text, ivy-c), ``"match"`` (at the
        start, ivy-python) or ``"fullmatch"`` (the whole text, ivy-java).
    """

    def __init__(
        self, mode: MatchMode = "search", max_characters: int = MAX_TABLE_CHARACTERS
    ) -> None:
        if mode not in MATCH_MODES:
            raise ValueError(f"match mode must be one of {MATCH_MODES}, not {mode!r}")
        self.mode: MatchMode = mode
        self.max_characters = max_characters
        #: Characters of the distinct regexps compiled, in all.
        self.characters = 0
        #: Subscriptions to them, in all.
        self.subscriptions = 0
        self._entries: dict[str, RegexpEntry[SubscriberT]] = {}
        # prefix length → prefix → entries with that prefix: a text is looked
        # up once per distinct prefix length (a handful), whatever the count
        # of regexps.
        # (Collections of entries are dicts used as ordered sets: adding and
        # removing are O(1) whatever the order, where list.remove made
        # 40,000 unsubscriptions quadratic.)
        self._by_prefix: dict[int, dict[str, dict[RegexpEntry[SubscriberT], None]]] = {}
        self._unindexed: dict[RegexpEntry[SubscriberT], None] = {}
        #: The prefix length when it is the only one and every regexp has a
        #: prefix (the common case), else 0. Then the candidates for a text
        #: are ``single_bucket.get(text[:single_length], ())``: the router
        #: inlines that look-up rather than call :meth:`candidates`.
        self.single_length = 0
        self.single_bucket: dict[str, dict[RegexpEntry[SubscriberT], None]] = {}
        #: Held by every change of the table. A real lock once other threads
        #: read the table (:func:`trivy._thread_counts.share_with_threads`);
        #: the bus thread, which alone changes it, reads it without.
        self.lock: AbstractContextManager[object] = nullcontext()

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self, subscriber: SubscriberT, sub_id: int, regexp: str, *, may_guard: bool = True
    ) -> RegexpEntry[SubscriberT]:
        """Record that ``subscriber`` subscribed with ``regexp`` under ``sub_id``.

        Returns:
          the regexp's entry.

        Raises:
          re.error: the regexp does not compile (nothing is recorded).
          ValueError: it cannot be matched safely (see :mod:`trivy._regexp_guard`),
            or it needs the guard and not ``may_guard`` (then nothing compiled
            it: refusing costs only its parse), or the table holds
            ``max_characters`` of regexps from all the peers already.
        """
        entry = self._entries.get(regexp)
        if entry is None:
            if self.characters + len(regexp) > self.max_characters:
                raise ValueError(
                    f"the regexps of all the peers are over {self.max_characters} characters"
                )
            with warnings.catch_warnings():  # a peer's regexp is no warning of ours
                warnings.simplefilter("ignore")
                entry = RegexpEntry[SubscriberT](regexp, self.mode, may_guard=may_guard)
            with self.lock:  # (compiled first: the lock is held for a few look-ups)
                self._entries[regexp] = entry
                self.characters += len(regexp)
                if entry.prefix:
                    by_prefix = self._by_prefix.setdefault(len(entry.prefix), {})
                    by_prefix.setdefault(entry.prefix, {})[entry] = None
                else:
                    self._unindexed[entry] = None
        subscribers = entry.subscribers
        with self.lock:
            if (subscriber, sub_id) not in subscribers:
                subscribers[(subscriber, sub_id)] = None
                entry.peers.setdefault(subscriber, {})[sub_id] = None
                self.subscriptions += 1
            self._update_single_length()
        return entry

    def entry(self, regexp: str) -> RegexpEntry[SubscriberT] | None:
        """The entry of ``regexp``, if a subscriber has it."""
        return self._entries.get(regexp)

    def remove(self, subscriber: SubscriberT, sub_id: int, regexp: str) -> None:
        """Forget one subscription; unknown ones are ignored."""
        entry = self._entries.get(regexp)
        if entry is None:
            return
        with self.lock:
            self._remove(regexp, entry, subscriber, sub_id)

    def _remove(
        self, regexp: str, entry: RegexpEntry[SubscriberT], subscriber: SubscriberT, sub_id: int
    ) -> None:
        if entry.subscribers.pop((subscriber, sub_id), False) is False:
            return  # (the value stored is None)
        ids = entry.peers[subscriber]
        del ids[sub_id]
        if not ids:
            del entry.peers[subscriber]
        self.subscriptions -= 1
        if not entry.subscribers:
            del self._entries[regexp]
            self.characters -= len(regexp)
            if entry.prefix:
                by_prefix = self._by_prefix[len(entry.prefix)]
                bucket = by_prefix[entry.prefix]
                del bucket[entry]
                if not bucket:
                    del by_prefix[entry.prefix]
                    if not by_prefix:
                        del self._by_prefix[len(entry.prefix)]
            else:
                del self._unindexed[entry]
            self._update_single_length()

    def _update_single_length(self) -> None:
        lengths = list(self._by_prefix)
        single = len(lengths) == 1 and not self._unindexed
        self.single_length = lengths[0] if single else 0
        self.single_bucket = self._by_prefix[lengths[0]] if single else {}

    def candidates(self, text: str) -> Collection[RegexpEntry[SubscriberT]]:
        """The entries whose regexp may match ``text``: the rest cannot."""
        # Called once per text sent: kept to a few dict look-ups, no loop
        # over regexps.
        single = self.single_length
        if single:
            return self.single_bucket.get(text[:single], ())
        found: Collection[RegexpEntry[SubscriberT]] = ()
        for length, bucket_of in self._by_prefix.items():
            bucket = bucket_of.get(text[:length])
            if bucket:  # usually one prefix length hits: its bucket as it is
                found = [*found, *bucket] if found else bucket
        if self._unindexed:
            found = [*found, *self._unindexed]
        return found


def safe_search(regexp: str) -> Callable[[str], bool]:
    """Whether a text has a match of ``regexp`` anywhere, within the guard's
    time bound: our own filter, run on texts peers chose (a recorder's
    regexps, a replay's ``--only``). A search that would run past it (see
    :mod:`trivy._regexp_guard`) counts as no match.

    Raises:
      re.error, ValueError: as :meth:`RegexpTable.add` (checked now).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        find = RegexpEntry[None](regexp, "search").find

    def search(text: str) -> bool:
        try:
            return find(text) is not None
        except TimeoutError:
            return False

    return search
