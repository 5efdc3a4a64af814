"""Spelled-out English numbers -> digits, exactly as Whisper's ``EnglishNumberNormalizer`` does.

The leaderboard normalisers (both protocols) turn "two hundred and five dollars" into "$205",
"nineteen fifties" into "1950s", "double oh seven" into "007" and "ninety percent" into "90%".
Scores only agree with the leaderboard when every quirk agrees too, so this module reproduces the
behaviour of openai/whisper ``whisper/normalizers/english.py`` (MIT, Copyright (c) 2022 OpenAI)
word for word, including its oddities: "point" before a non-number word disappears, "one" is
written back as a word, a sign word ("minus") sticks to the next output even when that is a
currency word. The code is a table-driven rewrite; ``tests/eval/test_normalizer.py`` holds the
reference cases.

Usage::

    from nemo_neko.eval.numbers import EnglishNumberNormalizer

    EnglishNumberNormalizer()("two point five million dollars")  # -> "$2500000"
"""

from __future__ import annotations

import re
from fractions import Fraction

_ONES = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_MULTIPLIERS = (
    "hundred thousand million billion trillion quadrillion quintillion sextillion septillion "
    "octillion nonillion decillion"
).split()
_IRREGULAR_ORDINALS = {
    "zeroth": (0, "th"), "first": (1, "st"), "second": (2, "nd"), "third": (3, "rd"),
    "fifth": (5, "th"), "twelfth": (12, "th"),
}  # fmt: skip
_SIGNS = {"minus": "-", "negative": "-", "plus": "+", "positive": "+"}
_CURRENCIES = {
    "pound": "£", "pounds": "£", "euro": "€", "euros": "€", "dollar": "$", "dollars": "$",
    "cent": "¢", "cents": "¢",
}  # fmt: skip
_PERCENT = {"per": {"cent": "%"}, "percent": "%"}
_SPECIALS = ("and", "double", "triple", "point")

_NUMERIC = re.compile(r"^\d+(\.\d+)?$")
_HAS_DIGIT = re.compile(r"[0-9]")
_AND_A_HALF = re.compile(r"\band\s+a\s+half\b")
_LETTER_DIGIT = re.compile(r"([a-z])([0-9])")
_DIGIT_LETTER = re.compile(r"([0-9])([a-z])")
_DIGIT_SUFFIX = re.compile(r"([0-9])\s+(st|nd|rd|th|s)\b")
_CURRENCY_AND_CENTS = re.compile(r"([€£$])([0-9]+) (?:and )?¢([0-9]{1,2})\b")
_CURRENCY_ZERO_CENTS = re.compile(r"[€£$]0.([0-9]{1,2})\b")
_DIGIT_ONE = re.compile(r"\b1(s?)\b")


def _fraction(text) -> Fraction | None:
    try:
        return Fraction(text)
    except ValueError:
        return None


class _Run:
    """The number being built: ``value`` (int, or str once digits are concatenated) and a sign
    or currency ``prefix``; :meth:`emit` turns anything into an output word and resets both."""

    __slots__ = ("value", "prefix")

    def __init__(self):
        self.value: int | str | None = None
        self.prefix: str | None = None

    def emit(self, result) -> str:
        text = str(result)
        if self.prefix is not None:
            text = self.prefix + text
        self.value = None
        self.prefix = None
        return text


class EnglishNumberNormalizer:
    """Rewrite spelled-out numbers, currencies and percentages with digits and symbols."""

    def __init__(self):
        ones = {name: i for i, name in enumerate(_ONES, start=1)}
        ones_suffixed = {("sixes" if n == "six" else n + "s"): (v, "s") for n, v in ones.items()}
        ones_suffixed.update(_IRREGULAR_ORDINALS)
        for name, value in ones.items():
            if value > 3 and value not in (5, 12):  # fourth, sixth, ..., eighth, ninth
                ones_suffixed[name + ("h" if name.endswith("t") else "th")] = (value, "th")
        tens = {name: 10 * i for i, name in enumerate(_TENS, start=2)}
        tens_suffixed = {n.replace("y", "ies"): (v, "s") for n, v in tens.items()}
        tens_suffixed.update({n.replace("y", "ieth"): (v, "th") for n, v in tens.items()})
        multipliers = {name: 10 ** (3 * i if i else 2) for i, name in enumerate(_MULTIPLIERS)}
        multipliers_suffixed = {n + "s": (v, "s") for n, v in multipliers.items()}
        multipliers_suffixed.update({n + "th": (v, "th") for n, v in multipliers.items()})

        self.ones, self.tens, self.multipliers = ones, tens, multipliers
        self.zeros = {"o", "oh", "zero"}
        self.decimals = {*ones, *tens, *self.zeros}
        self.prefix_symbols = set(_SIGNS.values()) | set(_CURRENCIES.values())
        # word -> (handler, payload); the first class listed wins, as in Whisper's elif chain
        self.kinds: dict[str, tuple] = {}
        for table, handler in (
            (dict.fromkeys(self.zeros), self._zero),
            (ones, self._one),
            (ones_suffixed, self._one_suffixed),
            (tens, self._ten),
            (tens_suffixed, self._ten_suffixed),
            (multipliers, self._multiplier),
            (multipliers_suffixed, self._multiplier_suffixed),
            (_SIGNS, self._sign),
            (_CURRENCIES, self._currency),
            (_PERCENT, self._percent),
            (dict.fromkeys(_SPECIALS), self._special),
        ):
            for word, payload in table.items():
                self.kinds.setdefault(word, (handler, payload))

    # ----------------------------------------------------------------------------- the word loop
    def convert_words(self, words: list[str]) -> list[str]:
        """The output words for a list of input words (the core state machine).

        Each number-word handler below updates the run and appends finished words to ``out``;
        it returns True when it consumed the next word too ("per cent", "double oh").
        """
        run, out = _Run(), []
        skip = False
        last = len(words) - 1
        for i, word in enumerate(words):
            if skip:
                skip = False
                continue
            prev = words[i - 1] if i else None
            nxt = words[i + 1] if i < last else None
            nxt_numeric = nxt is not None and _NUMERIC.match(nxt) is not None
            signed = word[0] in self.prefix_symbols
            bare = word[1:] if signed else word
            if _NUMERIC.match(bare):
                self._digits(run, out, word, bare, signed)
                continue
            kind = self.kinds.get(word)
            if kind is None:  # an ordinary word ends any number
                if run.value is not None:
                    out.append(run.emit(run.value))
                out.append(run.emit(word))
                continue
            handler, payload = kind
            skip = handler(run, out, word, payload, prev, nxt, nxt_numeric)
        if run.value is not None:
            out.append(run.emit(run.value))
        return out

    @staticmethod
    def _digits(run: _Run, out: list[str], word: str, bare: str, signed: bool) -> None:
        number = _fraction(bare)
        if number is None:
            raise ValueError(f"cannot read {bare!r} as a number")
        if run.value is not None:
            if isinstance(run.value, str) and run.value.endswith("."):
                run.value = run.value + word  # decimals and dotted groups: "3." + "14"
                return
            out.append(run.emit(run.value))
        if signed:
            run.prefix = word[0]
        run.value = number.numerator if number.denominator == 1 else bare

    def _zero(self, run, out, word, payload, prev, nxt, nxt_numeric) -> bool:
        run.value = str(run.value or "") + "0"
        return False

    def _append_ones(self, run: _Run, ones: int, prev: str | None) -> int | str:
        """The run's value with a ones word appended ("twenty" + "three" -> 23)."""
        value = run.value
        if isinstance(value, str) or prev in self.ones:
            if prev in self.tens and ones < 10:
                return value[:-1] + str(ones)
            return str(value) + str(ones)
        if ones < 10:
            return value + ones if value % 10 == 0 else str(value) + str(ones)
        return value + ones if value % 100 == 0 else str(value) + str(ones)

    def _one(self, run, out, word, ones, prev, nxt, nxt_numeric) -> bool:
        run.value = ones if run.value is None else self._append_ones(run, ones, prev)
        return False

    def _one_suffixed(self, run, out, word, payload, prev, nxt, nxt_numeric) -> bool:
        ones, suffix = payload
        number = ones if run.value is None else self._append_ones(run, ones, prev)
        out.append(run.emit(str(number) + suffix))
        return False

    @staticmethod
    def _append_tens(value: int | str, tens: int) -> int | str:
        if isinstance(value, str):
            return value + str(tens)
        return value + tens if value % 100 == 0 else str(value) + str(tens)

    def _ten(self, run, out, word, tens, prev, nxt, nxt_numeric) -> bool:
        run.value = tens if run.value is None else self._append_tens(run.value, tens)
        return False

    def _ten_suffixed(self, run, out, word, payload, prev, nxt, nxt_numeric) -> bool:
        tens, suffix = payload
        number = tens if run.value is None else self._append_tens(run.value, tens)
        out.append(run.emit(str(number) + suffix))
        return False

    @staticmethod
    def _scale(value: int, multiplier: int) -> int:
        """``value`` with its last three digits multiplied: 2 thousand 3 hundred -> 2300."""
        return value // 1000 * 1000 + value % 1000 * multiplier

    def _multiplier(self, run, out, word, multiplier, prev, nxt, nxt_numeric) -> bool:
        value = run.value
        if value is None:
            run.value = multiplier
        elif isinstance(value, str) or value == 0:
            number = _fraction(value)
            product = number * multiplier if number is not None else None
            if product is not None and product.denominator == 1:
                run.value = product.numerator
            else:
                out.append(run.emit(value))
                run.value = multiplier
        else:
            run.value = self._scale(value, multiplier)
        return False

    def _multiplier_suffixed(self, run, out, word, payload, prev, nxt, nxt_numeric) -> bool:
        multiplier, suffix = payload
        value = run.value
        if value is None:
            out.append(run.emit(str(multiplier) + suffix))
        elif isinstance(value, str):
            number = _fraction(value)
            product = number * multiplier if number is not None else None
            if product is not None and product.denominator == 1:
                out.append(run.emit(str(product.numerator) + suffix))
            else:
                out.append(run.emit(value))
                out.append(run.emit(str(multiplier) + suffix))
        else:
            out.append(run.emit(str(self._scale(value, multiplier)) + suffix))
        return False

    def _sign(self, run, out, word, sign, prev, nxt, nxt_numeric) -> bool:
        if run.value is not None:
            out.append(run.emit(run.value))
        if nxt in self.kinds or nxt_numeric:
            run.prefix = sign
        else:
            out.append(run.emit(word))
        return False

    def _currency(self, run, out, word, symbol, prev, nxt, nxt_numeric) -> bool:
        if run.value is not None:
            run.prefix = symbol
            out.append(run.emit(run.value))
        else:
            out.append(run.emit(word))
        return False

    def _percent(self, run, out, word, suffix, prev, nxt, nxt_numeric) -> bool:
        if run.value is None:
            out.append(run.emit(word))
        elif not isinstance(suffix, dict):
            out.append(run.emit(str(run.value) + suffix))
        elif nxt in suffix:  # "per cent"
            out.append(run.emit(str(run.value) + suffix[nxt]))
            return True
        else:
            out.append(run.emit(run.value))
            out.append(run.emit(word))
        return False

    def _special(self, run, out, word, payload, prev, nxt, nxt_numeric) -> bool:
        if nxt not in self.kinds and not nxt_numeric:
            if run.value is not None:
                out.append(run.emit(run.value))
            out.append(run.emit(word))
        elif word == "and":
            if prev not in self.multipliers:  # "hundred and five": that "and" goes
                if run.value is not None:
                    out.append(run.emit(run.value))
                out.append(run.emit(word))
        elif word in ("double", "triple"):
            if nxt in self.ones or nxt in self.zeros:
                digit = str(self.ones.get(nxt, 0))
                run.value = str(run.value or "") + digit * (2 if word == "double" else 3)
                return True
            if run.value is not None:
                out.append(run.emit(run.value))
            out.append(run.emit(word))
        elif nxt in self.decimals or nxt_numeric:  # "point" before a number; else it goes
            run.value = str(run.value or "") + "."
        return False

    # -------------------------------------------------------------------- before and after
    def preprocess(self, text: str) -> str:
        """ "X and a half" -> "X point five"; spaces at letter/digit boundaries (not suffixes)."""
        if "half" in text:
            pieces = []
            segments = _AND_A_HALF.split(text)
            for i, segment in enumerate(segments):
                if not segment.strip():
                    continue
                pieces.append(segment)
                if i < len(segments) - 1:
                    last_word = segment.rsplit(maxsplit=2)[-1]
                    number_word = last_word in self.decimals or last_word in self.multipliers
                    pieces.append("point five" if number_word else "and a half")
            text = " ".join(pieces)
        elif not text.strip():
            return ""
        if _HAS_DIGIT.search(text):  # the three substitutions below need a digit
            text = _LETTER_DIGIT.sub(r"\1 \2", text)
            text = _DIGIT_LETTER.sub(r"\1 \2", text)
            text = _DIGIT_SUFFIX.sub(r"\1\2", text)
        return text

    @staticmethod
    def postprocess(text: str) -> str:
        """Merge currency and cents ("$2 and ¢7" -> "$2.07"); write "1"/"1s" as "one"/"ones"."""

        def combine_cents(match: re.Match) -> str:
            try:
                return f"{match.group(1)}{match.group(2)}.{int(match.group(3)):02d}"
            except ValueError:
                return match.string

        def only_cents(match: re.Match) -> str:
            try:
                return f"¢{int(match.group(1))}"
            except ValueError:
                return match.string

        if "$" in text or "€" in text or "£" in text:
            text = _CURRENCY_AND_CENTS.sub(combine_cents, text)
            text = _CURRENCY_ZERO_CENTS.sub(only_cents, text)
        return _DIGIT_ONE.sub(r"one\1", text) if "1" in text else text

    def __call__(self, text: str) -> str:
        text = self.preprocess(text)
        text = " ".join(self.convert_words(text.split()))
        return self.postprocess(text)
