"""English text normalisers of the Open ASR Leaderboard, by name.

===========  ==================================================================================
name         what it is
===========  ==================================================================================
``none``     the text as given (already-normalised data such as HyPoradise)
``whisper``  Whisper's ``EnglishTextNormalizer`` (openai/whisper, current ``english.json``)
``esb2024``  the leaderboard's copy of it until mid 2025: Whisper's plus ``mm -> hmm``
``oal2026``  the current leaderboard normaliser: more fillers, narrower ``'s``, compounds, name
             variants, acronym collapsing, revised spellings (see :mod:`nemo_neko.eval.lexicon`)
===========  ==================================================================================

Every English normaliser runs the same steps, in Whisper's order: lower-case; drop ``[...]``,
``<...>`` and ``(...)``; drop fillers; expand contractions and titles; drop commas between digits
and periods not before a digit; replace symbols and punctuation with spaces and strip diacritics
(keeping ``. % $ ¢ € £`` for numbers); [join compounds]; spelled-out numbers to digits
(:mod:`nemo_neko.eval.numbers`); British to American spelling; [name variants; acronyms];
drop leftover symbols not attached to digits; squeeze whitespace.

Usage::

    from nemo_neko.eval.normalizer import get_normalizer

    normalize = get_normalizer("esb2024")
    normalize("Mr. Smith's colour TV cost two hundred dollars!")
    # -> "mister smith is color tv cost $200"
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from nemo_neko.eval import lexicon
from nemo_neko.eval.numbers import EnglishNumberNormalizer

Normalizer = Callable[[str], str]

_BRACKETED = re.compile(r"[<\[][^>\]]*[>\]]")
_PARENTHESISED = re.compile(r"\(([^)]+?)\)")
_SPACE_BEFORE_APOSTROPHE = re.compile(r"\s+'")
_COMMA_IN_NUMBER = re.compile(r"(\d),(\d)")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.([^0-9]|$)")
_SYMBOL_NOT_BEFORE_DIGIT = re.compile(r"[.$¢€£]([^0-9])")
_PERCENT_NOT_AFTER_DIGIT = re.compile(r"([^0-9])%")
_WHITESPACE = re.compile(r"\s+")
_HAS_PREFIX_SYMBOL = re.compile(r"[.$¢€£]")

_LETTER_FOLDS = {
    "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "ẞ": "SS",
    "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "th", "ł": "l", "Ł": "L",
}  # fmt: skip
"""Letters NFKD does not decompose, spelled in ASCII (Whisper's list)."""


class _SymbolTable(dict):
    """``str.translate`` table, filled on first use of each character: kept characters stay,
    folded letters are spelled out, combining marks (Mn) vanish, other marks, symbols and
    punctuation (M*, S*, P*) become spaces."""

    def __init__(self, keep: str):
        super().__init__()
        self.keep = frozenset(keep)

    def __missing__(self, codepoint: int) -> str:
        char = chr(codepoint)
        category = unicodedata.category(char)
        if char in self.keep:
            result = char
        elif char in _LETTER_FOLDS:
            result = _LETTER_FOLDS[char]
        elif category == "Mn":
            result = ""
        elif category[0] in "MSP":
            result = " "
        else:
            result = char
        self[codepoint] = result
        return result


_SYMBOLS_KEEPING_NUMERIC = _SymbolTable(keep=".%$¢€£")


def remove_symbols_and_diacritics(text: str, table: _SymbolTable = _SYMBOLS_KEEPING_NUMERIC) -> str:
    """NFKD, then marks, symbols and punctuation to spaces and diacritics dropped (see above)."""
    return unicodedata.normalize("NFKD", text).translate(table)


def collapse_acronyms(text: str) -> str:
    """Join runs of single letters or digits: ``"b b c" -> "bbc"``, ``"5 g" -> "5g"``.

    A run holding ``a`` or ``i`` needs three tokens, so ``"a b"`` and ``"i 5"`` stay apart.
    """
    words = text.split()
    if all(len(word) != 1 for word in words):
        return " ".join(words)
    out: list[str] = []
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and len(words[j]) == 1 and words[j].isalnum():
            j += 1
        run = words[i:j]
        if not run:
            out.append(words[i])
            i += 1
            continue
        needed = 3 if ("a" in run or "i" in run) else 2
        out.extend(["".join(run)] if len(run) >= needed else run)
        i = j
    return " ".join(out)


Rule = tuple[str, str, str]
"""(literal that must occur for the rule to apply, regex, replacement)."""


@dataclass(frozen=True)
class NormalizerSpec:
    """What distinguishes one English normaliser from another (see :mod:`lexicon`)."""

    name: str
    description: str
    fillers: tuple[str, ...]
    replacers: tuple[Rule, ...]
    spellings: dict[str, str]
    compounds: tuple[Rule, ...] = ()
    names: dict[str, str] | None = None
    acronyms: bool = False


class EnglishTextNormalizer:
    """Whisper-style English normaliser configured by a :class:`NormalizerSpec`."""

    def __init__(self, spec: NormalizerSpec):
        self.spec = spec
        self._fillers = re.compile(r"\b(" + "|".join(spec.fillers) + r")\b")
        self._replacers = [(h, re.compile(p), r) for h, p, r in spec.replacers]
        self._compounds = [(h, re.compile(p), r) for h, p, r in spec.compounds]
        self._numbers = EnglishNumberNormalizer()
        self._spellings = spec.spellings
        self._names = spec.names

    def __call__(self, text: str) -> str:
        # each "if <character> in s" only skips a substitution that could not match
        s = text.lower()
        if "<" in s or "[" in s:
            s = _BRACKETED.sub("", s)
        if "(" in s:
            s = _PARENTHESISED.sub("", s)
        s = self._fillers.sub("", s)
        if "'" in s:
            s = _SPACE_BEFORE_APOSTROPHE.sub("'", s)
        for hint, pattern, replacement in self._replacers:
            if hint in s:
                s = pattern.sub(replacement, s)
        if "," in s:
            s = _COMMA_IN_NUMBER.sub(r"\1\2", s)
        if "." in s:
            s = _PERIOD_NOT_BEFORE_DIGIT.sub(r" \1", s)
        s = remove_symbols_and_diacritics(s)
        for hint, pattern, replacement in self._compounds:
            if hint in s:
                s = pattern.sub(replacement, s)
        s = self._numbers(s)
        spellings = self._spellings
        s = " ".join([spellings.get(word, word) for word in s.split()])
        if self._names is not None:
            names = self._names
            s = " ".join([names.get(word, word) for word in s.split()])
        if self.spec.acronyms:
            s = collapse_acronyms(s)
        if _HAS_PREFIX_SYMBOL.search(s):
            s = _SYMBOL_NOT_BEFORE_DIGIT.sub(r" \1", s)
        if "%" in s:
            s = _PERCENT_NOT_AFTER_DIGIT.sub(r"\1 ", s)
        return _WHITESPACE.sub(" ", s)


SPECS: dict[str, NormalizerSpec] = {
    spec.name: spec
    for spec in (
        NormalizerSpec(
            name="whisper",
            description="Whisper's EnglishTextNormalizer (openai/whisper, current english.json)",
            fillers=lexicon.WHISPER_FILLERS,
            replacers=lexicon.WHISPER_REPLACERS,
            spellings=lexicon.WHISPER_SPELLINGS,
        ),
        NormalizerSpec(
            name="esb2024",
            description="Open ASR Leaderboard 2023-2025: Whisper's normaliser plus 'mm' -> 'hmm'",
            fillers=lexicon.WHISPER_FILLERS,
            replacers=lexicon.WHISPER_REPLACERS,
            spellings=lexicon.ESB2024_SPELLINGS,
        ),
        NormalizerSpec(
            name="oal2026",
            description="current Open ASR Leaderboard normaliser (fillers, compounds, names, "
            "acronyms, revised spellings)",
            fillers=lexicon.OAL2026_FILLERS,
            replacers=lexicon.OAL2026_REPLACERS,
            spellings=lexicon.OAL2026_SPELLINGS,
            compounds=lexicon.OAL2026_COMPOUNDS,
            names=lexicon.OAL2026_NAMES,
            acronyms=True,
        ),
    )
}
"""The English normalisers by name."""


def identity(text: str) -> str:
    """The ``none`` normaliser: text as given."""
    return text


def known_normalizers() -> list[str]:
    """``none`` and the English normalisers."""
    return ["none", *SPECS]


@functools.cache
def get_normalizer(name: str) -> Normalizer:
    """The normaliser called ``name`` (built once); ``KeyError`` listing the known names."""
    if name == "none":
        return identity
    if name not in SPECS:
        raise KeyError(f"unknown normalizer {name!r} (known: {', '.join(known_normalizers())})")
    return EnglishTextNormalizer(SPECS[name])
