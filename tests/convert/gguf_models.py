"""Tiny GGUF files written here with the ggml project's own ``gguf`` writer, as llama.cpp writes
them: a random Llama model (query/key rows interleaved per head, llama.cpp's layout), its tensors
in several storage types (F32, F16, BF16, Q8_0, Q4_0, Q4_1), a byte-level BPE tokenizer with a
chat template, the metadata llama.cpp's converter writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DIMS = dict(hidden=64, heads=4, kv_heads=2, ffn=128, layers=2, rope_base=10000.0, eps=1e-5)
"""Row lengths are multiples of 32, the block size of the quantised types."""

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TYPES = {  # GGUF tensor name (per block after blk.N.) -> storage type
    "token_embd.weight": "Q8_0",
    "attn_q.weight": "Q4_0",
    "attn_k.weight": "Q4_1",
    "attn_v.weight": "F16",
    "attn_output.weight": "BF16",
    "ffn_gate.weight": "Q8_0",
    "ffn_up.weight": "Q4_1",
    "ffn_down.weight": "Q4_0",
    "attn_norm.weight": "F32",
    "ffn_norm.weight": "F32",
    "output_norm.weight": "F32",
    "output.weight": "F16",
}


def permute_rotary(weight_OI: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's ``permute`` of a query/key projection (the inverse of what import undoes)."""
    rows = weight_OI.shape[0]
    return (
        weight_OI.reshape(heads, 2, rows // heads // 2, *weight_OI.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight_OI.shape)
    )


def tokenizer_parts(words: int = 300):
    """A small byte-level BPE (trained on the ASR prompts) as GGUF's token and merge lists."""
    from nemo_neko.data.tokenizer import train_bpe_tokenizer

    texts = [
        f"list all flights from city {i} to city {i * 7 % 13} on day {i % 5}" for i in range(words)
    ]
    special = {"bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": "<unk>"}
    tokenizer = train_bpe_tokenizer(texts, vocab_size=320, special_tokens=special, min_frequency=1)
    import json

    model = json.loads(tokenizer._tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
    tokens = [t for t, _ in vocab]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in special.values() else 1 for t in tokens]  # 3 = control
    return tokens, merges, types, {k: tokens.index(v) for k, v in special.items()}


def write_tiny_gguf(path: Path, *, tied: bool = False, seed: int = 0) -> Path:
    """Write a tiny random Llama GGUF file (see the module docstring); returns ``path``."""
    import gguf
    from gguf import quants

    rng = np.random.default_rng(seed)
    d = DIMS
    head_dim = d["hidden"] // d["heads"]
    tokens, merges, types, ids = tokenizer_parts()
    vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(d["layers"])
    writer.add_context_length(256)
    writer.add_embedding_length(d["hidden"])
    writer.add_feed_forward_length(d["ffn"])
    writer.add_head_count(d["heads"])
    writer.add_head_count_kv(d["kv_heads"])
    writer.add_rope_freq_base(d["rope_base"])
    writer.add_layer_norm_rms_eps(d["eps"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids["bos"])
    writer.add_eos_token_id(ids["eos"])
    writer.add_pad_token_id(ids["pad"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    def tensor(name: str, shape: tuple[int, ...], kind: str, scale: float = 0.08) -> None:
        if kind == "norm":
            data = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            data = (scale * rng.standard_normal(shape)).astype(np.float32)
        leaf = name.split(".", 2)[-1] if name.startswith("blk.") else name
        if leaf == "attn_q.weight":
            data = permute_rotary(data, d["heads"])
        elif leaf == "attn_k.weight":
            data = permute_rotary(data, d["kv_heads"])
        qtype = gguf.GGMLQuantizationType[TYPES[leaf]]
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, quants.quantize(data, qtype), raw_dtype=qtype)

    h, f, kv = d["hidden"], d["ffn"], d["kv_heads"] * head_dim
    tensor("token_embd.weight", (vocab, h), "w", 0.5)
    for i in range(d["layers"]):
        tensor(f"blk.{i}.attn_norm.weight", (h,), "norm")
        tensor(f"blk.{i}.attn_q.weight", (h, h), "w")
        tensor(f"blk.{i}.attn_k.weight", (kv, h), "w")
        tensor(f"blk.{i}.attn_v.weight", (kv, h), "w")
        tensor(f"blk.{i}.attn_output.weight", (h, h), "w")
        tensor(f"blk.{i}.ffn_norm.weight", (h,), "norm")
        tensor(f"blk.{i}.ffn_gate.weight", (f, h), "w")
        tensor(f"blk.{i}.ffn_up.weight", (f, h), "w")
        tensor(f"blk.{i}.ffn_down.weight", (h, f), "w")
    tensor("output_norm.weight", (h,), "norm")
    if not tied:
        tensor("output.weight", (vocab, h), "w")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_logits(path: Path, ids):
    """transformers' logits ``[B, S, vocab]`` of a GGUF file (its own GGUF loader, fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        return model(ids).logits
