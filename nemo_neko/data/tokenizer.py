"""Tokenisers: Hugging Face ``tokenizers`` loaded from a local directory, or trained here.

Production models (Mixtral, Gemma, Qwen) ship a Hugging Face tokenizer directory:
``tokenizer.json`` plus ``tokenizer_config.json`` / ``special_tokens_map.json`` naming the BOS,
EOS and padding tokens. :meth:`TextTokenizer.from_dir` reads exactly that, with the Rust
``tokenizers`` library (no ``transformers`` needed).

The embedded default trains a small byte-level BPE tokenizer on its own sample data
(:func:`train_bpe_tokenizer`) and saves it in the same layout, next to the model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

DEFAULT_SPECIAL_TOKENS = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
CHAT_TEMPLATE_FILE = "chat_template.jinja"
"""Where transformers 5 saves a tokenizer's chat template (older folders keep it in
``tokenizer_config.json``)."""


def _chat_template(path: Path, config: dict) -> str | None:
    """The folder's chat template: ``chat_template.jinja``, else ``tokenizer_config.json``'s
    ``chat_template`` (a string, or the ``default`` of a list of named templates)."""
    if (path / CHAT_TEMPLATE_FILE).exists():
        return (path / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


@functools.lru_cache(maxsize=8)
def _compiled_template(source: str):
    """A chat template compiled as transformers compiles it (sandboxed, trimmed blocks)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def _token_content(value) -> str | None:
    """``"<s>"`` or ``{"content": "<s>", ...}`` (both appear in tokenizer_config.json)."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the special tokens the data pipeline needs.

    Args:
        tokenizer: the Rust tokenizer.
        bos_token / eos_token / pad_token: special token strings (must be in the vocabulary;
            ``pad_token`` falls back to ``eos_token``; ``bos_token`` may be None).
        add_bos: prepend BOS to every sample (Mixtral, Gemma: yes; Qwen: no).
        name: where it came from, for logs.
    """

    def __init__(
        self,
        tokenizer,
        *,
        bos_token: str | None,
        eos_token: str,
        pad_token: str | None = None,
        add_bos: bool = True,
        name: str = "tokenizer",
        chat_template: str | None = None,
    ):
        self._tok = tokenizer
        self.name = name
        self.chat_template = chat_template
        self.bos_id = self._id_of(bos_token, "bos_token") if bos_token else None
        self.eos_id = self._id_of(eos_token, "eos_token")
        self.pad_id = self._id_of(pad_token, "pad_token") if pad_token else self.eos_id
        self.add_bos = add_bos and self.bos_id is not None
        self.special = {"bos": bos_token, "eos": eos_token, "pad": pad_token}

    def _id_of(self, token: str, what: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{self.name}: {what} {token!r} is not in the vocabulary")
        return token_id

    # -- loading / saving -------------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> TextTokenizer:
        """Load a Hugging Face tokenizer directory (``tokenizer.json`` + its configs)."""
        from tokenizers import Tokenizer

        path = Path(path)
        tokenizer_file = path / "tokenizer.json"
        if not tokenizer_file.exists():
            raise FileNotFoundError(
                f"{path}: no tokenizer.json (a Hugging Face tokenizer directory is expected; "
                f"slow-only tokenizers must be converted to tokenizer.json first)"
            )
        config: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # later wins
            if (path / name).exists():
                with open(path / name, encoding="utf-8") as fh:
                    try:
                        config.update(json.load(fh))
                    except json.JSONDecodeError as err:
                        raise ValueError(
                            f"{path / name}:{err.lineno}: malformed JSON ({err.msg})"
                        ) from None
        template = _chat_template(path, config)
        eos = _token_content(config.get("eos_token"))
        if not eos:
            raise ValueError(
                f"{path}: no eos_token in tokenizer_config.json or special_tokens_map.json"
            )
        return cls(
            Tokenizer.from_file(str(tokenizer_file)),
            bos_token=_token_content(config.get("bos_token")),
            eos_token=eos,
            pad_token=_token_content(config.get("pad_token")),
            add_bos=bool(config.get("add_bos_token", config.get("bos_token") is not None)),
            name=str(path),
            chat_template=template,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(path / "tokenizer.json"))
        config = {
            "bos_token": self.special["bos"],
            "eos_token": self.special["eos"],
            "pad_token": self.special["pad"],
            "add_bos_token": self.add_bos,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        with open(path / "tokenizer_config.json", "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)
        if self.chat_template is not None:
            (path / CHAT_TEMPLATE_FILE).write_text(self.chat_template, encoding="utf-8")

    # -- use ----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts at once (parallel in Rust), without special tokens."""
        return [enc.ids for enc in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The chat template applied to ``messages`` (``[{"role": ..., "content": ...}]``), as
        transformers' ``apply_chat_template`` renders it (sandboxed Jinja, the special tokens as
        variables)."""
        if self.chat_template is None:
            raise ValueError(f"{self.name}: the tokenizer has no chat template")
        return _compiled_template(self.chat_template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.special["bos"] or "",
            eos_token=self.special["eos"],
        )

    def fingerprint(self) -> str:
        """Hash of the vocabulary, merges, special tokens and chat template (cache keys)."""
        payload = self._tok.to_str() + json.dumps(self.special, sort_keys=True) + str(self.add_bos)
        payload += self.chat_template or ""
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    *,
    special_tokens: dict[str, str] | None = None,
    min_frequency: int = 2,
) -> TextTokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style) on ``texts``; deterministic for the input."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = {**DEFAULT_SPECIAL_TOKENS, **(special_tokens or {})}
    tokenizer = Tokenizer(models.BPE(unk_token=special["unk"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[special["pad"], special["bos"], special["eos"], special["unk"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return TextTokenizer(
        tokenizer,
        bos_token=special["bos"],
        eos_token=special["eos"],
        pad_token=special["pad"],
        add_bos=True,
        name="trained-bpe",
    )
