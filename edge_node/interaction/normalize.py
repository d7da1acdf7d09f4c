"""Text folding for moderation: the many spellings of a word brought to one form.

Viewers dodge word lists with full-width letters (ｆｕｃｋ), traditional characters
(你媽 for 你妈), separators (f.u.c.k, 傻 逼, zero-width spaces),
repeats (fuuuck), look-alikes (sh1t, $cam, Cyrillic а for Latin a) and accents.
``fold`` undoes all of that, for the word list's patterns and for comments alike, so
the matcher compares like with like. Every folded character remembers the span of the
original text it came from, so a match can be masked in what the viewer wrote.

Folding, per original character (cached: the hot path is a dict lookup per char):
1. NFKD, combining marks dropped, NFKC: accents go, full/half width and compatibility
   forms (ﬁ, ①, ㈱, ｱ) become their plain letters.
2. Cyrillic/Greek capitals and small letters that look like Latin ones become Latin
   (before case folding, because Greek capital Eta looks like H, small eta like n).
3. Case folding (ß -> ss), then traditional -> simplified Chinese from ``data/t2s.tsv``
   (OpenCC's character table; see ``data/generate_t2s.py``).
4. Look-alikes: 0->o, 1 | ! ¦ ǃ->i, 3->e, 4 @->a, 5 $->s, 7->t, and l->i (so that "1"
   stands for both i and l: the two letters are one class on both sides of a match).
   Characters that became letters this way are *soft*: a soft letter matches as a
   letter inside a word and also counts as a word boundary next to one ("fuck1",
   "shit!").
5. Whitespace marks a word break (kept only between letters of cased scripts, where
   it separates words; between Chinese characters it is dropped). Punctuation,
   symbols, emoji, format characters (zero-width space/joiner, BOM, soft hyphen),
   controls and invisible fillers are dropped.

Then, per text: three or more single letters in a row separated by spaces are joined
("f u c k"), and runs of the same folded character are collapsed to one *run* that
keeps its length (so "fuuuck" meets "fuck", yet "ass" still needs two s: "as" does
not match it). ``normalize`` is the folded string; ``fold`` adds what the matcher
needs: run lengths, original spans, breaks and which runs are letters of cased
scripts (for word boundaries).

What this module must never do: hold state across calls other than the per-character
cache, or read files after import.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Unit kinds: what a folded character is for matching purposes.
WORD: Final = 1  # a letter of a cased script (Latin, Greek, Cyrillic ...): words have boundaries
SOFT: Final = 2  # a letter made from a digit look-alike (0 1 3 4 5 7)
SYMBOL: Final = 3  # a letter made from a symbol look-alike (! | @ $): also tried as a separator
OTHER: Final = 4  # any other letter or digit: Chinese, kana, Hangul, 2 6 8 9 ...

_SPACE: Final[tuple[tuple[str, int], ...]] = (("", 0),)  # sentinel: whitespace
_DROP: Final[tuple[tuple[str, int], ...]] = ()

MAX_CACHE_CHARS: Final = 65_536
"""The per-character cache is cleared when it grows past this (a flood of rare chars)."""

# Capitals and small letters of other scripts that render like Latin ones. Applied
# before case folding: the look depends on the case (Greek Η is H, η is n).
_HOMOGLYPHS: Final[dict[str, str]] = {
    # Cyrillic capitals
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ү": "Y",
    "Һ": "H", "Ӏ": "I", "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W",
    # Cyrillic small letters (including the small-capital look-alikes)
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ү": "y",
    "һ": "h", "ӏ": "l", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    # Greek capitals
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Greek small letters
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    # Latin oddities
    "ı": "i", "ɡ": "g", "ɑ": "a", "ɩ": "i",
}  # fmt: skip

# After case folding: letter classes, and letters made from digits and symbols.
_LETTER_CLASSES: Final[dict[str, str]] = {"l": "i"}
_SOFT_DIGITS: Final[dict[str, str]] = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t"}
_SOFT_SYMBOLS: Final[dict[str, str]] = {"!": "i", "|": "i", "¦": "i", "ǃ": "i", "@": "a", "$": "s"}

# Letters that draw nothing (Hangul fillers, Khmer inherent vowels, braille blank).
_INVISIBLE: Final = frozenset("\u115f\u1160\u3164\uffa0\u17b4\u17b5\u2800")
_WHITESPACE_CONTROLS: Final = frozenset("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85")
_CASED: Final = frozenset({"Ll", "Lu", "Lt"})
_LETTER_OR_DIGIT: Final = frozenset({"Ll", "Lu", "Lt", "Lm", "Lo", "Nd", "Nl", "No"})
_MARKS: Final = frozenset({"Mn", "Me"})

JOIN_SINGLE_LETTERS: Final = 3
"""This many single letters separated by spaces in a row are read as one word."""


def _load_t2s() -> dict[str, str]:
    table: dict[str, str] = {}
    path = Path(__file__).with_name("data") / "t2s.tsv"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            trad, _, simp = line.partition("\t")
            table[trad] = simp
    return table


T2S: Final[dict[str, str]] = _load_t2s()
"""Traditional -> simplified Chinese, one character each (OpenCC, see data/)."""


def _strip_marks(text: str) -> str:
    """NFKD, drop combining marks, NFKC: "é" -> "e", "ｆ" -> "f", "i̇" -> "i"."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) not in _MARKS)
    return unicodedata.normalize("NFKC", kept)


def _fold_char(ch: str, symbols_as_letters: bool) -> tuple[tuple[str, int], ...]:
    """One original character -> its folded units ((char, kind), ...), _SPACE or _DROP."""
    if ch in _WHITESPACE_CONTROLS or unicodedata.category(ch)[0] == "Z":
        return _SPACE
    if ch in _INVISIBLE:
        return _DROP
    plain = _strip_marks(ch)
    plain = "".join(_HOMOGLYPHS.get(c, c) for c in plain)
    units: list[tuple[str, int]] = []
    for c in _strip_marks(plain.casefold()):
        if c in _WHITESPACE_CONTROLS or unicodedata.category(c)[0] == "Z":
            continue  # a space inside a compatibility form (e.g. "㍱" -> "hpa" has none)
        if c in _INVISIBLE:
            continue
        c = T2S.get(c, c)
        c = _LETTER_CLASSES.get(c, c)
        if c in _SOFT_DIGITS:
            units.append((_SOFT_DIGITS[c], SOFT))
        elif c in _SOFT_SYMBOLS:
            if symbols_as_letters:
                units.append((_SOFT_SYMBOLS[c], SYMBOL))
        else:
            category = unicodedata.category(c)
            if category in _CASED:
                units.append((c, WORD))
            elif category in _LETTER_OR_DIGIT:
                units.append((c, OTHER))
    return tuple(units)


_CACHE: dict[str, tuple[tuple[str, int], ...]] = {}
_CACHE_NO_SYMBOLS: dict[str, tuple[tuple[str, int], ...]] = {}


def fold_char(ch: str, *, symbols_as_letters: bool = True) -> tuple[tuple[str, int], ...]:
    """The folded units of one character: empty when dropped, ``(("", 0),)`` for a space."""
    cache = _CACHE if symbols_as_letters else _CACHE_NO_SYMBOLS
    units = cache.get(ch)
    if units is None:
        if len(cache) >= MAX_CACHE_CHARS:
            cache.clear()
        units = cache[ch] = _fold_char(ch, symbols_as_letters)
    return units


@dataclass(frozen=True, slots=True)
class Folded:
    """A text folded for matching: one entry per run of equal folded characters.

    ``chars[i]`` is run i's character and ``counts[i]`` how many folded characters it
    collapsed; ``starts[i]``/``ends[i]`` the span of the original text it came from
    (``text[starts[i]:ends[i]]``, separators between its characters included);
    ``breaks[i]`` whether whitespace separates it from run i-1 (only ever between
    letters); ``words[i]`` whether it is a letter of a cased script, not made from a
    look-alike (the neighbour that denies a word boundary). ``has_symbols`` says that
    a symbol look-alike (! | @ $) was read as a letter: the matcher then also tries
    the text with those symbols read as separators.
    """

    chars: str
    counts: tuple[int, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    breaks: tuple[bool, ...]
    words: tuple[bool, ...]
    has_breaks: bool
    has_symbols: bool

    def span(self, first: int, last: int) -> tuple[int, int]:
        """The original span of runs ``first..last`` (inclusive)."""
        return self.starts[first], self.ends[last]


def fold(text: str, *, symbols_as_letters: bool = True) -> Folded:
    """Fold ``text`` (see the module docstring); linear in its length, one pass."""
    cache = _CACHE if symbols_as_letters else _CACHE_NO_SYMBOLS
    chars: list[str] = []
    counts: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    breaks: list[bool] = []
    words: list[bool] = []
    symbol_runs: list[int] = []
    last = ""
    last_kind = OTHER  # before the first unit: nothing a space could separate
    space = False
    for i, ch in enumerate(text):
        units = cache.get(ch)
        if units is None:
            units = fold_char(ch, symbols_as_letters=symbols_as_letters)
        if not units:
            continue
        if units is _SPACE:
            space = True
            continue
        for c, kind in units:
            # A space separates words only between letters of cased scripts (soft or
            # not); between Chinese characters, or a letter and a digit, it is noise.
            brk = space and kind != OTHER and last_kind != OTHER
            space = False
            last_kind = kind
            if c == last and not brk:
                counts[-1] += 1
                ends[-1] = i + 1
                if kind == WORD:
                    words[-1] = True
            else:
                last = c
                chars.append(c)
                counts.append(1)
                starts.append(i)
                ends.append(i + 1)
                breaks.append(brk)
                words.append(kind == WORD)
            if kind == SYMBOL:
                symbol_runs.append(len(chars) - 1)
    has_breaks = True in breaks
    if has_breaks and _join_single_letters(counts, breaks):
        _merge_equal_runs(chars, counts, starts, ends, breaks, words)
        has_breaks = True in breaks
        symbol_runs = [r for r in range(len(chars)) if _has_symbol(text, starts[r], ends[r])]
    return Folded(
        "".join(chars),
        tuple(counts),
        tuple(starts),
        tuple(ends),
        tuple(breaks),
        tuple(words),
        has_breaks,
        any(_inside_word(chars, breaks, r) for r in symbol_runs),
    )


def _has_symbol(text: str, start: int, end: int) -> bool:
    return any(kind == SYMBOL for ch in text[start:end] for _, kind in fold_char(ch))


def _inside_word(chars: list[str], breaks: list[bool], r: int) -> bool:
    """Whether run r has a letter on both sides with no space: "f!u", not "hi!" or "! a"."""
    return (
        0 < r < len(chars) - 1
        and not breaks[r]
        and not breaks[r + 1]
        and unicodedata.category(chars[r - 1]) in _CASED
        and unicodedata.category(chars[r + 1]) in _CASED
    )


def _join_single_letters(counts: list[int], breaks: list[bool]) -> bool:
    """Clear the breaks inside >= JOIN_SINGLE_LETTERS one-letter words in a row ("f u c k").

    Run r is a one-letter word when it holds one character and a break (or the text's
    edge) is on both sides of it. Returns whether any break was cleared.
    """
    n = len(counts)
    single = [
        counts[r] == 1 and (r == 0 or breaks[r]) and (r == n - 1 or breaks[r + 1]) for r in range(n)
    ]
    joined = False
    r = 0
    while r < n:
        if not single[r]:
            r += 1
            continue
        k = r
        while k + 1 < n and single[k + 1]:
            k += 1
        if k - r + 1 >= JOIN_SINGLE_LETTERS:
            for m in range(r + 1, k + 1):
                breaks[m] = False
            joined = True
        r = k + 1
    return joined


def _merge_equal_runs(
    chars: list[str],
    counts: list[int],
    starts: list[int],
    ends: list[int],
    breaks: list[bool],
    words: list[bool],
) -> None:
    """Merge neighbouring runs of the same character that no break separates any more."""
    w = 0
    for r in range(1, len(chars)):
        if chars[r] == chars[w] and not breaks[r]:
            counts[w] += counts[r]
            ends[w] = ends[r]
            words[w] = words[w] or words[r]
            continue
        w += 1
        chars[w], counts[w], starts[w] = chars[r], counts[r], starts[r]
        ends[w], breaks[w], words[w] = ends[r], breaks[r], words[r]
    for column in (chars, counts, starts, ends, breaks, words):
        del column[w + 1 :]


def normalize(text: str) -> str:
    """The folded form of ``text``: what the word list's automaton reads.

    ``normalize("Ｆ.u.u.u.c.k")`` is ``"fuck"``; ``normalize("傻 逼")`` is ``"傻逼"``.
    Word breaks are not in the string (see ``fold`` for them and for original spans).
    """
    return fold(text).chars
