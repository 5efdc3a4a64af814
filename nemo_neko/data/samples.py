"""Samples: a record rendered by its task and tokenised, in one of two formats.

* ``plain``: ``[BOS] + prompt + "\\n" + target + [EOS]`` (BOS when the tokenizer adds one);
* ``chat``: the tokenizer's own chat template, the task prompt as the user turn (after an
  optional system turn) and the target as the assistant turn:
  ``render([system?, user], add_generation_prompt=True) + target + [end of turn]``, the end of
  turn being the tokenizer's EOS (``<|im_end|>`` for SmolLM2/Qwen, ``</s>`` for Mistral).
  Generation stops there. This is what instruct/chat models (SmolLM2-Instruct, Mixtral-Instruct,
  Qwen-Chat) were trained on.

The prompt tokens are loss-masked; the target and the final EOS / end of turn are what the model
learns to produce.

Over-long samples (more than ``max_length`` tokens) are shortened on the *input* side only:

1. drop hypotheses from the end of the N-best list (lowest ranked first), keeping at least one;
2. cut the remaining input text (at a word boundary) until the sample fits;
3. if even the shortest form does not fit (the task's prompt around one empty input, the target
   and the special tokens: :meth:`SampleBuilder.shortest_length`), the sample is left out and its
   id is reported in :class:`SampleStats` (the target is never truncated).

A dataset's samples are stored flat (:class:`TokenizedDataset`): one ``int32`` token array with
offsets, the prompt length of each sample, and the record ids, cached as ``.npz``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from nemo_neko.data.records import CorrectionRecord
from nemo_neko.data.tokenizer import TextTokenizer
from nemo_neko.tasks import get_task

PROMPT_SEPARATOR = "\n"
FORMAT_VERSION = 1
"""Bump when rendering or tokenisation changes, so caches are rebuilt."""


class PromptFormat(StrEnum):
    """How a record becomes a sample (``data.prompt_format``; see the module docstring)."""

    plain = "plain"
    chat = "chat"


@dataclass
class SampleStats:
    """What tokenising a dataset did: counts of samples, tokens and shortenings."""

    samples: int = 0
    tokens: int = 0
    target_tokens: int = 0
    hypotheses_dropped: int = 0
    """Samples that lost hypotheses from the end of their N-best list."""
    inputs_cut: int = 0
    """Samples whose (remaining) input text was cut."""
    too_long: list[str] = field(default_factory=list)
    """Ids of records left out because even their shortest form exceeds ``max_length``."""

    @property
    def truncated(self) -> int:
        return self.hypotheses_dropped + self.inputs_cut

    def as_dict(self) -> dict:
        return {
            "samples": self.samples,
            "tokens": self.tokens,
            "target_tokens": self.target_tokens,
            "hypotheses_dropped": self.hypotheses_dropped,
            "inputs_cut": self.inputs_cut,
            "too_long": len(self.too_long),
            "too_long_ids": list(self.too_long),
        }


@dataclass
class TokenizedDataset:
    """The samples of one dataset, flat.

    Attributes:
        name: dataset name.
        tokens: ``[total]`` int32, all samples back to back.
        offsets: ``[N + 1]`` int64, sample ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``.
        prompt_lengths: ``[N]`` int32, loss-masked tokens at the start of each sample.
        ids: ``[N]`` record ids.
        stats: what tokenising did.
    """

    name: str
    tokens: np.ndarray
    offsets: np.ndarray
    prompt_lengths: np.ndarray
    ids: np.ndarray
    stats: SampleStats

    def __len__(self) -> int:
        return len(self.prompt_lengths)

    @property
    def lengths(self) -> np.ndarray:
        """``[N]`` int64 sample lengths."""
        return np.diff(self.offsets)

    def sample(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        stats = self.stats
        np.savez(
            tmp,
            name=np.array(self.name),
            tokens=self.tokens,
            offsets=self.offsets,
            prompt_lengths=self.prompt_lengths,
            ids=self.ids,
            counts=np.array(
                [
                    stats.samples,
                    stats.tokens,
                    stats.target_tokens,
                    stats.hypotheses_dropped,
                    stats.inputs_cut,
                ]
            ),
            too_long=np.array(stats.too_long, dtype=str),
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TokenizedDataset:
        with np.load(path, allow_pickle=False) as data:
            counts = data["counts"].tolist()
            stats = SampleStats(*counts, too_long=data["too_long"].tolist())
            return cls(
                name=str(data["name"]),
                tokens=data["tokens"],
                offsets=data["offsets"],
                prompt_lengths=data["prompt_lengths"],
                ids=data["ids"],
                stats=stats,
            )


class SampleBuilder:
    """Renders records with their task's prompt and tokenises them into samples.

    Args:
        tokenizer: the run's tokenizer (with a chat template for ``chat``).
        max_length: longest sample in tokens.
        prompt_format: ``plain`` or ``chat`` (see the module docstring).
        system_prompt: ``chat``: the system turn's text; None = the template's own default.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        max_length: int,
        prompt_format: str = PromptFormat.plain,
        system_prompt: str | None = None,
    ):
        if max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.format = PromptFormat(prompt_format)
        self.system_prompt = system_prompt
        if self.format is PromptFormat.chat and tokenizer.chat_template is None:
            raise ValueError(
                f"data.prompt_format=chat needs a tokenizer with a chat template; {tokenizer.name} "
                f"has none (use data.prompt_format=plain)"
            )
        with_bos = self.format is PromptFormat.plain and tokenizer.add_bos
        self.head = [tokenizer.bos_id] if with_bos else []
        self.specials = len(self.head) + 1  # BOS? + EOS (or the end of turn)

    def _assemble(self, prompt_ids: list[int], target_ids: list[int]) -> tuple[list[int], int]:
        prompt = self.head + prompt_ids
        return prompt + target_ids + [self.tokenizer.eos_id], len(prompt)

    def prompt_text(self, record: CorrectionRecord, inputs: list[str] | None = None) -> str:
        """The text the model reads before its answer, in this builder's format."""
        task_prompt = get_task(record.task).prompt(record, inputs)
        if self.format is PromptFormat.plain:
            return task_prompt + PROMPT_SEPARATOR
        messages = [{"role": "user", "content": task_prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.render_chat(messages, add_generation_prompt=True)

    def _prompt_ids(self, record: CorrectionRecord, inputs: list[str]) -> list[int]:
        return self.tokenizer.encode(self.prompt_text(record, inputs))

    def _fits(self, prompt_ids: list[int], target_ids: list[int]) -> bool:
        return len(prompt_ids) + len(target_ids) + self.specials <= self.max_length

    def _shorten(self, record: CorrectionRecord, target_ids: list[int], stats: SampleStats):
        """Prompt ids that fit next to ``target_ids``, or None if nothing fits."""
        inputs = get_task(record.task).inputs(record)
        dropped_hypotheses = len(inputs) > 1
        while len(inputs) > 1:
            inputs = inputs[:-1]
            prompt_ids = self._prompt_ids(record, inputs)
            if self._fits(prompt_ids, target_ids):
                stats.hypotheses_dropped += 1
                return prompt_ids
        if not self._fits(self._prompt_ids(record, inputs[:-1] + [""]), target_ids):
            return None
        stats.hypotheses_dropped += int(dropped_hypotheses)
        stats.inputs_cut += 1
        text = inputs[-1]
        low, high = 0, len(text)  # the longest prefix that fits, by bisection on characters
        while low < high:
            middle = (low + high + 1) // 2
            if self._fits(self._prompt_ids(record, inputs[:-1] + [text[:middle]]), target_ids):
                low = middle
            else:
                high = middle - 1
        cut = text[:low]
        if low < len(text) and " " in cut:
            cut = cut[: cut.rindex(" ")]
        return self._prompt_ids(record, inputs[:-1] + [cut])

    def shortest_length(self, record: CorrectionRecord) -> tuple[int, int]:
        """``(tokens, target tokens)`` of ``record``'s shortest sample: its task's prompt around
        one empty input, the target and the special tokens; the target part counts the target
        and the special tokens alone. A sample fits ``max_length`` only if the first does."""
        target = len(self.tokenizer.encode(get_task(record.task).target(record))) + self.specials
        return len(self._prompt_ids(record, [""])) + target, target

    @property
    def rendering(self) -> str:
        """The format and system prompt (part of cache keys)."""
        return f"{self.format}|{self.system_prompt!r}"

    def inference_prompt(self, record: CorrectionRecord, reserve: int) -> list[int]:
        """``[BOS] + prompt`` ids (chat: the template up to the assistant turn) for generation, shortened like a training sample so that
        ``reserve`` new tokens still fit in ``max_length`` (None-safe: never empty)."""
        prompt_ids = self._prompt_ids(record, get_task(record.task).inputs(record))
        placeholder = [0] * max(0, reserve - 1)  # stands for the generated tokens (EOS counted)
        if not self._fits(prompt_ids, placeholder):
            shortened = self._shorten(record, placeholder, SampleStats())
            prompt_ids = (
                shortened if shortened is not None else prompt_ids[-(self.max_length - reserve) :]
            )
        return self.head + prompt_ids

    def build(self, records: list[CorrectionRecord], name: str) -> TokenizedDataset:
        """Tokenise ``records`` (one dataset) into a :class:`TokenizedDataset`."""
        stats = SampleStats()
        prompts = [self.prompt_text(r) for r in records]
        targets = [get_task(r.task).target(r) for r in records]
        prompt_ids_all = self.tokenizer.encode_batch(prompts)
        target_ids_all = self.tokenizer.encode_batch(targets)
        pieces, prompt_lengths, ids = [], [], []
        for record, prompt_ids, target_ids in zip(records, prompt_ids_all, target_ids_all):
            if not self._fits(prompt_ids, target_ids):
                prompt_ids = self._shorten(record, target_ids, stats)
                if prompt_ids is None:
                    stats.too_long.append(record.id)
                    continue
            sample, num_prompt = self._assemble(prompt_ids, target_ids)
            pieces.append(np.asarray(sample, dtype=np.int32))
            prompt_lengths.append(num_prompt)
            ids.append(record.id)
            stats.target_tokens += len(target_ids) + 1
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        stats.samples = len(pieces)
        stats.tokens = int(offsets[-1])
        return TokenizedDataset(
            name=name,
            tokens=np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32),
            offsets=offsets,
            prompt_lengths=np.asarray(prompt_lengths, dtype=np.int32),
            ids=np.asarray(ids, dtype=str),
            stats=stats,
        )


def cache_key(
    record_paths: list[str], tokenizer: TextTokenizer, max_length: int, rendering: str = "plain"
) -> str:
    """Digest of the record files' bytes, the tokenizer and the settings (``rendering``: the
    prompt format and system prompt)."""
    digest = hashlib.sha256()
    for path in record_paths:
        digest.update(str(Path(path).name).encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    digest.update(f"{tokenizer.fingerprint()}|{max_length}|{FORMAT_VERSION}|{rendering}".encode())
    return digest.hexdigest()[:20]
