"""Moderation before pixels: a word list decides, per comment, block, mask, hold or accept.

Pieces, all sans-I/O except ``WordList.from_file`` (which the caller invokes on a
reload) and the audit sink it is handed:
- ``Automaton``: Aho-Corasick over the folded patterns, built once per list, one pass
  over a comment whatever the number of patterns.
- ``WordList``: the operator's entries ``{pattern, action}``, validated (errors name
  ``words[i].field``), folded and compiled. ``moderate(text)`` -> ``Decision``.
- ``ReviewQueue``: held comments waiting for the operator, bounded (the oldest
  expires, and the expiry is audited, when it is full).
- ``Moderation``: the one object the engine holds: it moderates, holds, audits, and
  serves the ``words.set`` and ``review.*`` commands.

Matching happens on ``normalize.fold``'s output, for patterns and comments alike, so
"ｆ.u.u.c.k", "fuuuck" and "f u c k" all meet the pattern "fuck", and "傻 逼" meets
"傻逼". Two rules keep innocent text innocent:
- **Word boundaries for letters of cased scripts** (Latin, Greek, Cyrillic): a
  pattern that starts (ends) with such a letter matches only where the comment has no
  such letter just before (after) the match: "scam" does not block "scamper",
  "ass" does not block "class", "fuck" does not block "Fukuoka" (which is simply
  a different word). A ``*`` at the start or end of a pattern opens that side:
  ``fuck*`` also blocks "fucking", ``*fuck*`` also "motherfucker". Chinese and other
  scripts without spaces have no boundaries: "傻逼" matches anywhere in a sentence
  (and "傻瓜" does not match it). A letter made from a look-alike ("fuck1", "shit!")
  counts as a boundary.
- **No matching across word breaks** unless the pattern has one at that place:
  "pen is" does not meet "penis", "this cam" does not meet "scam"; "fuck you" as
  a pattern meets both "fuck you" and "fuckyou". Three or more spaced single letters
  are one word ("s c a m").

Repeated characters collapse, but a pattern's own doubled letters must be there:
"fuuuck" meets "fuck" and "asssss" meets "ass", while "as" does not meet "ass"
(and "ass" as a pattern does not block the word "as").

Severity when several rules hit: block > hold > mask. The text to show has every span
matched by a ``mask`` rule replaced by ``***`` in the comment as written (spans map
back through the folding). Symbols used as letters (``sh!t``) are also tried as
separators (``f!u!c!k``), so both readings are checked.

Not caught, by design: words split at arbitrary places by spaces ("fu ck"), and
``*`` written for a letter ("f*ck") unless that spelling is listed.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import unicodedata
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, get_args

from edge_node.errors import EdgeNodeError
from edge_node.interaction.audit import AuditEntry, AuditSink
from edge_node.interaction.normalize import Folded, fold

Action: TypeAlias = Literal["block", "mask", "hold"]
Verdict: TypeAlias = Literal["accept", "block", "mask", "hold"]
ACTIONS: Final[tuple[str, ...]] = get_args(Action)
SEVERITY: Final[Mapping[str, int]] = {"accept": 0, "mask": 1, "hold": 2, "block": 3}
MASK: Final = "***"

MAX_WORDS: Final = 10_000
MAX_PATTERN_CHARS: Final = 64
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
DEFAULT_REVIEW_CAPACITY: Final = 500
OPEN: Final = "*"  # at a pattern's start or end: no word boundary needed on that side

_ENTRY_KEYS: Final = frozenset({"pattern", "action"})


class WordListError(EdgeNodeError):
    """A word list entry (or the list, or its file) is wrong; ``field`` says where.

    ``field`` is ``words``, ``words[3].action``, or ``FILE:LINE.pattern`` for a text
    file; the engine answers it as ``bad_message``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ReviewError(EdgeNodeError):
    """A review command names an item that is not (or no longer) held: ``unknown_target``."""

    def __init__(self, item: object, reason: str) -> None:
        super().__init__(f"item: {reason}")
        self.field = "item"
        self.item = item
        self.reason = reason


# ---- Aho-Corasick ---------------------------------------------------------------------


class Automaton:
    """Aho-Corasick over strings: every occurrence of every key in one pass.

    ``goto`` is the trie (a dict of edges per state), ``fail`` the longest proper
    suffix that is also a trie path, and ``out`` the keys ending at a state, fail
    chain included (merged at build time, so matching never walks output links).
    Building is linear in the keys' total length; ``find`` is linear in the text
    plus the number of matches.
    """

    __slots__ = ("_fail", "_goto", "_out", "keys")

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)
        goto: list[dict[str, int]] = [{}]
        out: list[list[int]] = [[]]
        for index, key in enumerate(self.keys):
            if not key:
                raise ValueError(f"keys[{index}]: empty key")
            state = 0
            for ch in key:
                nxt = goto[state].get(ch)
                if nxt is None:
                    nxt = len(goto)
                    goto[state][ch] = nxt
                    goto.append({})
                    out.append([])
                state = nxt
            out[state].append(index)
        fail = [0] * len(goto)
        queue = deque(goto[0].values())  # depth 1: fail to the root
        while queue:
            state = queue.popleft()
            for ch, child in goto[state].items():
                queue.append(child)
                back = fail[state]
                while back and ch not in goto[back]:
                    back = fail[back]
                fail[child] = goto[back].get(ch, 0)
                out[child].extend(out[fail[child]])  # BFS: the suffix state is complete
        self._goto = goto
        self._fail = fail
        self._out = [tuple(o) for o in out]

    def find(self, text: str) -> list[tuple[int, int]]:
        """``(end, key)`` for every occurrence: ``text[end - len(keys[key]) + 1 : end + 1]``."""
        goto, fail, out = self._goto, self._fail, self._out
        root = goto[0]
        hits: list[tuple[int, int]] = []
        state = 0
        for i, ch in enumerate(text):
            while True:
                nxt = goto[state].get(ch)
                if nxt is not None:
                    state = nxt
                    break
                if state == 0:
                    break
                state = fail[state]
                if state == 0:
                    state = root.get(ch, 0)
                    break
            if out[state]:
                hits.extend((i, key) for key in out[state])
        return hits


# ---- the word list --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WordEntry:
    """One operator entry, as written: ``pattern`` (``*`` ends open it) and ``action``."""

    pattern: str
    action: Action

    def to_wire(self) -> dict[str, str]:
        return {"pattern": self.pattern, "action": self.action}


@dataclass(frozen=True, slots=True)
class _Rule:
    """An entry compiled against the folding: what a hit must satisfy besides the key."""

    index: int
    entry: WordEntry
    key: str  # the folded, run-collapsed pattern the automaton looks for
    need: tuple[tuple[int, int], ...]  # (run j, at least k characters) where k > 1
    breaks_ok: frozenset[int]  # runs that may follow a word break (the pattern has one)
    bound_start: bool
    bound_end: bool


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule that matched: ``text[start:end]`` of the comment as written."""

    index: int  # the entry's position in the list
    pattern: str
    action: Action
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a comment.

    ``action`` is the most severe of the hits (``accept`` when none); ``rule`` the
    pattern of the entry that decided (the leftmost hit of that severity);
    ``text_out`` the comment to show, with every ``mask`` hit replaced by ``***``;
    ``hits`` every hit, leftmost first; ``item`` the review item when held.
    """

    action: Verdict
    rule: str | None
    text_out: str
    hits: tuple[Hit, ...] = ()
    item: str | None = None

    @property
    def masked(self) -> bool:
        """Whether the shown text has ``***`` in it (the ack says ``masked: true``)."""
        return any(h.action == "mask" for h in self.hits)


def _is_cased_letter(ch: str) -> bool:
    return unicodedata.category(ch) in ("Ll", "Lu", "Lt")


def _compile(index: int, entry: WordEntry, where: str) -> _Rule:
    pattern = entry.pattern
    open_start = pattern.startswith(OPEN)
    open_end = len(pattern) > 1 and pattern.endswith(OPEN)
    core = pattern[1 if open_start else 0 : len(pattern) - 1 if open_end else len(pattern)]
    folded = fold(core)
    if not folded.chars:
        raise WordListError(
            f"{where}.pattern", f"nothing left to match after normalisation ({pattern!r})"
        )
    return _Rule(
        index=index,
        entry=entry,
        key=folded.chars,
        need=tuple((j, k) for j, k in enumerate(folded.counts) if k > 1),
        breaks_ok=frozenset(j for j, brk in enumerate(folded.breaks) if brk),
        bound_start=not open_start and _is_cased_letter(folded.chars[0]),
        bound_end=not open_end and _is_cased_letter(folded.chars[-1]),
    )


class WordList:
    """The operator's moderation entries, compiled once; immutable once built.

    Build it from entries (``WordEntry`` or wire maps) with ``from_args`` (the
    ``words.set`` command's ``words``) or ``from_file``; every error names the entry
    and field. Replacing the list means building a new one and swapping it in.
    """

    def __init__(
        self,
        entries: Iterable[WordEntry] = (),
        *,
        where: str = "words",
        labels: Sequence[str] | None = None,
    ) -> None:
        """Compile ``entries``; errors name ``where`` and each entry's label.

        ``labels[i]`` names entry i in errors (default ``{where}[i]``; a text file
        passes ``FILE:LINE``).
        """
        self.entries: tuple[WordEntry, ...] = tuple(entries)
        if len(self.entries) > MAX_WORDS:
            raise WordListError(where, f"at most {MAX_WORDS} entries, got {len(self.entries)}")
        if labels is None:
            labels = [f"{where}[{i}]" for i in range(len(self.entries))]
        rules = [_compile(i, e, labels[i]) for i, e in enumerate(self.entries)]
        self._rules = tuple(rules)
        keys: dict[str, list[_Rule]] = {}
        for rule in rules:
            keys.setdefault(rule.key, []).append(rule)
        self._by_key = tuple(tuple(v) for v in keys.values())
        self._automaton = Automaton(list(keys))

    def __len__(self) -> int:
        return len(self.entries)

    def digest(self) -> str:
        """SHA-256 of the list's canonical JSON: which list was in force, for the audit."""
        canon = json.dumps(
            [e.to_wire() for e in self.entries], ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()

    # ---- construction ---------------------------------------------------------------

    @classmethod
    def from_args(cls, words: object, where: str = "words") -> WordList:
        """The ``words.set`` command's ``words``: ``[{"pattern": STR, "action": ACTION}]``."""
        if not isinstance(words, (list, tuple)):
            raise WordListError(where, f"expected a list, got {type(words).__name__}")
        if len(words) > MAX_WORDS:
            raise WordListError(where, f"at most {MAX_WORDS} entries, got {len(words)}")
        entries = []
        for i, raw in enumerate(words):
            at = f"{where}[{i}]"
            if not isinstance(raw, Mapping):
                raise WordListError(at, f"expected a map, got {type(raw).__name__}")
            unknown = sorted(str(k) for k in raw if k not in _ENTRY_KEYS)
            if unknown:
                raise WordListError(at, f"unknown key(s) {', '.join(unknown)}")
            if "pattern" not in raw:
                raise WordListError(f"{at}.pattern", "required")
            if "action" not in raw:
                raise WordListError(f"{at}.action", "required")
            entries.append(_entry(raw["pattern"], raw["action"], at))
        return cls(entries, where=where)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> WordList:
        """Load a list file; the format follows the name.

        ``*.json``: the ``words.set`` shape, a list of ``{"pattern", "action"}`` maps
        (or ``{"words": [...]}``). Anything else: UTF-8 text, one entry per line,
        ``ACTION<TAB>PATTERN`` (patterns may contain spaces); blank lines and lines
        starting with ``#`` are skipped. Errors name ``FILE:LINE`` (text) or
        ``FILE:words[i]`` (JSON).
        """
        file = Path(path)
        try:
            size = file.stat().st_size
            if size > MAX_FILE_BYTES:
                raise WordListError(file.name, f"larger than {MAX_FILE_BYTES} bytes ({size})")
            text = file.read_bytes().decode("utf-8")
        except OSError as exc:
            raise WordListError(file.name, f"cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise WordListError(file.name, f"not UTF-8 (byte {exc.start})") from None
        if file.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise WordListError(file.name, f"not valid JSON ({exc})") from None
            if isinstance(data, dict):
                if set(data) != {"words"}:
                    raise WordListError(file.name, 'expected a list or {"words": [...]}')
                data = data["words"]
            return cls.from_args(data, f"{file.name}:words")
        entries = []
        labels = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            at = f"{file.name}:{lineno}"
            action, tab, pattern = line.partition("\t")
            if not tab:
                raise WordListError(at, "expected ACTION<TAB>PATTERN")
            entries.append(_entry(pattern, action.strip(), at))
            labels.append(at)
        return cls(entries, where=file.name, labels=labels)

    # ---- matching -------------------------------------------------------------------

    def moderate(self, text: str) -> Decision:
        """The decision for one comment (pure: no queue, no audit; see ``Moderation``)."""
        if not self._rules:
            return Decision("accept", None, text)
        folded = fold(text)
        hits = self._hits(folded)
        if folded.has_symbols:  # "f!u!c!k": the symbols read as separators
            hits |= self._hits(fold(text, symbols_as_letters=False))
        if not hits:
            return Decision("accept", None, text)
        ordered = tuple(sorted(hits, key=lambda h: (h.start, h.end, h.index)))
        top = max(ordered, key=lambda h: SEVERITY[h.action])  # first of the most severe
        spans = [(h.start, h.end) for h in ordered if h.action == "mask"]
        return Decision(top.action, top.pattern, _mask(text, spans), ordered)

    def _hits(self, folded: Folded) -> set[Hit]:
        found: set[Hit] = set()
        for end, key in self._automaton.find(folded.chars):
            for rule in self._by_key[key]:
                first = _verify(rule, folded, end)
                if first is not None:
                    start, stop = folded.span(first, end)
                    found.add(Hit(rule.index, rule.entry.pattern, rule.entry.action, start, stop))
        return found


def _entry(pattern: object, action: object, at: str) -> WordEntry:
    if not isinstance(pattern, str):
        raise WordListError(f"{at}.pattern", f"expected a string, got {type(pattern).__name__}")
    if not 1 <= len(pattern) <= MAX_PATTERN_CHARS:
        raise WordListError(
            f"{at}.pattern", f"must be 1 to {MAX_PATTERN_CHARS} characters, got {len(pattern)}"
        )
    if action not in ACTIONS:
        raise WordListError(f"{at}.action", "expected block|mask|hold")
    return WordEntry(pattern, action)  # type: ignore[arg-type]  # checked just above


def _verify(rule: _Rule, folded: Folded, end: int) -> int | None:
    """The first run of the match ending at run ``end``, or None if the rule says no."""
    n = len(rule.key)
    first = end - n + 1
    counts = folded.counts
    for j, k in rule.need:
        if counts[first + j] < k:
            return None
    breaks, words = folded.breaks, folded.words
    if folded.has_breaks:
        for j in range(1, n):
            if breaks[first + j] and j not in rule.breaks_ok:
                return None
    if rule.bound_start and first > 0 and words[first - 1] and not breaks[first]:
        return None
    after = end + 1
    if rule.bound_end and after < len(counts) and words[after] and not breaks[after]:
        return None
    return first


def _mask(text: str, spans: builtins.list[tuple[int, int]]) -> str:
    """``text`` with each span (merged where they overlap or touch) replaced by ``***``."""
    if not spans:
        return text
    spans.sort()
    out: builtins.list[str] = []
    pos = 0
    cur_start, cur_end = spans[0]
    for start, end in spans[1:]:
        if start <= cur_end:
            cur_end = max(cur_end, end)
            continue
        out += (text[pos:cur_start], MASK)
        pos = cur_end
        cur_start, cur_end = start, end
    out += (text[pos:cur_start], MASK, text[cur_end:])
    return "".join(out)


# ---- review ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldItem:
    """A comment held for the operator; ``text`` is what approval shows (masks applied)."""

    item: str
    user: str
    msg_id: str | None
    text: str
    rule: str | None
    held_at: float  # wall-clock Unix seconds

    def to_wire(self) -> dict[str, Any]:
        """The ``review.list`` result's item map."""
        return {
            "item": self.item,
            "user": self.user,
            "text": self.text,
            "rule": self.rule,
            "held_at": self.held_at,
        }


class ReviewQueue:
    """Held comments, oldest first, at most ``capacity``; sans-I/O.

    ``hold`` returns the item and, when the queue was full, the oldest item it pushed
    out (expired): the caller must audit that (``Moderation`` does). Item ids are
    ``h1``, ``h2``, ... in hold order; ``restore`` continues the numbering of a log.
    """

    def __init__(self, capacity: int = DEFAULT_REVIEW_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: dict[str, HeldItem] = {}  # insertion order = hold order
        self._next = 1
        self.expired = 0  # items pushed out by the bound, in all

    def __len__(self) -> int:
        return len(self._items)

    def hold(
        self, user: str, msg_id: str | None, text: str, rule: str | None, wall: float
    ) -> tuple[HeldItem, HeldItem | None]:
        evicted = None
        if len(self._items) >= self.capacity:
            evicted = self._items.pop(next(iter(self._items)))
            self.expired += 1
        held = HeldItem(f"h{self._next}", user, msg_id, text, rule, wall)
        self._next += 1
        self._items[held.item] = held
        return held, evicted

    def list(self) -> builtins.list[HeldItem]:
        """The held items, oldest first."""
        return builtins.list(self._items.values())

    def get(self, item: object) -> HeldItem:
        if not isinstance(item, str):
            raise ReviewError(item, f"expected a string, got {type(item).__name__}")
        held = self._items.get(item)
        if held is None:
            raise ReviewError(item, f"no held item {item!r} (decided, expired or never held)")
        return held

    def approve(self, item: object) -> HeldItem:
        """Take the item out of the queue; the caller shows ``text``."""
        held = self.get(item)
        del self._items[held.item]
        return held

    def reject(self, item: object) -> HeldItem:
        """Take the item out of the queue; it is never shown."""
        held = self.get(item)
        del self._items[held.item]
        return held

    def restore(self, entries: Iterable[AuditEntry]) -> builtins.list[HeldItem]:
        """Rebuild the pending items from an audit log (after a restart).

        Holds not followed by an approve, reject or expire come back, oldest first,
        and numbering continues after the highest id seen. Returns the items that did
        not fit (oldest first); the caller audits them as expired.
        """
        pending: dict[str, HeldItem] = {}
        highest = self._next - 1
        for entry in entries:
            if entry.item is None or not entry.item.startswith("h"):
                continue
            if entry.item[1:].isdigit():
                highest = max(highest, int(entry.item[1:]))
            if entry.kind == "moderation" and entry.action == "hold" and entry.user is not None:
                shown = entry.detail.get("shown", entry.text)
                msg_id = entry.detail.get("msg_id")
                pending[entry.item] = HeldItem(
                    entry.item,
                    entry.user,
                    msg_id if isinstance(msg_id, str) else None,
                    shown if isinstance(shown, str) else "",
                    entry.rule,
                    entry.at,
                )
            elif entry.kind == "review":
                pending.pop(entry.item, None)
        self._next = highest + 1
        self._items.update(pending)
        overflow = []
        while len(self._items) > self.capacity:
            overflow.append(self._items.pop(next(iter(self._items))))
            self.expired += 1
        return overflow


# ---- the engine's facade --------------------------------------------------------------


@dataclass
class Moderation:
    """Word list + review queue + audit: what ``Engine._comment`` and the commands call.

    ``check`` decides a comment, holds it when the decision is ``hold`` and audits
    every decision that a rule made (``accept`` with no rule hit is not a decision and
    is not logged: the summaries count those). The review commands and ``words.set``
    audit who did what. ``wall`` is wall-clock Unix seconds, for the log only.
    """

    audit: AuditSink
    words: WordList = field(default_factory=WordList)
    review: ReviewQueue = field(default_factory=ReviewQueue)

    def check(self, user: str, msg_id: str | None, text: str, wall: float) -> Decision:
        decision = self.words.moderate(text)
        if decision.action == "accept":
            return decision
        detail: dict[str, str | int | float | bool | None] = {"msg_id": msg_id}
        if decision.text_out != text:
            detail["shown"] = decision.text_out
        if len(decision.hits) > 1:
            detail["rules"] = json.dumps(
                [h.pattern for h in decision.hits], ensure_ascii=False, separators=(",", ":")
            )
        item = None
        if decision.action == "hold":
            held, evicted = self.review.hold(user, msg_id, decision.text_out, decision.rule, wall)
            item = held.item
            if evicted is not None:
                self._expired(evicted, wall)
            decision = replace(decision, item=item)
        self.audit.append(
            AuditEntry(
                at=wall,
                kind="moderation",
                action=decision.action,
                user=user,
                text=text,
                rule=decision.rule,
                by="system",
                item=item,
                detail=detail,
            )
        )
        return decision

    def set_words(self, words: WordList, by: str, wall: float, source: str = "command") -> int:
        """Swap in a new list (already validated); returns its size (``count``)."""
        self.words = words
        self.audit.append(
            AuditEntry(
                at=wall,
                kind="words",
                action="set",
                by=by,
                detail={"count": len(words), "digest": words.digest(), "source": source},
            )
        )
        return len(words)

    def words_set(self, args: Mapping[str, Any], by: str, wall: float) -> dict[str, Any]:
        """The ``words.set`` command: ``args.words`` replaces the list; result ``count``."""
        if "words" not in args:
            raise WordListError("args.words", "required")
        words = WordList.from_args(args["words"], "args.words")
        return {"count": self.set_words(words, by, wall)}

    def load_file(self, path: str | os.PathLike[str], by: str, wall: float) -> int:
        """Reload the list from a file (see ``WordList.from_file``); returns its size."""
        return self.set_words(WordList.from_file(path), by, wall, source=os.fspath(path))

    def review_list(self) -> dict[str, Any]:
        """The ``review.list`` result: ``items``, oldest first."""
        return {"items": [held.to_wire() for held in self.review.list()]}

    def approve(self, item: object, by: str, wall: float) -> HeldItem:
        """``review.approve``: the held comment, for the engine to show."""
        held = self.review.approve(item)
        self._decided(held, "approve", by, wall)
        return held

    def reject(self, item: object, by: str, wall: float) -> HeldItem:
        """``review.reject``: the held comment is dropped for good."""
        held = self.review.reject(item)
        self._decided(held, "reject", by, wall)
        return held

    def restore(self, history: Iterable[AuditEntry], wall: float) -> int:
        """After a restart: bring back the comments still held in the log; returns how many."""
        for held in self.review.restore(history):
            self._expired(held, wall)
        return len(self.review)

    def _expired(self, held: HeldItem, wall: float) -> None:
        self._decided(held, "expire", "system", wall)

    def _decided(self, held: HeldItem, action: str, by: str, wall: float) -> None:
        self.audit.append(
            AuditEntry(
                at=wall,
                kind="review",
                action=action,
                user=held.user,
                text=held.text,
                rule=held.rule,
                by=by,
                item=held.item,
                detail={"msg_id": held.msg_id, "held_at": held.held_at},
            )
        )
