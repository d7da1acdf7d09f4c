"""Word-list moderation: evasions caught, innocent text passes, masks land, decisions audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge_node.interaction.audit import AuditLog, MemoryAudit
from edge_node.interaction.moderation import (
    MAX_PATTERN_CHARS,
    Automaton,
    Moderation,
    ReviewError,
    ReviewQueue,
    WordEntry,
    WordList,
    WordListError,
)
from edge_node.interaction.normalize import T2S

WALL = 1_760_000_000.0


def words(*pairs: tuple[str, str]) -> WordList:
    return WordList.from_args([{"pattern": p, "action": a} for p, a in pairs])


# ---- Aho-Corasick ---------------------------------------------------------------------


def naive(keys: list[str], text: str) -> list[tuple[int, int]]:
    return sorted(
        (i + len(key) - 1, k)
        for k, key in enumerate(keys)
        for i in range(len(text) - len(key) + 1)
        if text.startswith(key, i)
    )


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.text("abc", min_size=1, max_size=5), min_size=1, max_size=12),
    st.text("abcd", max_size=60),
)
def test_automaton_finds_what_a_naive_scan_finds(keys: list[str], text: str) -> None:
    assert sorted(Automaton(keys).find(text)) == naive(keys, text)


def test_automaton_overlaps_and_suffixes() -> None:
    keys = ["he", "she", "his", "hers"]
    assert sorted(Automaton(keys).find("ushers")) == [(3, 0), (3, 1), (5, 3)]
    assert Automaton(["傻逼", "逼"]).find("你傻逼") == [(2, 0), (2, 1)]
    assert Automaton([]).find("anything") == []
    with pytest.raises(ValueError, match=r"keys\[1\]"):
        Automaton(["a", ""])


# ---- evasions and innocent text -------------------------------------------------------

LIST = words(
    ("fuck*", "block"),
    ("傻逼", "block"),
    ("你妈", "mask"),
    ("scam", "hold"),
    ("ass", "mask"),
    ("shit", "block"),
    ("fuck you", "block"),
    ("*porn*", "block"),
)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("ｆｕｃｋ this", "fuck*"),  # full width
        ("FUCK", "fuck*"),
        ("f.u.c.k", "fuck*"),  # separators
        ("f\u200bu\u200bc\u200bk", "fuck*"),  # zero-width spaces
        ("f u c k", "fuck*"),  # spaced letters
        ("fuuuuuck", "fuck*"),  # repeats
        ("fuckkkk!!!", "fuck*"),
        ("fück", "fuck*"),  # accent
        ("fυck", "fuck*"),  # Greek upsilon
        ("fucking", "fuck*"),  # open end
        ("f!u!c!k", "fuck*"),  # a symbol look-alike used as a separator
        ("sh1t", "shit"),  # digit look-alike
        ("sh!t!", "shit"),  # symbol look-alike, and "!" as the word's end
        ("$h|t", "shit"),
        ("ѕhіt", "shit"),  # Cyrillic dze and i
        ("this is SHIT.", "shit"),
        ("傻逼", "傻逼"),
        ("你这个傻 逼", "傻逼"),  # a space between the characters
        ("傻·逼", "傻逼"),
        ("傻傻逼逼", "傻逼"),  # repeats
        ("ｐｏｒｎｈｕｂ", "*porn*"),  # open both sides
        ("freeporn", "*porn*"),
    ],
)
def test_evasions_are_caught(text: str, rule: str) -> None:
    decision = LIST.moderate(text)
    assert decision.action == "block"
    assert decision.rule == rule


@pytest.mark.parametrize(
    ("text", "action", "rule"),
    [
        ("你媽的", "mask", "你妈"),  # traditional form of a listed word
        ("你 媽", "mask", "你妈"),
        ("great $cam here", "hold", "scam"),
        ("s c a m", "hold", "scam"),
        ("kick his 4ss", "mask", "ass"),
        ("asssss", "mask", "ass"),
        ("ＡＳＳ", "mask", "ass"),  # full width capitals
        ("fuckyou", "block", "fuck*"),
    ],
)
def test_evasions_get_their_entry_action(text: str, action: str, rule: str) -> None:
    decision = LIST.moderate(text)
    assert (decision.action, decision.rule) == (action, rule)


@pytest.mark.parametrize(
    "text",
    [
        "Fukuoka is lovely",  # shares "fu" and "k" with fuck, a different word
        "傻瓜，你好",  # shares 傻 with 傻逼
        "逼真的画面",  # shares 逼
        "你好妈妈",  # 你 and 妈 apart
        "scamper away",  # "scam" is a Latin word: word boundaries
        "this cam is great",  # no matching across the space
        "class assignment",  # "ass" inside words
        "as soon as possible",  # "as s" across a space
        "passion",
        "shiitake mushrooms",
        "pen is mightier",
        "mishit",  # "shit" inside a word
        "你好 hello 666",
        "",
    ],
)
def test_innocent_text_is_accepted(text: str) -> None:
    decision = LIST.moderate(text)
    assert decision.action == "accept", decision.hits
    assert decision.text_out == text and decision.rule is None and decision.hits == ()


def test_as_is_not_ass() -> None:
    # Repeats collapse, yet a pattern's own double letter must be there.
    assert LIST.moderate("as").action == "accept"
    assert words(("as", "block")).moderate("ass").action == "block"  # the reverse is a repeat


def test_no_match_across_a_word_break_the_pattern_lacks() -> None:
    wl = words(("penis", "block"), ("scam", "hold"))
    assert wl.moderate("the pen is mightier").action == "accept"
    assert wl.moderate("he's cam shy").action == "accept"
    assert wl.moderate("p e n i s").action == "block"  # spaced single letters are one word
    assert wl.moderate("PEN1S").action == "block"


def test_multi_word_pattern_needs_its_words() -> None:
    wl = words(("fuck you", "block"))
    assert wl.moderate("fuck   you").action == "block"
    assert wl.moderate("fuck.you").action == "block"
    assert wl.moderate("fuck your").action == "accept"  # boundary after "you"
    assert wl.moderate("fu ck you").action == "accept"  # not a break the pattern has


def test_severity_block_over_hold_over_mask() -> None:
    wl = words(("ass", "mask"), ("scam", "hold"), ("shit", "block"))
    assert wl.moderate("ass scam").action == "hold"
    d = wl.moderate("ass scam shit")
    assert (d.action, d.rule) == ("block", "shit")
    assert [h.pattern for h in d.hits] == ["ass", "scam", "shit"]
    # A held comment is shown masked once approved.
    held = wl.moderate("scam ass")
    assert (held.action, held.text_out) == ("hold", "scam ***")
    assert held.masked


def test_mask_replaces_the_matched_original_characters() -> None:
    wl = words(("ass", "mask"), ("你妈", "mask"))
    d = wl.moderate("kiss my a.s.s, ok? 你 媽的")
    assert d.action == "mask"
    assert d.text_out == "kiss my ***, ok? ***的"
    assert [(h.start, h.end) for h in d.hits] == [(8, 13), (19, 22)]


def test_overlapping_and_touching_masks_merge() -> None:
    wl = words(("*abc*", "mask"), ("*cde*", "mask"))
    assert wl.moderate("xxabcdexx").text_out == "xx***xx"
    assert words(("*ab*", "mask")).moderate("ababab").text_out == "***"


def test_empty_list_accepts_everything() -> None:
    assert WordList().moderate("fuck").action == "accept"
    assert len(WordList()) == 0


# ---- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("nope", "words: expected a list, got str"),
        ([{"pattern": "a", "action": "ban"}], "words[0].action: expected block|mask|hold"),
        (
            [{"pattern": "a", "action": "block"}, {"pattern": "b", "action": "drop"}],
            "words[1].action: expected block|mask|hold",
        ),
        ([{"pattern": "a"}], "words[0].action: required"),
        ([{"action": "block"}], "words[0].pattern: required"),
        ([{"pattern": 3, "action": "block"}], "words[0].pattern: expected a string, got int"),
        ([{"pattern": "", "action": "block"}], "words[0].pattern: must be 1 to"),
        (
            [{"pattern": "x" * (MAX_PATTERN_CHARS + 1), "action": "block"}],
            "words[0].pattern: must be 1 to",
        ),
        ([{"pattern": "...", "action": "block"}], "words[0].pattern: nothing left to match"),
        ([{"pattern": "*", "action": "block"}], "words[0].pattern: nothing left to match"),
        ([{"pattern": "a", "action": "block", "acton": "x"}], "words[0]: unknown key(s) acton"),
        (["a"], "words[0]: expected a map, got str"),
    ],
)
def test_bad_entries_name_index_and_field(arg: object, message: str) -> None:
    with pytest.raises(WordListError) as info:
        WordList.from_args(arg)
    assert str(info.value).startswith(message)


def test_bad_word_entry_built_directly_is_named() -> None:
    with pytest.raises(WordListError, match=r"^words\[1\]\.pattern"):
        WordList([WordEntry("ok", "block"), WordEntry("~?~", "mask")])


def test_from_file_text(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# house list\n\nblock\tfuck*\nmask\t你妈\nhold\tfuck you\n", "utf-8")
    wl = WordList.from_file(path)
    assert [e.to_wire() for e in wl.entries] == [
        {"pattern": "fuck*", "action": "block"},
        {"pattern": "你妈", "action": "mask"},
        {"pattern": "fuck you", "action": "hold"},
    ]
    path.write_text("block\tok\nban\tx\n", "utf-8")
    with pytest.raises(WordListError, match=r"^words.txt:2\.action: expected block\|mask\|hold"):
        WordList.from_file(path)
    path.write_text("block ok\n", "utf-8")
    with pytest.raises(WordListError, match=r"^words.txt:1: expected ACTION<TAB>PATTERN"):
        WordList.from_file(path)
    path.write_text("block\t...\n", "utf-8")
    with pytest.raises(WordListError, match=r"^words.txt:1\.pattern: nothing left"):
        WordList.from_file(path)


def test_from_file_json_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"words": [{"pattern": "scam", "action": "hold"}]}), "utf-8")
    assert WordList.from_file(path).moderate("scam").action == "hold"
    path.write_text(json.dumps([{"pattern": "scam", "action": "nuke"}]), "utf-8")
    with pytest.raises(WordListError, match=r"^w.json:words\[0\]\.action"):
        WordList.from_file(path)
    path.write_text("{", "utf-8")
    with pytest.raises(WordListError, match=r"^w.json: not valid JSON"):
        WordList.from_file(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(WordListError, match=r"^w.json: not UTF-8"):
        WordList.from_file(path)
    with pytest.raises(WordListError, match=r"^missing.txt: cannot read"):
        WordList.from_file(tmp_path / "missing.txt")


def test_digest_names_the_list() -> None:
    a, b = words(("x", "block")), words(("x", "mask"))
    assert a.digest() != b.digest() and a.digest() == words(("x", "block")).digest()


# ---- properties: spans through the folding --------------------------------------------

_LATIN = "bcdfghjkmnpqruvwxyz"
_SEPARATORS = [".", "-", "_", "\u200b", "\u200d", "·", "~", "🔥"]
_PADDING = "你好谢谢主播今天"  # Chinese around the word: never part of a Latin match


@st.composite
def _disguised(draw: st.DrawFn, word: str) -> str:
    parts = []
    for i, ch in enumerate(word):
        if i:
            parts.append("".join(draw(st.lists(st.sampled_from(_SEPARATORS), max_size=2))))
        style = draw(st.sampled_from(["plain", "upper", "wide"]))
        if style == "upper":
            ch = ch.upper()
        elif style == "wide" and ch.isascii():
            ch = chr(ord(ch) + 0xFEE0)
        elif style == "wide" and ch in _TRADITIONAL:
            ch = _TRADITIONAL[ch]  # for Chinese: the traditional form
        parts.append(ch * draw(st.integers(1, 3)))
    return "".join(parts)


_TRADITIONAL = {s: t for t, s in sorted(T2S.items())}  # one traditional form per character


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mask_span_lands_on_the_disguised_word(data: st.DataObject) -> None:
    chinese = data.draw(st.booleans())
    alphabet = "".join(sorted(_TRADITIONAL))[:200] if chinese else _LATIN
    word = data.draw(st.text(alphabet, min_size=2, max_size=6).filter(lambda w: "傻" not in w))
    before = data.draw(st.text(_PADDING, max_size=4))
    after = data.draw(st.text(_PADDING, max_size=4))
    disguised = data.draw(_disguised(word))
    wl = words((word, "mask"))
    if chinese and (set(word) & set(_PADDING)):
        return  # the padding itself would contain part of the word
    d = wl.moderate(before + disguised + after)
    assert d.action == "mask"
    assert d.text_out == before + "***" + after
    (hit,) = {(h.start, h.end) for h in d.hits}
    assert hit == (len(before), len(before) + len(disguised))


@settings(max_examples=200, deadline=None)
@given(st.text(_LATIN, min_size=3, max_size=6), st.text(_LATIN, min_size=1, max_size=4))
def test_a_latin_word_inside_a_longer_word_is_not_matched(word: str, extra: str) -> None:
    # (a neighbour repeating the word's edge letter would be a repeat, not another word)
    assume(extra[0] != word[-1] and extra[-1] != word[0])
    wl = words((word, "block"))
    assert wl.moderate(word + extra).action == "accept"
    assert wl.moderate(extra + word).action == "accept"
    assert wl.moderate(f"{extra} {word}!").action == "block"
    assert words((word + "*", "block")).moderate(word + extra).action == "block"


# ---- review queue ---------------------------------------------------------------------


def test_review_queue_holds_approves_rejects() -> None:
    q = ReviewQueue(capacity=3)
    a, evicted = q.hold("u1", "m1", "hello", "scam", WALL)
    assert evicted is None and a.item == "h1"
    b, _ = q.hold("u2", "m2", "world", "scam", WALL + 1)
    assert [h.item for h in q.list()] == ["h1", "h2"]
    assert q.approve("h1") == a
    assert q.reject("h2") == b
    assert len(q) == 0
    with pytest.raises(ReviewError, match=r"^item: no held item 'h1'"):
        q.approve("h1")
    with pytest.raises(ReviewError, match=r"^item: expected a string, got int"):
        q.reject(7)


def test_review_queue_bound_expires_the_oldest() -> None:
    q = ReviewQueue(capacity=2)
    q.hold("u1", "m1", "a", None, WALL)
    q.hold("u2", "m2", "b", None, WALL)
    _, evicted = q.hold("u3", "m3", "c", None, WALL)
    assert evicted is not None and evicted.item == "h1"
    assert [h.item for h in q.list()] == ["h2", "h3"] and q.expired == 1


# ---- the facade: decisions, review, audit ---------------------------------------------


def test_every_decision_is_audited_once() -> None:
    audit = MemoryAudit()
    mod = Moderation(audit, LIST)
    texts = ["hello", "f.u.c.k", "你媽的", "great $cam", "nice show", "傻瓜"]
    decisions = [mod.check(f"u{i}", f"m{i}", t, WALL + i) for i, t in enumerate(texts)]
    assert [d.action for d in decisions] == ["accept", "block", "mask", "hold", "accept", "accept"]
    ruled = [d for d in decisions if d.action != "accept"]
    assert len(audit.entries) == len(ruled) == 3
    for entry, d, i in zip(audit.entries, ruled, (1, 2, 3), strict=True):
        assert entry.kind == "moderation" and entry.action == d.action and entry.rule == d.rule
        assert (entry.user, entry.text, entry.at) == (f"u{i}", texts[i], WALL + i)
        assert entry.detail["msg_id"] == f"m{i}"
    assert audit.entries[1].detail["shown"] == "***的"
    assert audit.entries[2].item == decisions[3].item == "h1"


def test_review_commands_show_and_audit() -> None:
    audit = MemoryAudit()
    mod = Moderation(audit, words(("scam", "hold"), ("ass", "mask")))
    d = mod.check("viewer", "m1", "scam ass", WALL)
    assert d.action == "hold" and d.item == "h1"
    assert mod.review_list() == {
        "items": [
            {"item": "h1", "user": "viewer", "text": "scam ***", "rule": "scam", "held_at": WALL}
        ]
    }
    held = mod.approve("h1", "op", WALL + 5)
    assert held.text == "scam ***" and held.user == "viewer"
    assert mod.review_list() == {"items": []}
    last = audit.entries[-1]
    assert (last.kind, last.action, last.by, last.item, last.at) == (
        "review",
        "approve",
        "op",
        "h1",
        WALL + 5,
    )
    mod.check("viewer", "m2", "scam", WALL + 6)
    mod.reject("h2", "op", WALL + 7)
    assert audit.entries[-1].action == "reject"
    with pytest.raises(ReviewError):
        mod.approve("h2", "op", WALL + 8)
    assert len(audit.entries) == 4  # the failed approve logged nothing


def test_full_review_queue_audits_the_expired_item() -> None:
    audit = MemoryAudit()
    mod = Moderation(audit, words(("scam", "hold")), ReviewQueue(capacity=1))
    mod.check("a", "m1", "scam", WALL)
    mod.check("b", "m2", "scam", WALL + 1)
    actions = [(e.kind, e.action, e.item) for e in audit.entries]
    assert actions == [
        ("moderation", "hold", "h1"),
        ("review", "expire", "h1"),
        ("moderation", "hold", "h2"),
    ]


def test_words_set_replaces_the_list_and_audits() -> None:
    audit = MemoryAudit()
    mod = Moderation(audit)
    assert mod.check("u", "m", "scam", WALL).action == "accept"
    result = mod.words_set({"words": [{"pattern": "scam", "action": "block"}]}, "op", WALL)
    assert result == {"count": 1}
    assert mod.check("u", "m", "scam", WALL).action == "block"
    entry = audit.entries[0]
    assert (entry.kind, entry.action, entry.by, entry.detail["count"]) == ("words", "set", "op", 1)
    with pytest.raises(WordListError, match=r"^args\.words\[0\]\.action"):
        mod.words_set({"words": [{"pattern": "x", "action": "zap"}]}, "op", WALL)
    with pytest.raises(WordListError, match=r"^args\.words: required"):
        mod.words_set({}, "op", WALL)
    assert mod.check("u", "m", "scam", WALL).action == "block"  # a bad list changes nothing


def test_reload_from_file(tmp_path: Path) -> None:
    audit = MemoryAudit()
    mod = Moderation(audit)
    path = tmp_path / "words.txt"
    path.write_text("block\tscam\n", "utf-8")
    assert mod.load_file(path, "system", WALL) == 1
    assert mod.check("u", "m", "scam", WALL).action == "block"
    path.write_text("mask\tscam\nhold\tspam\n", "utf-8")
    assert mod.load_file(path, "system", WALL) == 2
    assert mod.check("u", "m", "scam", WALL).text_out == "***"
    sets = [e for e in audit.entries if e.kind == "words"]
    assert [e.detail["count"] for e in sets] == [1, 2]
    assert sets[-1].detail["source"] == str(path) and sets[-1].by == "system"


def test_held_items_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        mod = Moderation(log, words(("scam", "hold")))
        for i in range(4):
            mod.check(f"u{i}", f"m{i}", f"scam {i}", WALL + i)
        mod.approve("h2", "op", WALL + 10)
    with AuditLog(path) as log:
        mod = Moderation(log, words(("scam", "hold")), ReviewQueue(capacity=2))
        assert mod.restore(log.read(), WALL + 20) == 2
        assert [h.item for h in mod.review.list()] == ["h3", "h4"]
        assert mod.review.list()[0].text == "scam 2" and mod.review.list()[0].msg_id == "m2"
        assert mod.check("u9", "m9", "scam", WALL + 21).item == "h5"  # numbering continues
    entries = AuditLog(path).read()
    expired = [e for e in entries if e.action == "expire"]
    # h1 did not fit at restore, h3 made room for h5: audited, never lost silently.
    assert [e.item for e in expired] == ["h1", "h3"]
