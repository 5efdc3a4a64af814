"""The task interface: each task owns its prompt, its inputs and its metric.

A task turns a :class:`~nemo_neko.data.records.CorrectionRecord` into the text the model reads
(:meth:`Task.prompt`) and names the metric its outputs are scored with (``wer`` or ``bleu``).
The evaluator and the sample builder loop over tasks; they never branch on task names.
"""

from __future__ import annotations

from typing import ClassVar

LANGUAGE_NAMES = {
    "ar": "Arabic", "ca": "Catalan", "cs": "Czech", "cy": "Welsh", "de": "German", "en": "English",
    "es": "Spanish", "et": "Estonian", "fa": "Persian", "fr": "French", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lv": "Latvian", "mn": "Mongolian",
    "nl": "Dutch", "pt": "Portuguese", "ru": "Russian", "sl": "Slovenian", "sv": "Swedish",
    "ta": "Tamil", "tr": "Turkish", "zh": "Chinese",
}  # fmt: skip
"""Language codes (ISO 639-1, as in CoVoST 2 / WMT) to the names used in prompts."""


def language_name(code: str) -> str:
    """``"de"`` -> ``"German"``; ``"de-DE"`` -> ``"German"``; unknown codes are returned as given."""
    return LANGUAGE_NAMES.get(code.split("-")[0].split("_")[0].lower(), code)


class Task:
    """One correction task. Subclasses set the class attributes and :meth:`prompt`."""

    name: ClassVar[str]
    """Registered name, the ``task`` field of records."""
    metric: ClassVar[str]
    """``"wer"`` or ``"bleu"``: how corrected outputs are scored."""
    input_field: ClassVar[str]
    """``"hypotheses"`` (an N-best list) or ``"source"`` (one input text)."""
    needs_languages: ClassVar[bool] = False
    """Records must carry ``src_lang`` and ``tgt_lang``."""

    def check_record(self, record) -> tuple[str, str] | None:
        """``(field, problem)`` when ``record`` cannot be used for this task, else None."""
        if self.input_field == "hypotheses":
            if not record.hypotheses:
                return "hypotheses", f"task {self.name!r} needs a non-empty hypothesis list"
        elif not record.source:
            return "source", f"task {self.name!r} needs a non-empty source text"
        if self.needs_languages:
            for field in ("src_lang", "tgt_lang"):
                if not getattr(record, field):
                    return field, f"task {self.name!r} needs {field}"
        return None

    def inputs(self, record) -> list[str]:
        """What the model corrects: the N-best list, or ``[source]``."""
        return list(record.hypotheses) if self.input_field == "hypotheses" else [record.source]

    def prompt(self, record, inputs: list[str] | None = None) -> str:
        """The model's input text for ``record`` (``inputs`` overrides :meth:`inputs`, e.g. truncated)."""
        raise NotImplementedError

    def target(self, record) -> str:
        """What the model should produce."""
        return record.reference

    def baseline(self, record) -> str:
        """The uncorrected output: the 1-best hypothesis, or the source text."""
        return self.inputs(record)[0]

    def candidates(self, record) -> list[str]:
        """Outputs an oracle may pick from (the N-best list, or the source)."""
        return self.inputs(record)
