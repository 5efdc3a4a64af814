"""Tiny random Hugging Face models (transformers' own config classes, fp32) and their logits.

Every parameter is redrawn (norm gains around their neutral value included), so a mapping that
swapped two norms, two projections or the q/k/v order would show in the logits. Weights are
saved in several safetensors shards, next to a small tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

VOCAB = 96  # Megatron pads it to 128 (TP=1) or 256 (TP=2)

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rope_theta=10000.0,
)


def hf_config(kind: str, **overrides):
    """A transformers config object for ``kind``: mixtral, qwen2_moe, gemma, mistral."""
    from transformers import GemmaConfig, MistralConfig, MixtralConfig, Qwen2MoeConfig

    settings = dict(COMMON)
    if kind == "mixtral":
        cls = MixtralConfig
        settings.update(intermediate_size=48, num_local_experts=4, num_experts_per_tok=2)
    elif kind == "qwen2_moe":
        cls = Qwen2MoeConfig
        settings.update(
            intermediate_size=64,
            moe_intermediate_size=24,
            shared_expert_intermediate_size=40,
            num_experts=4,
            num_experts_per_tok=2,
            norm_topk_prob=False,
        )
    elif kind == "gemma":
        cls = GemmaConfig  # head_dim 16 != hidden / heads = 8
        settings.update(intermediate_size=64, head_dim=16, num_key_value_heads=1)
    elif kind == "mistral":
        cls = MistralConfig
        settings.update(intermediate_size=64, sliding_window=None)
    else:
        raise ValueError(kind)
    settings.update(overrides)
    return cls(**settings)


def build_hf_model(config, seed: int = 0):
    """A transformers causal LM for ``config`` with every parameter drawn from ``seed``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    gemma = config.model_type == "gemma"
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in name:
                p.copy_((0.0 if gemma else 1.0) + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)
    return model.eval()


def write_tokenizer(path: Path) -> None:
    """A tiny byte-level BPE in the Hugging Face layout, plus ``special_tokens_map.json``."""
    from nemo_neko.data.tokenizer import train_bpe_tokenizer

    texts = ["the cat sat on the mat", "a dog ate the log", "speech to text"] * 4
    train_bpe_tokenizer(texts, vocab_size=300, min_frequency=1).save(path)
    special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (path / "special_tokens_map.json").write_text(json.dumps(special))


def save_hf_model(kind: str, path: Path, seed: int = 0, shard: str = "40KB", **overrides) -> Path:
    """Build, save (sharded safetensors + tokenizer) and return ``path``."""
    model = build_hf_model(hf_config(kind, **overrides), seed)
    model.save_pretrained(path, max_shard_size=shard)
    write_tokenizer(path)
    return path


def tokens(batch: int = 2, seq: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def hf_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, S, vocab]`` of the saved model at ``path`` (loaded by transformers, fp32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    )
    with torch.no_grad():
        return model.eval()(ids).logits


def read_safetensors_dir(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every ``.safetensors`` file in ``path`` (with the safetensors library)."""
    from safetensors import safe_open

    out = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), "pt") as fh:
            for name in fh.keys():
                out[name] = fh.get_tensor(name)
    return out
