"""GGUF checkpoints (llama.cpp's format) read as if they were Hugging Face folders.

:class:`GGUFCheckpoint` has the interface of :class:`~nemo_neko.convert.safetensors_io.HFCheckpoint`
(``config``, ``names()``, ``info()``, ``read()``, ``dtype()``): the importer, the adapters and
upcycling take a GGUF file exactly as they take a folder. Reading uses the ``gguf`` package of the
ggml project (a memory-mapped :class:`gguf.GGUFReader`, ``gguf.quants.dequantize``), never a
hand-written parser; a tensor is dequantised to fp32 when its rows are first asked for and kept
until another tensor is read, so memory holds one tensor at a time.

Supported: the ``llama`` architecture (Llama, Mistral and SmolLM checkpoints converted by
llama.cpp) in any tensor type ``gguf`` dequantises (F32, F16, BF16, Q8_0, Q4_0, Q4_1 are tested).
llama.cpp stores the query and key projections with their rotary halves interleaved per head;
they are permuted back to the Hugging Face layout here (what transformers' GGUF loader does).
The embedded tokenizer becomes a Hugging Face tokenizer folder through transformers' own GGUF
tokenizer conversion (:meth:`GGUFCheckpoint.write_tokenizer`), its chat template included.

Shapes: weights are ``[out_features, in_features]`` as in Hugging Face checkpoints.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from nemo_neko.convert.safetensors_io import CheckpointError, TensorInfo

GGUF_HINT = "GGUF files need the gguf package: pip install gguf"

LLAMA_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
"""llama.cpp tensor names (per block after ``blk.<i>.``) -> Hugging Face Llama names."""

_BLOCK = re.compile(r"blk\.(\d+)\.(.+)")


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor (None when it has none)."""
    match = _BLOCK.fullmatch(gguf_name)
    if match is None:
        return LLAMA_NAMES.get(gguf_name)
    layer, leaf = match.groups()
    mapped = LLAMA_NAMES.get(leaf)
    return None if mapped is None else f"model.layers.{layer}.{mapped}"


def unpermute_rotary(weight_OI: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head interleaving of a query/key projection ``[heads * d, in]``."""
    rows = weight_OI.shape[0]
    half = rows // heads // 2
    return (
        weight_OI.reshape(heads, half, 2, *weight_OI.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight_OI.shape)
    )


class GGUFCheckpoint:
    """A ``.gguf`` file with the interface of ``HFCheckpoint`` (see the module docstring)."""

    def __init__(self, path):
        try:
            import gguf
        except ImportError as err:
            raise ImportError(f"{path}: {GGUF_HINT}") from err
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such GGUF file")
        try:
            self._reader = gguf.GGUFReader(str(self.path))
        except (ValueError, OSError) as err:
            raise CheckpointError(f"{self.path}: not a readable GGUF file ({err})") from None
        self._gguf = gguf
        arch = self.field("general.architecture")
        if arch != "llama":
            raise CheckpointError(
                f"{self.path}: GGUF architecture {arch!r} is not supported (llama: Llama, Mistral, "
                f"SmolLM)"
            )
        self._tensors = {}
        unknown = []
        for tensor in self._reader.tensors:
            name = hf_name(tensor.name)
            if name is None:
                unknown.append(tensor.name)
            else:
                self._tensors[name] = tensor
        if unknown:
            raise CheckpointError(
                f"{self.path}: tensors with no Hugging Face Llama counterpart, e.g. {unknown[:3]} "
                f"(RoPE scaling factors and other extras are not converted)"
            )
        self.config = self._hf_config()
        self._cached: tuple[str, torch.Tensor] | None = None

    # -- metadata ---------------------------------------------------------------------------

    def field(self, key: str, default=None):
        """A metadata value (``llama.block_count``...), ``default`` when absent."""
        found = self._reader.fields.get(key)
        return default if found is None else found.contents()

    def _require(self, key: str):
        value = self.field(key)
        if value is None:
            raise CheckpointError(f"{self.path}: no {key} in the GGUF metadata")
        return value

    def _hf_config(self) -> dict:
        """The Hugging Face ``LlamaConfig`` the file describes."""
        heads = int(self._require("llama.attention.head_count"))
        hidden = int(self._require("llama.embedding_length"))
        embed = self._tensors.get("model.embed_tokens.weight")
        if embed is None:
            raise CheckpointError(f"{self.path}: no token_embd.weight tensor")
        vocab = int(self.field("llama.vocab_size") or embed.shape[-1])
        if self.field("llama.rope.scaling.type") not in (None, "none"):
            raise CheckpointError(f"{self.path}: RoPE scaling is not converted")
        config = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": hidden,
            "num_hidden_layers": int(self._require("llama.block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(self.field("llama.attention.head_count_kv") or heads),
            "head_dim": int(self.field("llama.rope.dimension_count") or hidden // heads),
            "intermediate_size": int(self._require("llama.feed_forward_length")),
            "vocab_size": vocab,
            "max_position_embeddings": int(self.field("llama.context_length") or 4096),
            "rms_norm_eps": float(self.field("llama.attention.layer_norm_rms_epsilon") or 1e-5),
            "rope_theta": float(self.field("llama.rope.freq_base") or 10000.0),
            "hidden_act": "silu",
            "tie_word_embeddings": "lm_head.weight" not in self._tensors,
            "attention_bias": False,
            "mlp_bias": False,
        }
        for key, name in (
            ("bos_token_id", "bos"),
            ("eos_token_id", "eos"),
            ("pad_token_id", "padding"),
        ):
            value = self.field(f"tokenizer.ggml.{name}_token_id")
            if value is not None:
                config[key] = int(value)
        return config

    # -- tensors ----------------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def names(self) -> list[str]:
        return list(self._tensors)

    def info(self, name: str) -> TensorInfo:
        """Shape ``[out, in]`` (Hugging Face order) and fp32, the dtype reads return."""
        dims = tuple(int(d) for d in reversed(self._tensors[name].shape.tolist()))
        return TensorInfo(torch.float32, dims, 0)

    def tensor_type(self, name: str) -> str:
        """The tensor's GGUF storage type (``Q4_1``, ``F32``...)."""
        return self._tensors[name].tensor_type.name

    def _full(self, name: str) -> torch.Tensor:
        if self._cached is not None and self._cached[0] == name:
            return self._cached[1]
        tensor = self._tensors[name]
        try:
            data = self._gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError as err:
            raise CheckpointError(
                f"{self.path}: {tensor.name} is {tensor.tensor_type.name}, which gguf cannot "
                f"dequantise ({err})"
            ) from None
        data = np.asarray(data, dtype=np.float32).reshape(self.info(name).shape)
        if name.endswith("q_proj.weight"):
            data = unpermute_rotary(data, self.config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            data = unpermute_rotary(data, self.config["num_key_value_heads"])
        full = torch.from_numpy(np.array(data, dtype=np.float32, order="C"))
        self._cached = (name, full)
        return full

    def read(self, name: str, start: int = 0, stop=None, out=None) -> torch.Tensor:
        """Rows ``[start, stop)`` of tensor ``name`` in fp32 (into ``out`` when given)."""
        full = self._full(name)
        rows = full[start : full.shape[0] if stop is None else stop] if full.dim() else full
        if out is None:
            return rows.clone()
        if out.dtype != torch.float32 or tuple(out.shape) != tuple(rows.shape):
            raise ValueError(f"{name}: destination must be {tuple(rows.shape)} float32")
        return out.copy_(rows)

    def dtype(self) -> torch.dtype:
        """Every tensor is read dequantised to fp32."""
        return torch.float32

    def close(self) -> None:
        self._cached = None

    # -- tokenizer --------------------------------------------------------------------------

    def write_tokenizer(self, target: Path) -> list[str]:
        """The embedded tokenizer as a Hugging Face tokenizer folder (transformers' conversion);
        returns the files written."""
        try:
            from transformers import AutoTokenizer
        except ImportError as err:
            raise ImportError(
                f"{self.path}: the GGUF tokenizer is converted with transformers: "
                "pip install 'transformers>=5'"
            ) from err
        import json

        tokenizer = AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name)
        target.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(target))
        config_file = target / "tokenizer_config.json"  # what the GGUF says about BOS, kept
        config = json.loads(config_file.read_text())
        config["add_bos_token"] = bool(self.field("tokenizer.ggml.add_bos_token", True))
        config_file.write_text(json.dumps(config, indent=2) + "\n")
        return sorted(p.name for p in target.iterdir())
