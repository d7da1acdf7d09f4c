"""Auto-reply: keyword rules answer viewers' questions with a pinned line and a private reply.

``autoreply.set`` replaces the rules: ``[{pattern, reply}]``. A *pattern* is one or
more keywords separated by ``|`` (``price|多少钱|how much``); a comment matches when
its ``fold_keyword``-ed text contains one of the folded keywords. No regular expressions: a
substring test cannot backtrack, so no pattern an operator (or a compromised cloud)
sends can make a comment cost more than a scan of 200 characters per keyword. The
first rule that matches answers; later rules are not tried.

A *reply* is a template with ``{user}`` (the asker) and ``{text}`` (their comment,
cut to ``MAX_QUOTED_CHARS``); ``{{`` and ``}}`` are literal braces. Any other field,
format spec or conversion is refused at ``autoreply.set``, so a reply can never reach
an attribute of anything (``{user.__class__}``).

It cannot be used to spam, by anyone:
- on screen: a rule pins at most once per ``rule_cooldown_s`` and all rules together
  at most once per ``global_cooldown_s`` (one pinned reply at a time; a newer one
  replaces it);
- in private: each asker gets at most ``user_burst`` replies, refilled at
  ``user_rate_per_s`` (the project's token bucket), so repeating a question is cheap
  to ignore.
A match that is held back is counted in ``suppressed`` (by reason), never dropped
without a trace.

Sans-I/O: ``now`` in, pinned lines and pushes out; no clock, no asyncio.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from edge_node.interaction.effects import CommandError, Push
from edge_node.interaction.effects import arg as _arg
from edge_node.interaction.lottery import fold_keyword
from edge_node.interaction.ratelimit import KeyedLimiter, TokenBucket
from edge_node.overlay.scene import Pinned

MAX_RULES: Final = 32
MAX_PATTERN_CHARS: Final = 64
MAX_KEYWORDS: Final = 8
MAX_REPLY_CHARS: Final = 200
MAX_QUOTED_CHARS: Final = 40
FIELDS: Final = frozenset({"user", "text"})
MAX_ASKERS: Final = 100_000


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: str  # as the operator wrote it
    keywords: tuple[str, ...]  # folded, non-empty
    reply: str  # a checked template

    def matches(self, folded_text: str) -> bool:
        return any(keyword in folded_text for keyword in self.keywords)


@dataclass(frozen=True, slots=True)
class AutoReply:
    """What one comment triggered: the rule, the rendered text, and where it went."""

    rule: int
    text: str
    pinned: bool  # shown on screen
    sent: bool  # pushed to the asker


class AutoReplies:
    """The auto-reply rules and their limits.

    The engine calls ``set`` for ``autoreply.set``, ``on_comment`` for every accepted
    comment (with the text as shown: masked if moderation masked it), ``tick`` when
    ``next_timer`` comes; it puts ``pinned(now)`` on the scene when ``version``
    changed and sends ``take_pushes()``.
    """

    def __init__(
        self,
        *,
        rule_cooldown_s: float = 20.0,
        global_cooldown_s: float = 5.0,
        pin_s: float = 8.0,
        user_rate_per_s: float = 1 / 30,
        user_burst: int = 2,
        fold: Callable[[str], str] = fold_keyword,
    ) -> None:
        if not (rule_cooldown_s > 0 and global_cooldown_s > 0 and pin_s > 0):
            raise ValueError("rule_cooldown_s, global_cooldown_s and pin_s must be > 0")
        self.rule_cooldown_s = rule_cooldown_s
        self.global_cooldown_s = global_cooldown_s
        self.pin_s = pin_s
        self._fold = fold
        self.rules: tuple[Rule, ...] = ()
        self._rule_buckets: list[TokenBucket] = []
        self._global = TokenBucket(1 / global_cooldown_s, 1)
        self._askers: KeyedLimiter[str] = KeyedLimiter(user_rate_per_s, user_burst, MAX_ASKERS)
        self._pinned: Pinned | None = None
        self._seq = 0
        self._pushes: list[Push] = []
        self.suppressed: Counter[str] = Counter()  # reason -> matches held back
        self.version = 0

    def set(self, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        """``autoreply.set``: replaces every rule (an empty list turns auto-reply off)."""
        raw = _arg(args, "rules", (list, tuple))
        if len(raw) > MAX_RULES:
            raise CommandError("bad_message", f"args.rules: at most {MAX_RULES} rules")
        rules = tuple(self._rule(i, item) for i, item in enumerate(raw))
        self.rules = rules
        # New rules start with fresh cool-downs; the global one and the askers' buckets
        # carry on, so re-sending the rules cannot be used to spam either.
        self._rule_buckets = [TokenBucket(1 / self.rule_cooldown_s, 1) for _ in rules]
        return {"count": len(rules)}

    def on_comment(
        self, user: str, text: str, now: float, comment_id: str | None = None
    ) -> AutoReply | None:
        """An accepted comment: the reply it triggered, or None (no rule matched)."""
        if not self.rules:
            return None
        folded = self._fold(text)
        for index, rule in enumerate(self.rules):
            if rule.matches(folded):
                return self._answer(index, rule, user, text, now, comment_id)
        return None

    def pinned(self, now: float) -> tuple[Pinned, ...]:
        """The pinned reply on screen, if any."""
        pin = self._pinned
        return (pin,) if pin is not None and now < pin.until else ()

    def tick(self, now: float) -> None:
        if self._pinned is not None and now >= self._pinned.until:
            self._pinned = None
            self.version += 1

    def next_timer(self, now: float) -> float | None:
        return None if self._pinned is None else self._pinned.until

    def take_pushes(self) -> list[Push]:
        pushes, self._pushes = self._pushes, []
        return pushes

    # ---- internals ------------------------------------------------------------------

    def _answer(
        self, index: int, rule: Rule, user: str, text: str, now: float, comment_id: str | None
    ) -> AutoReply:
        quoted = text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 1] + "…"
        reply = rule.reply.format_map({"user": user, "text": quoted})
        if len(reply) > MAX_REPLY_CHARS:
            reply = reply[: MAX_REPLY_CHARS - 1] + "…"
        bucket = self._rule_buckets[index]
        if bucket.tokens(now) < 1:
            self.suppressed["rule_cooldown"] += 1
            pinned = False
        elif self._global.tokens(now) < 1:
            self.suppressed["global_cooldown"] += 1
            pinned = False
        else:
            bucket.allow(now)
            self._global.allow(now)
            self._seq += 1
            self._pinned = Pinned(f"autoreply-{self._seq}", reply, "bottom", now + self.pin_s)
            self.version += 1
            pinned = True
        sent = self._askers.allow(user, now)
        if sent:
            payload: dict[str, Any] = {"t": "state", "autoreply": reply, "rule": index}
            if comment_id is not None:
                payload["reply_to"] = comment_id
            self._pushes.append(Push(payload, user))
        else:
            self.suppressed["asker_rate"] += 1
        return AutoReply(index, reply, pinned, sent)

    def _rule(self, i: int, item: object) -> Rule:
        where = f"args.rules[{i}]"
        if not isinstance(item, Mapping):
            raise CommandError("bad_message", f"{where}: a map with pattern and reply")
        pattern = _field(item, where, "pattern")
        reply = _field(item, where, "reply")
        if len(pattern) > MAX_PATTERN_CHARS:
            raise CommandError(
                "bad_message", f"{where}.pattern: at most {MAX_PATTERN_CHARS} characters"
            )
        keywords = tuple(dict.fromkeys(self._fold(k) for k in pattern.split("|")))
        if len(keywords) > MAX_KEYWORDS or not all(keywords):
            raise CommandError(
                "bad_message",
                f"{where}.pattern: 1..{MAX_KEYWORDS} keywords separated by '|', each with "
                "a letter, digit or symbol",
            )
        if len(reply) > MAX_REPLY_CHARS or not reply.strip():
            raise CommandError("bad_message", f"{where}.reply: 1..{MAX_REPLY_CHARS} characters")
        _check_template(reply, f"{where}.reply")
        return Rule(pattern, keywords, reply)


def _field(item: Mapping[Any, Any], where: str, name: str) -> str:
    if name not in item:
        raise CommandError("bad_message", f"{where}.{name}: required")
    value = item[name]
    if not isinstance(value, str):
        raise CommandError("bad_message", f"{where}.{name}: wrong type {type(value).__name__}")
    return value


def _check_template(template: str, where: str) -> None:
    """Only ``{user}`` and ``{text}``: no attributes, indexes, specs or conversions."""
    try:
        parts: Sequence[tuple[str, str | None, str | None, str | None]] = list(
            string.Formatter().parse(template)
        )
    except ValueError as exc:
        raise CommandError("bad_message", f"{where}: {exc} (write {{{{ for a brace)") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in FIELDS or spec or conversion:
            raise CommandError(
                "bad_message",
                f"{where}: '{{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}' is not a field; use {{user}} or {{text}}",
            )
